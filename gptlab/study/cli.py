"""`gptlab study`: train a baseline and its variants over seeds, fairly, then report.

    gptlab study --experiments baseline rope alibi --seeds 3 --preset smoke [model.X=... train.Y=...]
    gptlab study quick                     # studies/quick.py
"""

from __future__ import annotations

import argparse
import re
import sys

from gptlab.core.config import ConfigError
from gptlab.files import DirectoryLock
from gptlab.core.experiment import ExperimentError
from gptlab.study.plan import Study, StudyError, load_study, plan
from gptlab.study.rungs import Budget, RungError
from gptlab.study.slurm import SlurmError, SlurmOptions, submit
from gptlab.study.tuning import tuned_runs
from gptlab.training.presets import PRESETS

EPILOG = """\
Runs live in <out>/<experiment>/seed<N>/ (default out: log_train, or log_train/<name> for a
study file), each a train.py run with its log.txt, run.json, checkpoints and console.txt; a
learning-rate sweep's runs at a multiplier M of max_lr in <out>/<experiment>/lrM/seed<N>/.
Run the same command again to continue a stopped study: complete runs are skipped,
interrupted ones resume from their newest checkpoint. At the end the report is printed and
written with its figures into <out> (`gptlab report <out>` writes it again at any time).

exit status: 0 every run complete; 1 a run failed; 2 refused (nothing trained); 3 stopped
"""


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="gptlab study", description="Train experiments over seeds on the same data, "
                                "tokens, schedule and evaluation, then compare them with the baseline.",
                                epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter, allow_abbrev=False)
    p.add_argument("study", nargs="?", help="a study file: a name in studies/ or a path to a .py file")
    p.add_argument("--experiments", nargs="+", metavar="NAME", help="experiments to compare (names or .py paths)")
    p.add_argument("--seeds", type=int, help="runs per experiment, with seeds train.seed, train.seed+1, ... (default 1)")
    p.add_argument("--preset", choices=sorted(PRESETS), help="default gpt2 (the full recipe)")
    p.add_argument("--baseline", help="the experiment the others are compared with (default: baseline, or the first)")
    p.add_argument("--out", help="directory of the study's runs and report")
    p.add_argument("--lr-sweep", type=multipliers, metavar="M,M,...",
                   help="sweep max_lr over these multipliers (e.g. 0.5,0.71,1,1.41,2) with the first seed, fit each "
                        "experiment's optimum, and train its seeds there too: the report compares at the shared and "
                        "at each experiment's tuned rate")
    p.add_argument("--allow-unfair", action="store_true", default=None,
                   help="train experiments whose files change the data, tokens, schedule, batch or evaluation "
                        "(the report marks their rows)")
    p.add_argument("--parallel", action="store_true",
                   help="one run per GPU side by side, instead of each run on every GPU one after another")
    p.add_argument("--verbose", action="store_true", help="show each run's console output instead of console.txt")
    p.add_argument("--launcher", choices=["local", "slurm"],
                   help="where the runs train: local (this machine, the default) or slurm (one job array; see "
                        "gptlab.study.slurm)")
    p.add_argument("--slurm", nargs="+", action="extend", metavar="KEY=VALUE",
                   help="SLURM settings of every task: partition, account, qos, time, nodes, gpus_per_node, "
                        "cpus_per_task, mem, max_parallel, signal_seconds, preemption_retries, failure_retries, "
                        "sbatch (an extra #SBATCH line; repeatable), setup (a shell line run first; repeatable), python")
    p.add_argument("--ladder", metavar="dN,dN,...",
                   help="climb a ladder of sizes: dN is depth N, width 64 N, heads of 64 (d12 is GPT-2 124M); each "
                        "rung is a study of its own in <out>/dN, and the report fits the baseline's loss against compute "
                        "and says what each variant is worth in compute")
    p.add_argument("--budget", nargs="+", action="extend", metavar="KEY=VALUE",
                   help="a ladder's tokens at each rung: rule=tokens_per_param (the default), flops (every experiment "
                        "the baseline's FLOPs: isoFLOP) or tokens (the baseline's tokens); tokens_per_param=20 "
                        "(Chinchilla's); params=non_embedding (the default) or all")
    p.add_argument("--ladder-lr", choices=["shared", "sweep", "transfer"],
                   help="a ladder's learning rate at each rung: shared (the preset's, the default; said as a caveat), "
                        "sweep (--lr-sweep at every rung) or transfer (--lr-sweep at the smallest rung, its choice at "
                        "the others)")
    p.add_argument("--dry-run", action="store_true",
                   help="print the plan (a ladder's parameters, tokens, FLOPs and cost; with --launcher slurm the "
                        "sbatch script) and train nothing")
    p.add_argument("overrides", nargs="*", metavar="model.FIELD=VALUE|train.FIELD=VALUE")
    return p


def multipliers(text: str) -> list[float]:
    """--lr-sweep 0.5,0.71,1,1.41,2 -> [0.5, 0.71, 1.0, 1.41, 2.0]"""
    try:
        values = [float(m) for m in text.split(",") if m.strip()]
    except ValueError:
        values = None
    if values:
        return values
    raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of multipliers of max_lr, e.g. "
                                     "0.5,0.71,1,1.41,2")


def resolve_study(args: argparse.Namespace) -> Study:
    flags = {"experiments": args.experiments, "seeds": args.seeds, "preset": args.preset, "baseline": args.baseline,
             "out": args.out, "allow_unfair": args.allow_unfair, "lr_sweep": args.lr_sweep, "launcher": args.launcher,
             "ladder": args.ladder, "ladder_lr": args.ladder_lr}
    flags = {k: v for k, v in flags.items() if v is not None}
    budget = budget_items(args.budget)  # the --budget settings given, typed; a study file's others kept
    if args.study:
        study = load_study(args.study)
        values = {**study.definition(), "out": study.out, "launcher": study.launcher, "slurm": study.slurm, **flags}
        values["overrides"] = study.overrides + args.overrides
        values["budget"] = {**study.budget, **budget}
        return Study(**values)
    if not args.experiments:
        raise StudyError("name a study file (gptlab study quick) or the experiments (--experiments baseline rope)")
    return Study(overrides=args.overrides, budget=budget, **flags)


def budget_items(items: list[str] | None) -> dict:
    """--budget rule=flops tokens_per_param=20 -> {"rule": "flops", "tokens_per_param": 20.0}, checked."""
    given = [str(i).partition("=")[0] for i in items or []]
    parsed = Budget.parse(items or [])
    return {k: getattr(parsed, k) for k in given}


def devices(parallel: bool) -> list[int | None]:
    if not parallel:
        return [None]
    import torch
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if count < 2:
        raise StudyError(f"--parallel puts one run on each GPU, and this machine has {count}; leave it out "
                         f"to train the runs one after another")
    return list(range(count))


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_intermixed_args(sys.argv[1:] if argv is None else argv)
    if args.study and "=" in args.study:  # an override, not a study file
        args.overrides, args.study = [args.study, *args.overrides], None
    if args.experiments:  # overrides after --experiments land among its names
        args.overrides += [e for e in args.experiments if "=" in e]
        args.experiments = [e for e in args.experiments if "=" not in e] or None
    for flag in ("slurm", "budget"):  # overrides after --slurm or --budget land among its settings
        given = getattr(args, flag) or []
        args.overrides += [s for s in given if s.startswith(("model.", "train."))]
        setattr(args, flag, [s for s in given if not s.startswith(("model.", "train."))] or None)
    from gptlab.study.runner import StudyRunner, write_definition
    try:
        study = resolve_study(args)
        options = SlurmOptions(**{**SlurmOptions.values(study.slurm), **SlurmOptions.values(args.slurm or [])}) \
            if study.launcher == "slurm" or args.slurm else None
        if options is not None and study.launcher != "slurm":
            raise StudyError("--slurm sets how the runs are submitted to SLURM: give --launcher slurm too")
        if study.ladder:
            return ladder_main(study, args, options)
        runs = plan(study)
        slots = devices(args.parallel) if study.launcher == "local" else [None]
    except (StudyError, ExperimentError, ConfigError, SlurmError, RungError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    points = sorted({*study.lr_sweep, 1.0})
    sweep = (f" and a learning-rate sweep over x{', x'.join(f'{m:g}' for m in points)} of max_lr"
             + (" (x1, the shared rate, added)" if 1.0 not in study.lr_sweep else "")
             + f", then {study.seeds} seed(s) at each experiment's tuned rate"
             if study.lr_sweep else "")
    print(f"{'study' if study.name == 'study' else f'study {study.name}'}: {len(study.experiments)} experiment(s) x "
          f"{study.seeds} seed(s){sweep} = {len(runs)} runs, preset {study.preset}, baseline {study.baseline}, in "
          f"{study.root}")
    for name in study.experiments:
        # from the run at the shared rate: a sweep point's run also differs in its scaled rates
        differs = next(r.differs for r in runs if r.experiment == name and r.lr_multiplier == 1)
        if name != study.baseline:
            changes = ", ".join(f"{k.replace('_class', '')} {_short(a)} -> {_short(b)}" for k, (a, b) in differs.items())
            print(f"  {name}: {changes or 'the same model as the baseline'}")
        for warning in next(r.run.warnings for r in runs if r.experiment == name):
            print(f"  warning ({name}): {warning}")
    if study.launcher == "slurm":
        return submit_study(study, runs, options, args.dry_run)
    if args.dry_run:
        for r in runs:
            print(f"  {r.label}: {r.log_dir}")
        print(f"--dry-run: nothing was trained; {len(runs)} run(s) would be"
              + (", then each experiment's seeds at its tuned rate" if study.lr_sweep else ""))
        return 0
    lock = DirectoryLock(study.root)
    try:
        study.root.mkdir(parents=True, exist_ok=True)
        held = lock.acquire()
    except OSError as e:
        print(f"error: cannot use {study.root} for the study ({e.strerror or e}); choose another --out", file=sys.stderr)
        return 2
    if not held:
        print(f"error: {study.root} is in use by another study (pid {lock.holder()}); wait for it, or give this one "
              f"its own --out. Nothing was trained", file=sys.stderr)
        return 2
    try:
        write_definition(study, runs)
        code = StudyRunner(study, runs, slots, verbose=args.verbose).run()
        if study.lr_sweep and code != 3:
            tuned = tuned_runs(study, runs)
            if tuned:
                write_definition(study, runs + tuned)
                print(f"at each experiment's tuned learning rate: {len(tuned)} more run(s)")
                code = max(code, StudyRunner(study, tuned, slots, verbose=args.verbose).run())
                runs += tuned
    except (StudyError, ExperimentError, ConfigError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    finally:
        lock.release()
    if code == 3:
        return code
    from gptlab.reporting.report import write_report
    try:
        print(write_report([r.log_dir for r in runs], study.root, study.baseline))
    except FileNotFoundError:
        print("no run completed: no report")
    except ModuleNotFoundError as e:
        print(f"the figures need {e.name} (pip install -e \".[plot]\"); the table is in {study.root / 'report.md'}")
    return code


def ladder_main(study: Study, args: argparse.Namespace, options: SlurmOptions | None) -> int:
    """A study that climbs a ladder: its plan and cost said first, then each rung trained (or submitted) as a
    study of its own, smallest first; the report of the whole ladder at the end."""
    from gptlab.study.ladder import check_ladder, cpu_flops, plan_text, run_ladder
    plans = check_ladder(study)
    print(f"{'study' if study.name == 'study' else f'study {study.name}'}: {len(study.experiments)} experiment(s) x "
          f"{study.seeds} seed(s), baseline {study.baseline}, in {study.root}")
    print(plan_text(study, plans, cpu_flops() if study.launcher == "local" else None))
    if study.launcher == "slurm":
        code = 0
        for rung_plan in plans:
            if rung_plan.study is None:
                print(f"{rung_plan.rung.name}: submitted by the same command once {plans[0].rung.name}'s sweep is done")
                continue
            print(f"rung {rung_plan.rung.name}:")
            code = max(code, submit_study(rung_plan.study, plan(rung_plan.study), options, args.dry_run))
        return code
    if args.dry_run:
        print("--dry-run: nothing was trained")
        return 0
    slots = devices(args.parallel)
    lock = DirectoryLock(study.root)
    study.root.mkdir(parents=True, exist_ok=True)
    if not lock.acquire():
        print(f"error: {study.root} is in use by another study (pid {lock.holder()}); wait for it, or give this one "
              f"its own --out. Nothing was trained", file=sys.stderr)
        return 2
    try:
        code, _ = run_ladder(study, plans, slots, verbose=args.verbose)
    finally:
        lock.release()
    if code == 3:
        return code
    from gptlab.reporting.report import write_report
    try:
        print(write_report([study.root], study.root, study.baseline))
    except FileNotFoundError:
        print("no run completed: no report")
    except ModuleNotFoundError as e:
        print(f"the figures need {e.name} (pip install -e \".[plot]\"); the table is in {study.root / 'report.md'}")
    return code


def submit_study(study: Study, runs: list, options: SlurmOptions, dry_run: bool) -> int:
    """--launcher slurm: the runs (with a sweep, its tuned seeds once the sweep is complete) as one job
    array; what is complete, queued or running is not submitted again."""
    from gptlab.study.runner import write_definition
    if study.lr_sweep and not dry_run:
        tuned = tuned_runs(study, runs, quiet_missing=True)
        if tuned:
            print(f"at each experiment's tuned learning rate: {len(tuned)} more run(s)")
            runs = runs + tuned
        else:
            print("the seeds at each experiment's tuned learning rate are submitted by the same command once the "
                  "sweep is complete")
    if dry_run:  # reads what an earlier submission wrote, writes nothing
        try:
            print(submit(study, runs, options, dry_run=True))
        except (SlurmError, OSError) as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        return 0
    lock = DirectoryLock(study.root)
    try:
        study.root.mkdir(parents=True, exist_ok=True)
        if not lock.acquire():
            print(f"error: {study.root} is in use by another study command (pid {lock.holder()}); wait for it",
                  file=sys.stderr)
            return 2
        write_definition(study, runs)
        print(submit(study, runs, options))
    except (SlurmError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    finally:
        lock.release()
    return 0


def _short(value) -> str:
    """A component by its class name (gptlab.modules.attention.MLAAttention -> MLAAttention), a number as it is."""
    if isinstance(value, str) and re.fullmatch(r"[A-Za-z_][\w.]*", value):
        return value.rsplit(".", 1)[-1]
    return f"{value:g}" if isinstance(value, float) else str(value)


if __name__ == "__main__":
    sys.exit(main())
