"""The command line of train.py: train an experiment, resume it, or generate from a checkpoint."""

from __future__ import annotations

import argparse
import dataclasses
import os
import subprocess
import sys
import time
from pathlib import Path

from gptlab.core.config import ConfigError, GPTConfig, TrainingConfig
from gptlab.core.experiment import ExperimentError, load_experiment
from gptlab.data.shards import DataError
from gptlab.training import checkpoint as ckpt
from gptlab.training.checkpoint import CheckpointError, SaveFailed
from gptlab.files import DirectoryLock, disk_full, write_failure
from gptlab.generate import (GenerationError, add_sampling_arguments, from_checkpoint, print_samples,
                             resolve_device, sampling_from_args)
from gptlab.training.distributed import DeviceError, Dist, all_ranks_agree
from gptlab.training.logger import read_header, read_log
from gptlab.training.preemption import PREEMPTED_EXIT, Preempted
from gptlab.training.presets import PRESETS
from gptlab.training.planning import default_log_dir, plan_run
from gptlab.training.run import Diverged, Run, TrainingError

EPILOG = """\
overrides:
  Any field of the model or training config, as model.FIELD=VALUE or train.FIELD=VALUE,
  applied after the experiment file and the preset, e.g.
      python train.py --experiment rope --preset smoke model.n_layer=4 train.max_lr=1e-3
  model fields: {model}
  train fields: {train}

exit status:
  0 done (or stopped at train.stop_at); 2 the command was refused (nothing was trained);
  3 preempted: SIGTERM or Ctrl-C saved a checkpoint at the next step, continue with --resume auto;
  4 diverged: the loss went non-finite (resuming repeats it: lower train.max_lr);
  1 failed after training began (a checkpoint or the log could not be written: a full disk, ...)

examples:
  python train.py --experiment baseline                       # GPT-2 124M recipe
  python train.py --experiment rope --preset smoke            # tiny, CPU: 34 s on 2 cores (AMD EPYC)
  torchrun --standalone --nproc_per_node=8 train.py --experiment baseline
  python train.py --experiment baseline --resume auto         # newest intact checkpoint
  python train.py --experiment baseline --init-from gpt2 train.max_lr=1e-4   # fine-tune OpenAI's GPT-2
  python train.py --experiment rope --preset small --data-root data/mycorpus  # shards from `gptlab prepare`
  python train.py --experiment baseline --inference log_train/baseline/log/model_05000.pt
"""


def _field_list(config_cls) -> str:
    return ", ".join(f.name for f in dataclasses.fields(config_cls))


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="train.py", description="Train a gptlab experiment, resume it, or sample from a checkpoint.",
        epilog=EPILOG.format(model=_field_list(GPTConfig), train=_field_list(TrainingConfig)),
        formatter_class=argparse.RawDescriptionHelpFormatter, allow_abbrev=False)
    p.add_argument("--experiment", default="baseline", help="a name in experiments/ or a path to a .py file")
    p.add_argument("--preset", choices=sorted(PRESETS),
                   help="gpt2: the full recipe (the default; with --resume, the checkpoint's run's preset is); "
                        "gpt2-medium: the same recipe at 350M (24 layers, 16 "
                        "heads, 1024 wide, max_lr 3e-4); smoke: tiny, embedded corpus, 34 s on 2 CPU "
                        "cores (AMD EPYC, measured); small: 4 layers, 128 wide, 300 steps, 13 minutes there")
    p.add_argument("--max-steps", type=int, help="shorthand for train.max_steps=N")
    p.add_argument("--seed", type=int, help="shorthand for train.seed=N, in its own log directory "
                   "log_train/<experiment>/seed<N>; with --inference, the sampling seed")
    p.add_argument("--log-dir", type=Path, help="default: log_train/<experiment>/log (seed<N> with --seed)")
    start = p.add_mutually_exclusive_group()
    start.add_argument("--resume", metavar="CKPT|auto", nargs="?", const="auto",
                       help="continue from a checkpoint; 'auto' (or --resume alone) takes the newest intact one in "
                            "the log directory, or starts the run if there is none")
    start.add_argument("--init-from", metavar="CKPT|gpt2|DIR",
                       help="start a new run (step 0, new optimizer) from the weights of a checkpoint, or of OpenAI's "
                            "GPT-2: gpt2, gpt2-medium, gpt2-large, gpt2-xl (the Hugging Face hub or its local cache; "
                            "pip install -e \".[hf]\") or a local Hugging Face GPT-2 directory")
    p.add_argument("--data-root", metavar="DIR", help="shorthand for train.data_dir=DIR: token shards "
                   "(`gptlab prepare` or FineWeb-Edu's) to train on")
    p.add_argument("--device", help="cpu, cuda, cuda:1, mps (default: the best available)")
    compiling = p.add_mutually_exclusive_group()
    compiling.add_argument("--compile", action="store_true",
                           help="torch.compile the model on any device (by default only on CUDA, train.compile)")
    compiling.add_argument("--no-compile", action="store_true", help="do not torch.compile the model")
    p.add_argument("--no-launch", action="store_true",
                   help="on a machine with several GPUs, run one process instead of relaunching under torchrun")
    g = p.add_argument_group("inference")
    g.add_argument("--inference", metavar="CKPT", type=Path, help="generate text from a checkpoint instead of training "
                   "(as gptlab generate CKPT)")
    add_sampling_arguments(g)
    p.add_argument("overrides", nargs="*", metavar="model.FIELD=VALUE|train.FIELD=VALUE")
    return p


def resolve_run(args: argparse.Namespace, ctx: Dist | None = None) -> Run:
    """Experiment file, then preset, then command line; every check that can be made before
    anything is written; then the log directory, held by this run alone, and its state."""
    ctx = ctx or Dist()
    overrides = args.overrides + ([f"train.data_dir={args.data_root}"] if args.data_root else [])
    preset = args.preset or (_resumed_preset(args) if args.resume else None) or "gpt2"
    run = plan_run(args.experiment, preset, overrides, seed=args.seed, max_steps=args.max_steps,
                   log_dir=args.log_dir, world_size=ctx.world_size)
    if args.init_from:
        from gptlab.training.warmstart import load_warm_start
        load_warm_start(args.init_from, run)
    created = _first_missing(run.log_dir)
    _check_writable(run.log_dir)
    run.lock = _hold(run.log_dir, ctx)
    try:
        _find_resume_state(args, run)
    except BaseException:
        if run.lock is not None:
            run.lock.release()
        if created is not None and ctx.master:  # a refused run leaves no directory it made behind
            _remove_empty(run.log_dir, created)
        raise
    return run


def _resumed_preset(args: argparse.Namespace) -> str | None:
    """--resume without --preset continues the run as it was trained: its preset, as the header of
    the log beside the checkpoint records it (None where there is no such log)."""
    if args.resume == "auto":
        log_dir = args.log_dir or default_log_dir(load_experiment(args.experiment).name, args.seed)
        log = Path(log_dir).expanduser() / "log.txt"
    else:
        log = Path(args.resume).expanduser().parent / "log.txt"
    try:
        experiment = read_header(log).get("experiment") if log.is_file() else None
    except OSError:
        return None
    preset = experiment.get("preset") if isinstance(experiment, dict) else None
    if preset in PRESETS and preset != "gpt2":
        print(f"--resume: the run was trained with --preset {preset} (its log says so); continuing with it")
        return preset
    return None


def _first_missing(path: Path) -> Path | None:
    """The outermost directory of path that does not exist yet (mkdir will make it), or None."""
    missing = None
    for p in [path, *path.parents]:
        if p.exists():
            break
        missing = p
    return missing


def _remove_empty(path: Path, up_to: Path) -> None:
    """Remove path and its parents up to up_to, each only while it is empty."""
    for p in [path, *path.parents]:
        try:
            p.rmdir()
        except OSError:
            return
        if p == up_to:
            return


def _find_resume_state(args: argparse.Namespace, run: Run) -> None:
    """What the log directory holds, and where this run continues from (if it does)."""
    log_dir, train_config = run.log_dir, run.train_config
    if args.resume == "auto":
        run.resume = ckpt.latest_checkpoint(log_dir)  # verified against its sha256 already
        if run.resume is None:
            _refuse_other_experiment(log_dir, run.experiment.name)
            print(f"no intact checkpoint in {log_dir}: starting the run from step 0")
        else:
            run.resume_state = ckpt.load_checkpoint(run.resume, check=False)
    elif args.resume:
        run.resume = Path(args.resume).expanduser().resolve()
        run.resume_state = ckpt.load_checkpoint(run.resume)
    else:
        _refuse_existing_run(log_dir)
    if run.resume_state is not None:
        ckpt.check_resumable(run.resume_state, run)
        step, stop_at = run.resume_state["step"], train_config.stop_at
        if stop_at and step >= stop_at and step < train_config.max_steps:
            raise TrainingError(f"{run.resume} is at step {step}, at or past train.stop_at={stop_at}: there is "
                                f"nothing to train. Raise train.stop_at, or leave it out to train to max_steps="
                                f"{train_config.max_steps}. Nothing was changed")


def _hold(log_dir: Path, ctx: Dist) -> DirectoryLock | None:
    """Rank 0 locks the log directory for the run's lifetime; every rank learns whether it could."""
    lock = DirectoryLock(log_dir) if ctx.master else None
    if not all_ranks_agree(lock.acquire() if lock else True, ctx):
        holder = lock.holder() if lock else "unknown"
        raise TrainingError(f"{log_dir} is in use by another training run (pid {holder}); wait for it to finish, "
                            f"or give this run its own --log-dir. Nothing was changed")
    return lock


def _check_writable(log_dir: Path) -> None:
    try:
        log_dir.mkdir(parents=True, exist_ok=True)
        probe = log_dir / f".write_test_{id(log_dir)}"
        probe.write_bytes(b"")
        probe.unlink()
        if (log_dir / "log.txt").exists():  # the log itself: not a directory, not read-only
            with open(log_dir / "log.txt", "a", encoding="utf-8"):
                pass
    except OSError as e:
        raise TrainingError(f"cannot write to the log directory {log_dir} or its log.txt ({e.strerror or e}); "
                            f"fix its permissions, or choose another with --log-dir") from None


def _refuse_existing_run(log_dir: Path) -> None:
    """A directory holding checkpoints or a log of trained steps holds a run to protect. The log
    of an attempt that failed before its first step is moved aside (kept, never deleted)."""
    existing, log = ckpt.list_checkpoints(log_dir), log_dir / "log.txt"
    trained = log.exists() and "train" in read_log(log)
    if existing or trained:
        raise TrainingError(f"{log_dir} already holds a run (log.txt, {len(existing)} checkpoint(s)); "
                            f"continue it with --resume auto, or start a separate run with --log-dir DIR. "
                            f"Nothing was changed")
    if log.exists():
        aside = log.with_name(f"log.{time.strftime('%Y%m%d-%H%M%S')}.untrained.txt")
        log.rename(aside)
        print(f"{log_dir} held the log of an attempt that never trained a step; it is kept as {aside.name}")


def _refuse_other_experiment(log_dir: Path, name: str) -> None:
    """A log directory with no checkpoint may hold the start of this experiment's run
    (it died before its first checkpoint), never another experiment's."""
    log = log_dir / "log.txt"
    other = read_header(log).get("experiment", {}).get("name", name) if log.exists() else name
    if other != name:
        raise TrainingError(f"{log_dir} holds a run of experiment {other!r}, not {name!r}; "
                            f"give this run its own --log-dir. Nothing was changed")


def inference(args: argparse.Namespace) -> None:
    """--inference CKPT: gptlab generate's code on one checkpoint file (--seed is the sampling seed)."""
    device = resolve_device(args.device)
    print_samples(from_checkpoint(args.inference), sampling_from_args(args), device)


# what a run's exit status means, as written into $GPTLAB_STATUS_FILE
DIVERGED_EXIT = 4
OUTCOMES = {0: "complete", 2: "refused", PREEMPTED_EXIT: "preempted", DIVERGED_EXIT: "diverged", 130: "interrupted"}
STATUS_FILE = "GPTLAB_STATUS_FILE"


def main(argv: list[str] | None = None) -> int:
    """Run train.py; where $GPTLAB_STATUS_FILE names a file, rank 0 writes the outcome there
    (`complete`, `stopped` at stop_at, `refused`, `preempted`, ...): torchrun reports any
    failing worker's exit status as 1, so train_nightly.sh reads this instead."""
    argv = sys.argv[1:] if argv is None else argv
    outcome = {}
    code = _main(argv, outcome)
    status_file = os.environ.get(STATUS_FILE)
    if status_file and os.environ.get("RANK", "0") == "0":
        try:
            Path(status_file).write_text(f"{outcome.get('word') or OUTCOMES.get(code, 'failed')}\n")
        except OSError:
            pass
    return code


def _main(argv: list[str], outcome: dict) -> int:
    args = parser().parse_intermixed_args(argv)
    from gptlab.training import distributed
    try:
        if args.inference:
            inference(args)
            return 0
        nproc = distributed.should_launch_torchrun(args.no_launch)
        if nproc:
            command = distributed.torchrun_command(sys.argv[0], argv, nproc)
            print(f"{nproc} GPUs: running {' '.join(command)} (use --no-launch for one process)", flush=True)
            return subprocess.call(command)
        ctx = distributed.setup(args.device)
        run = None
        try:
            run = resolve_run(args, ctx)
            distributed.barrier(ctx)  # every rank has seen the log directory before rank 0 writes to it
            from gptlab.training.trainer import train
            use_compile = args.compile or (run.train_config.compile and not args.no_compile
                                           and ctx.device_type == "cuda")
            train(run, ctx, compile_model=use_compile)
            if 0 < run.train_config.stop_at < run.train_config.max_steps:
                outcome["word"] = "stopped"
        finally:
            if run is not None and run.lock is not None:
                run.lock.release()
            distributed.teardown()
    except Diverged as e:
        print(f"error: {e}", file=sys.stderr)
        return DIVERGED_EXIT
    except SaveFailed as e:  # it trained, then could not save: a failure, not a refusal
        print(f"error: {e}", file=sys.stderr)
        outcome["word"] = "failed: disk full" if e.disk_full else "failed"
        return 1
    except OSError as e:  # a write of the run's own files failed (log.txt, run.json) after it started
        where = Path(e.filename).parent if getattr(e, "filename", None) else Path.cwd()
        full = disk_full(e, where)
        print(f"error: the run stopped: {e.filename or 'a file of the run'}: {write_failure(e, where)}. Its "
              f"checkpoints are intact: {'free disk space' if full else 'fix that'}, then continue with --resume "
              f"auto", file=sys.stderr)
        outcome["word"] = "failed: disk full" if full else "failed"
        return 1
    except (ExperimentError, ConfigError, DataError, CheckpointError, TrainingError, DeviceError,
            GenerationError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except Preempted as e:
        print(f"preempted: {e}", file=sys.stderr)
        return PREEMPTED_EXIT
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return 0
