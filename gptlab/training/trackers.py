"""Trackers: Weights & Biases and TensorBoard as further sinks of the metrics path.

Each is one field of TrainingConfig, off by default: `train.wandb=PROJECT` logs the run to
that W&B project, `train.tensorboard=true` writes event files to `<log_dir>/tensorboard`.
They are bookkeeping, not recipe: a resume or a study may change them. Nothing here imports
wandb or tensorboard until a tracker is turned on (`pip install -e ".[track]"`).

Rank 0 opens them; `Metrics` hands each the numbers it writes to log.txt with the same step
and key, the samples as text, and the log's header lines (the run's description: configs,
experiment, component classes) as the run's metadata. A resumed run continues its W&B run
(the id travels in every checkpoint, as `wandb_run_id`) and appends to the same TensorBoard
directory, hiding the events an interrupted attempt wrote after the checkpoint.
"""

from __future__ import annotations

import importlib.util
import json
import numbers
from pathlib import Path
from typing import Protocol

from gptlab.training.distributed import Dist, all_ranks_agree
from gptlab.training.preemption import PREEMPTED_EXIT
from gptlab.training.run import Run, TrainingError

INSTALL = 'pip install -e ".[track]"'
# the field that turns a tracker on, and the package it needs
PACKAGES = {"wandb": "wandb", "tensorboard": "tensorboard"}
# how a run ended, as the exit code W&B records (0 = finished; anything else marks it failed)
EXIT_CODES = {"done": 0, "preempted": PREEMPTED_EXIT, "interrupted": 130, "failed": 1}


class Tracker(Protocol):
    """What Metrics calls on a tracker (rank 0 only)."""

    def identity(self) -> dict:
        """What the run's description and its checkpoints record of this tracker."""

    def metadata(self, key: str, value) -> None:
        """A header line of log.txt: the run's description, one key at a time."""

    def scalars(self, step: int, values: dict[str, float]) -> None:
        """A step's numbers, keyed as in log.txt."""

    def text(self, step: int, key: str, texts: list[str]) -> None:
        """Text of a step (the generated samples)."""

    def flush(self) -> None:
        """At every evaluation: what was logged is on disk."""

    def close(self, outcome: str) -> None:
        """How the process ended: one of EXIT_CODES."""


def wanted(cfg) -> list[str]:
    """The trackers a TrainingConfig turns on."""
    return [field for field in PACKAGES if getattr(cfg, field)]


def check_installed(cfg) -> None:
    """Before any work: every tracker asked for has its package, or one error says how to get it."""
    missing = []
    for field in wanted(cfg):
        if importlib.util.find_spec(PACKAGES[field]) is None:
            value = getattr(cfg, field)
            missing.append(f"train.{field}={str(value).lower() if isinstance(value, bool) else value} needs the "
                           f"{PACKAGES[field]} package, which is not installed")
    if missing:
        raise TrainingError("; ".join(missing) + f": {INSTALL} installs the trackers (or leave the field out). "
                            f"Nothing was trained")


def scalars(values: dict) -> dict[str, float]:
    """What a tracker plots of a step's values: the numbers. Strings (`hella skipped`) are log.txt's only."""
    return {key: value for key, value in values.items()
            if isinstance(value, numbers.Real) and not isinstance(value, bool)}


def open_trackers(run: Run, ctx: Dist, resumed_at: int | None) -> list[Tracker]:
    """The trackers the run's config turns on, opened on rank 0 (other ranks get none); every
    rank learns whether rank 0 could, so that a failure stops them all before training."""
    cfg, opened, problem = run.train_config, [], None
    if ctx.master:
        try:
            if cfg.tensorboard:
                opened.append(TensorBoardTracker(run.log_dir, resumed_at))
            if cfg.wandb:
                saved_id = (run.resume_state or {}).get("wandb_run_id") if resumed_at is not None else None
                opened.append(WandbTracker(run, saved_id))
        except Exception as e:  # noqa: BLE001 - a tracker's own error, said in words below
            for tracker in opened:
                tracker.close("failed")
            problem = str(e) if isinstance(e, TrainingError) else f"a tracker could not start ({type(e).__name__}: {e})"
    if not all_ranks_agree(problem is None, ctx):
        raise TrainingError(problem or "rank 0 could not open the trackers (its error says why)")
    return opened


class TensorBoardTracker:
    """Event files in <log_dir>/tensorboard, one per process; a resumed run appends to the
    directory, and its first event hides what an interrupted attempt logged after the
    checkpoint (SummaryWriter's purge_step)."""

    def __init__(self, log_dir: Path, resumed_at: int | None):
        from torch.utils.tensorboard import SummaryWriter
        self.dir = Path(log_dir) / "tensorboard"
        # resumed at step N: the checkpoint's evaluation at N was logged, steps after it are redone
        self.first_step = 0 if resumed_at is None else resumed_at + 1
        self.writer = SummaryWriter(str(self.dir), purge_step=self.first_step)

    def identity(self) -> dict:
        return {"tensorboard_dir": str(self.dir)}

    def metadata(self, key: str, value) -> None:
        text = value if isinstance(value, str) else json.dumps(value, indent=1, sort_keys=True)
        self.writer.add_text(f"header/{key}", _code_block(text), max(0, self.first_step - 1))

    def scalars(self, step: int, values: dict[str, float]) -> None:
        for key, value in values.items():
            self.writer.add_scalar(key, value, step)

    def text(self, step: int, key: str, texts: list[str]) -> None:
        self.writer.add_text(key, "\n\n".join(f"{i}:\n\n{_code_block(t)}" for i, t in enumerate(texts)), step)

    def flush(self) -> None:
        self.writer.flush()

    def close(self, outcome: str) -> None:
        self.writer.close()


class WandbTracker:
    """A W&B run named <experiment>/seed<N>, grouped by experiment, with its files in
    <log_dir>/wandb. W&B's own step must only grow, so gptlab's step is the `step` metric
    every chart is drawn against: a resumed run redoing steps after its checkpoint adds
    points rather than having W&B drop them."""

    def __init__(self, run: Run, run_id: str | None):
        import wandb
        cfg = run.train_config
        try:
            self.run = wandb.init(project=cfg.wandb, id=run_id, resume="allow", dir=str(run.log_dir),
                                  name=f"{run.experiment.name}/seed{cfg.seed}", group=run.experiment.name,
                                  job_type="train", tags=[run.preset], notes=str(run.log_dir), reinit="create_new")
        except Exception as e:  # noqa: BLE001 - no login, no network, a bad project name, ...
            raise TrainingError(f"train.wandb={cfg.wandb}: W&B could not start the run ({type(e).__name__}: "
                                f"{str(e).strip()[:300]}); log in with `wandb login`, or set WANDB_MODE=offline to "
                                f"keep the run in {run.log_dir / 'wandb'} and `wandb sync` it later") from None
        self.run.define_metric("step")
        self.run.define_metric("*", step_metric="step")

    def identity(self) -> dict:
        return {"wandb_run_id": self.run.id}

    def metadata(self, key: str, value) -> None:
        self.run.config.update({key: value}, allow_val_change=True)  # `run` says started, then resumed

    def scalars(self, step: int, values: dict[str, float]) -> None:
        self.run.log({"step": step, **values})

    def text(self, step: int, key: str, texts: list[str]) -> None:
        self.run.log({"step": step, key: "\n\n".join(texts)})

    def flush(self) -> None:
        pass  # W&B's own process streams every record as it comes

    def close(self, outcome: str) -> None:
        if outcome == "preempted":
            self.run.mark_preempting()
        self.run.finish(exit_code=EXIT_CODES[outcome])


def _code_block(text: str) -> str:
    """Text shown as written in TensorBoard's markdown view: indented four spaces."""
    return "\n".join("    " + line for line in text.splitlines() or [""])
