"""A study that climbs a ladder of model sizes: each rung is a study of its own, its runs in <out>/<rung>/,
every experiment at the rung's shape (gptlab.study.rungs) with its own change applied there (a component
whose sizes follow the width says how: `rung_fields`) and trained for the budget's tokens. The report fits
the baseline's loss as a power law of compute over its rungs and says what each variant is worth in compute
(gptlab.reporting.scaling).

Before anything trains, the plan says each rung's parameters, tokens, FLOPs and cost: CPU hours on this
machine, GPU hours at a stated MFU on a named GPU. `--dry-run` prints it and trains nothing.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path

import torch

from gptlab.core.config import GPTConfig, TrainingConfig, parse_overrides, replace_config
from gptlab.core.experiment import ExperimentError, load_experiment
from gptlab.files import atomic_write_text
from gptlab.optim import optimizer_class
from gptlab.reporting.scope import STATED_GPU, STATED_MFU
from gptlab.study.plan import Study, StudyError
from gptlab.study.rungs import LADDER_LR_WORDS, MIN_STEPS, Budget, Rung, RungError, parse_rungs, schedule
from gptlab.training.distributed import PEAK_FLOPS
from gptlab.training.presets import PRESETS

LADDER_FILE = "ladder.json"
SHAPE_FIELDS = ("n_layer", "n_embd", "n_head")
CPU_SHARE = 0.45  # of this machine's float32 matmul peak that a small run's step reached (smoke: 43 of ~95 GFLOP/s)


@dataclass
class Entry:
    """One experiment at one rung: its config, size and budget."""
    experiment: str
    model_fields: dict  # the rung's shape and the component fields that follow it
    params: int
    params_non_embedding: int
    flops_per_token: int
    tokens: int  # steps x the batch
    schedule: dict  # max_steps, warmup_steps, eval_interval, val_interval

    @property
    def flops(self) -> float:
        return self.flops_per_token * self.tokens


@dataclass
class RungPlan:
    rung: Rung
    entries: dict[str, Entry] = field(default_factory=dict)
    study: Study | None = None  # None: its learning rate waits for the smallest rung's sweep (transfer)
    lr: dict = field(default_factory=dict)  # how its rates were chosen: {"mode", "from", "multipliers"}


def plan_ladder(study: Study, transferred: dict[str, float] | None = None) -> list[RungPlan]:
    """Every rung of the study's ladder: each experiment's shape, size and budget, and the rung's own study
    (None for a rung whose rate is transferred from a sweep not yet done). Refuses, before anything trains,
    a rung a component has no size for and a budget of too few steps, naming each."""
    try:
        rungs, budget = parse_rungs(study.ladder), Budget.parse(study.budget)
    except RungError as e:
        raise StudyError(str(e)) from None
    parsed = parse_overrides(study.overrides)
    clash = [f for f in SHAPE_FIELDS if f in parsed["model"]]
    if clash:
        raise StudyError(f"a ladder sets {', '.join(clash)} at each rung: leave model.{clash[0]} out of the overrides "
                         f"(give explicit rungs for other shapes)")
    preset_model, preset_train = PRESETS[study.preset]
    experiments = {name: load_experiment(name) for name in study.experiments}
    train = replace_config(TrainingConfig(), **{**preset_train, **parsed["train"]})
    order = [study.baseline] + [n for n in study.experiments if n != study.baseline]
    plans, problems = [], []
    for index, rung in enumerate(rungs):
        plan = RungPlan(rung)
        for name in order:
            exp = experiments[name]
            own = replace_config(exp.model_config, **{**preset_model, **parsed["model"]})
            if own.parametrization != "standard" and not own.base_width:  # muP/CompleteP: the smallest rung is the base
                own = replace_config(own, base_width=rungs[0].n_embd, base_depth=rungs[0].n_layer)
            try:
                entry = _entry(name, exp, own, rung, budget, train, plan.entries.get(study.baseline))
            except ValueError as e:
                problems.append(f"{exp.name} at {rung.name} ({rung.n_layer} layers, {rung.n_embd} wide): {e}")
                continue
            if entry.schedule["max_steps"] < MIN_STEPS:
                problems.append(f"{exp.name} at {rung.name}: the budget ({budget.describe()}) is {entry.tokens:,} "
                                f"tokens, {entry.schedule['max_steps']} step(s) of {train.total_batch_size:,}: too few "
                                f"for a schedule; raise tokens_per_param or lower train.total_batch_size")
            plan.entries[name] = entry
        plans.append(plan)
    if problems:
        raise StudyError(f"study {study.name}'s ladder cannot train as given:\n  - " + "\n  - ".join(problems) +
                         "\nNothing was trained")
    for index, plan in enumerate(plans):
        plan.study, plan.lr = _rung_study(study, plan, index, rungs, budget, train, transferred)
    return plans


def _entry(name: str, exp, own: GPTConfig, rung: Rung, budget: Budget, train: TrainingConfig,
           base: Entry | None) -> Entry:
    from gptlab.models.gpt import build_gpt  # the model, built on the meta device: sizes only
    from gptlab.models.parametrization import resized
    config = resized(own, exp.components(), **rung.fields())
    fields = {k: getattr(config, k) for k in dataclasses.asdict(config) if getattr(config, k) != getattr(exp.model_config, k)
              and (getattr(config, k) != getattr(own, k) or k in rung.fields() or k.startswith("base_"))}
    try:
        with torch.device("meta"):
            model = build_gpt(exp, config)
    except Exception as e:  # noqa: BLE001 - a component that cannot take this size says why
        raise ValueError(str(e).replace("\n", " ")) from None
    params, non_embedding = model.num_params(), model.num_params(non_embedding=True)
    per_token = model.flops_per_token(train.sequence_length)
    counted = non_embedding if budget.params == "non_embedding" else params
    tokens = budget.tokens(counted, base.tokens if base else None, base.flops if base else None, per_token)
    steps = schedule(tokens, train.total_batch_size, train)
    return Entry(name, fields, params, non_embedding, per_token, steps["max_steps"] * train.total_batch_size, steps)


def _rung_study(study: Study, plan: RungPlan, index: int, rungs: list[Rung], budget: Budget,
                train: TrainingConfig, transferred: dict[str, float] | None) -> tuple[Study | None, dict]:
    overrides = {name: [f"model.{k}={v}" for k, v in entry.model_fields.items()] +
                       [f"train.{k}={v}" for k, v in entry.schedule.items()] for name, entry in plan.entries.items()}
    mode = study.ladder_lr
    sweep = study.lr_sweep if mode == "sweep" or (mode == "transfer" and index == 0) else []
    lr = {"mode": mode, "swept": bool(sweep)}
    if mode == "transfer" and index > 0:
        lr["from"] = rungs[0].name
        if transferred is None or any(name not in transferred for name in plan.entries):
            return None, lr
        lr["multipliers"] = {name: transferred[name] for name in plan.entries}
        for name in plan.entries:  # each experiment's rates times the multiplier its sweep chose at the smallest rung
            exp = load_experiment(name)
            own_train = replace_config(exp.training_config, **{**PRESETS[study.preset][1],
                                                               **parse_overrides(study.overrides)["train"]})
            overrides[name] += [f"train.{f}={getattr(own_train, f) * transferred[name]!r}"
                                for f in optimizer_class(exp.optimizer_class).lr_fields]
    record = {"root": str(study.root), "rung": plan.rung.name, "shape": plan.rung.fields(), "index": index,
              "rungs": [r.name for r in rungs], "budget": dataclasses.asdict(budget), "lr": lr, "law": study.law}
    sub = Study(experiments=study.experiments, seeds=study.seeds, preset=study.preset, overrides=study.overrides,
                baseline=study.baseline, out=str(study.root / plan.rung.name), allow_unfair=study.allow_unfair,
                lr_sweep=sweep, launcher=study.launcher, slurm=study.slurm, name=study.name,
                experiment_overrides=overrides, budget_fields=list(next(iter(plan.entries.values())).schedule),
                ladder_record=record)
    return sub, lr


def transferred_rates(study: Study, plans: list[RungPlan]) -> dict[str, float] | None:
    """Each experiment's multiplier of its rates, chosen by the smallest rung's sweep, once that sweep is
    complete for every experiment (None before)."""
    from gptlab.reporting.lr_sweep import sweep_fits
    from gptlab.study.plan import plan
    from gptlab.training.record import read_record
    first = plans[0].study
    records = [r for r in (read_record(p.log_dir) for p in plan(first)) if r]
    fits = sweep_fits(records)
    names = {load_experiment(n).name: n for n in study.experiments}
    if not all(name in fits and fits[name].complete for name in names):
        return None
    return {names[name]: fits[name].chosen for name in names}


# ---- the plan, said before anything trains

def cpu_flops() -> float:
    """What a small run's training step reaches on this machine: its float32 matmul peak (measured now, half a
    second) times CPU_SHARE."""
    from gptlab.bench.peak import matmul_peak
    return matmul_peak(torch.device("cpu"), torch.float32, seconds=0.5)["flops"] * CPU_SHARE


def plan_text(study: Study, plans: list[RungPlan], cpu_rate: float | None = None) -> str:
    """Each rung's shape, parameters, tokens, FLOPs and cost, and the totals: CPU hours here, GPU hours at the
    stated MFU on the stated GPU."""
    budget = Budget.parse(study.budget)
    gpu_rate = STATED_MFU * PEAK_FLOPS[STATED_GPU]
    head = ["rung", "shape", "experiment", "params", "non-emb", "FLOPs/token", "tokens", "steps", "FLOPs a run",
            "runs"]
    rows, total = [head], 0.0
    for plan in plans:
        for name, entry in plan.entries.items():
            count = _runs(study, plan)
            total += entry.flops * count
            rows.append([plan.rung.name, f"{plan.rung.n_layer}x{plan.rung.n_embd}", name, _si(entry.params),
                         _si(entry.params_non_embedding), _si(entry.flops_per_token), _si(entry.tokens),
                         f"{entry.schedule['max_steps']:,}", f"{entry.flops:.3g}", str(count)])
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    lines = [f"ladder of {len(plans)} rungs ({', '.join(p.rung.name for p in plans)}), preset {study.preset}; budget: "
             f"{budget.describe()}; learning rate: {LADDER_LR_WORDS[study.ladder_lr]}"]
    lines += ["  " + "  ".join(c.rjust(w) if i >= 3 else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths)))
              for r in rows]
    cost = f"in all {total:.3g} FLOPs: {total / gpu_rate / 3600:.3g} GPU hours at {STATED_MFU:.0%} MFU on an {STATED_GPU}"
    if cpu_rate:
        cost += f"; {total / cpu_rate / 3600:.3g} CPU hours here (at {cpu_rate / 1e9:.0f} GFLOP/s: {CPU_SHARE:.0%} of " \
                f"this machine's float32 matmul peak, what a small run's step reaches)"
    lines.append(cost)
    if study.ladder_lr == "transfer":
        lines.append(f"the rungs above {plans[0].rung.name} train at the rates its sweep chooses: they are planned (and "
                     f"counted once each) when it is done")
    return "\n".join(lines)


def _runs(study: Study, plan: RungPlan) -> int:
    """Runs of one experiment at a rung: its seeds; where the rung sweeps, the sweep's points (the first seed),
    the other seeds at the shared rate and the seeds at its tuned rate (at most)."""
    if not plan.lr.get("swept"):
        return study.seeds
    return len({*study.lr_sweep, 1.0}) + (study.seeds - 1) + study.seeds


def _si(n: float) -> str:
    for scale, suffix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(n) >= scale:
            return f"{n / scale:.3g}{suffix}"
    return f"{n:g}"


def write_ladder(study: Study, plans: list[RungPlan]) -> None:
    """ladder.json in the study's directory: the ladder, its budget and each rung's directory."""
    study.root.mkdir(parents=True, exist_ok=True)
    record = {**study.definition(), "rungs": [{"name": p.rung.name, **p.rung.fields(), "dir": p.rung.name,
                                               "lr": p.lr} for p in plans]}
    atomic_write_text(study.root / LADDER_FILE, json.dumps(record, indent=1) + "\n")


def read_ladder(root: Path) -> dict | None:
    try:
        return json.loads((Path(root) / LADDER_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def check_ladder(study: Study) -> list[RungPlan]:
    """The plan, with the errors a user can make turned into StudyError (an unknown experiment, a config)."""
    try:
        return plan_ladder(study)
    except (ExperimentError, ValueError) as e:
        raise StudyError(str(e)) from None


# ---- training it

def run_ladder(study: Study, plans: list[RungPlan], slots: list, verbose: bool = False) -> tuple[int, list]:
    """Train every rung, smallest first, each as a study of its own (its sweep and tuned seeds too); a rung whose
    rate is transferred is planned once the smallest rung's sweep is done. Returns the exit code (0 every run
    complete, 1 a run failed, 3 stopped) and the log directories of every run."""
    from gptlab.study.plan import plan
    from gptlab.study.runner import StudyRunner, write_definition
    from gptlab.study.tuning import tuned_runs
    write_ladder(study, plans)
    code, dirs = 0, []
    for index, rung_plan in enumerate(plans):
        if rung_plan.study is None:  # transfer: the smallest rung's sweep chose the rates
            rates = transferred_rates(study, plans)
            if rates is None:
                print(f"{rung_plan.rung.name}: waits for {plans[0].rung.name}'s sweep to complete (the same command "
                      f"continues)")
                code = max(code, 1)
                continue
            plans = plan_ladder(study, rates)
            rung_plan = plans[index]
            write_ladder(study, plans)
            said = ", ".join(f"{n} x{m:g}" for n, m in rung_plan.lr["multipliers"].items())
            print(f"{rung_plan.rung.name}: the rates {plans[0].rung.name}'s sweep chose: {said}")
        sub = rung_plan.study
        runs = plan(sub)
        print(f"rung {rung_plan.rung.name} ({rung_plan.rung.n_layer} layers, {rung_plan.rung.n_embd} wide): "
              f"{len(runs)} runs in {sub.root}")
        write_definition(sub, runs)
        result = StudyRunner(sub, runs, slots, verbose=verbose).run()
        if result == 3:
            return 3, dirs + [r.log_dir for r in runs]
        if sub.lr_sweep:
            tuned = tuned_runs(sub, runs)
            if tuned:
                write_definition(sub, runs + tuned)
                result = max(result, StudyRunner(sub, tuned, slots, verbose=verbose).run())
                runs += tuned
        code = max(code, result)
        dirs += [r.log_dir for r in runs]
        if result == 3:
            return 3, dirs
    return code, dirs
