"""A run's record: `run.json` beside `log.txt`, what a study's report reads.

The record is worked out from the log by one function, `summarize`: the header says what the
run is (experiment, classes, configs, parameters, FLOPs, KV cache, device, commit) and the
records say how far it got and what it scored. Rank 0 rewrites `run.json` (atomically) at
the start, at every evaluation, every half minute of training and at the end, adding what
only the live run knows: its status (running, complete, stopped, failed) and why. A log
without a record (an older run) is summarised the same way; its status is then inferred.
Keys other tools add (`lengths` from `gptlab eval-lengths`, `study` from `gptlab study`)
are kept.
"""

from __future__ import annotations

import json
import os
import statistics
import time
from pathlib import Path

from gptlab.core.config import autocasts_to_bf16
from gptlab.files import DirectoryLock, atomic_write_text
from gptlab.training.logger import read_header, read_log

RECORD = "run.json"
STUDY_ENV = "GPTLAB_STUDY"  # set by `gptlab study` for its runs: the study, as JSON, which the record keeps
STATUSES = ("running", "complete", "stopped", "failed", "diverged")
# the scores a record holds that studies compare, and which way is better
METRICS = {"val_loss": "val loss", "hellaswag_acc_norm": "HellaSwag acc_norm"}
LOWER_IS_BETTER = {"val_loss": True, "hellaswag_acc_norm": False}


def summarize(log_path: Path, step: int | None = None) -> dict:
    """What log.txt says of its run. `step`: the steps the run has done (a resumed run's log
    may hold later steps of the attempt it replaced; those are left out)."""
    header, series = read_header(log_path), read_log(log_path)
    last_train = max((s for s, _ in series.get("train", [])), default=-1)
    done = last_train + 1 if step is None else step
    series = {key: [(s, v) for s, v in points if s <= done] for key, points in series.items()}
    train_cfg, experiment = header.get("training_config", {}), header.get("experiment", {})
    environment = header.get("environment", {})
    on_gpu = str(environment.get("device", "cpu")) not in ("cpu", "mps")
    record = {
        "experiment": experiment.get("name"),
        "preset": experiment.get("preset"),
        "classes": {k: v for k, v in experiment.items() if k not in ("name", "path", "preset")},
        "experiment_file": experiment.get("path"),
        "params": header.get("params"),
        "params_non_embedding": header.get("params_non_embedding"),
        "params_active": header.get("params_active", header.get("params")),
        "flops_per_token": header.get("flops_per_token"),
        "flops_breakdown": header.get("flops_breakdown"),
        "kv_cache_bytes_per_token": header.get("kv_cache_bytes_per_token"),
        "device": environment.get("device"),
        "world_size": header.get("batch", {}).get("processes"),
        "dtype": ("bfloat16 autocast" if autocasts_to_bf16(train_cfg.get("dtype", "auto"), "cuda" if on_gpu else "cpu")
                  else "float32"),
        "seed": train_cfg.get("seed"),
        "git_commit": environment.get("git_commit"),
        "data_fingerprint": header.get("data_fingerprint"),
        "model_config": header.get("model_config"),
        "experiment_model_fields": header.get("experiment_model_fields"),
        "training_config": train_cfg,
        "step": done,
        "max_steps": train_cfg.get("max_steps"),
        "tokens": done * train_cfg.get("total_batch_size", 0),
        "tok_per_sec": _typical(series.get("tok_per_sec")),
        "mfu": _typical(series.get("mfu")),
        "peak_flops": header.get("peak_flops"),
    }
    val = series.get("val", [])
    record["val_loss"] = val[-1][1] if val else None
    record["val_step"] = val[-1][0] if val else None
    record["val_loss_best"] = min(v for _, v in val) if val else None
    hella = dict(series.get("hella", []))
    last_hella = max(hella) if hella else None
    record["hellaswag_acc_norm"] = hella.get(last_hella)
    record["hellaswag_acc"] = dict(series.get("hella_acc", [])).get(last_hella)
    record["hellaswag_step"] = last_hella
    if last_hella is None and header.get("hellaswag_skipped"):
        record["hellaswag_skipped"] = header["hellaswag_skipped"]
    finished = record["max_steps"] is not None and record["val_step"] == record["max_steps"]
    record["status"] = "complete" if finished else "stopped"
    return record


def _typical(points: list[tuple[int, float]] | None) -> float | None:
    """The median of a per-step measure, leaving out the first steps (compilation, warm-up)."""
    values = [v for _, v in points or []]
    values = values[2:] if len(values) > 4 else values
    return statistics.median(values) if values else None


def read_record(log_dir: Path) -> dict | None:
    """A run's record: run.json (its status checked against the directory's lock: a 'running'
    run whose process is gone was killed), or, for a log without one, its summary."""
    log_dir = Path(log_dir)
    path, log = log_dir / RECORD, log_dir / "log.txt"
    record = None
    why = "inferred from log.txt (no run.json)"
    if path.is_file():
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            record = None
        if not (isinstance(record, dict) and isinstance(record.get("experiment"), str)):
            record, why = None, f"inferred from log.txt ({path.name} is not a run record)"
    if record is None:
        if not log.is_file():
            return None
        record = summarize(log)
        record["status_why"] = why
    if record.get("status") == "running" and not DirectoryLock(log_dir).held():
        record["status"], record["status_why"] = "stopped", "its process ended without saying why (killed?)"
    record["log_dir"] = str(log_dir)
    return record


class RunRecord:
    """Keeps `run.json` current while the run lives (rank 0 only)."""

    def __init__(self, log_dir: Path, enabled: bool = True, every_seconds: float = 30.0):
        self.log_dir, self.enabled, self.every = Path(log_dir), enabled, every_seconds
        self.path, self.written = self.log_dir / RECORD, 0.0
        self.kept = {}  # what other tools wrote into the record
        if enabled and self.path.is_file():
            try:
                old = json.loads(self.path.read_text(encoding="utf-8"))
                self.kept = {k: old[k] for k in ("lengths", "study") if k in old}
            except (OSError, json.JSONDecodeError):
                pass
        if os.environ.get(STUDY_ENV):
            self.kept["study"] = json.loads(os.environ[STUDY_ENV])

    def update(self, step: int, status: str = "running", why: str = "", force: bool = True) -> None:
        if not self.enabled or (not force and time.monotonic() - self.written < self.every):
            return
        record = {**summarize(self.log_dir / "log.txt", step), **self.kept, "status": status,
                  "updated": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        if why:
            record["status_why"] = why
        try:
            atomic_write_text(self.path, json.dumps(record, indent=1) + "\n")
        except OSError as e:  # the record is a convenience; the log and checkpoints are what must not fail
            print(f"warning: could not write {self.path} ({e.strerror or e})")
        self.written = time.monotonic()
