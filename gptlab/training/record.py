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
import math
import os
import re
import statistics
import time
from dataclasses import fields
from pathlib import Path

from gptlab.core.config import GPTConfig, TrainingConfig, autocasts_to_bf16
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
        "cpu": environment.get("cpu"),
        "cpus": environment.get("cpus"),
        "load": _typical(series.get("load")),  # the machine's 1-minute load average at the evaluations
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
    if isinstance(header.get("study"), dict):
        record["study"] = header["study"]
    record["code"] = environment.get("code")
    versions = code_versions(log_path)
    if len({v["code"] for v in versions}) > 1:
        record["code_versions"] = versions
    finished = record["max_steps"] is not None and record["val_step"] == record["max_steps"]
    record["status"] = "complete" if finished else "stopped"
    return record


def code_versions(log_path: Path) -> list[dict]:
    """[{"from_step", "code", "commit"}, ...]: the code each attempt of the run trained with (a resumed run's
    log has one header per attempt), where it changed."""
    versions = []
    step = 0
    for line in Path(log_path).read_text(encoding="utf-8", errors="replace").splitlines():
        if line.startswith("# run "):
            found = re.search(r"at step (\d+)", line)
            step = int(found.group(1)) if found else 0
        elif line.startswith("# environment "):
            try:
                environment = json.loads(line[len("# environment "):])
            except json.JSONDecodeError:
                continue
            code = environment.get("code") if isinstance(environment, dict) else None
            if code and (not versions or versions[-1]["code"] != code):
                versions.append({"from_step": step, "code": code, "commit": environment.get("git_commit")})
    return versions


def _typical(points: list[tuple[int, float]] | None) -> float | None:
    """The median of a per-step measure, leaving out the first steps (compilation, warm-up)."""
    values = [v for _, v in points or []]
    values = values[2:] if len(values) > 4 else values
    return statistics.median(values) if values else None


# what run.json holds that log.txt also says: the log wins where they disagree
FROM_LOG = ("experiment", "seed", "preset", "model_config", "training_config", "max_steps", "val_loss", "val_step",
            "val_loss_best", "hellaswag_acc_norm", "hellaswag_acc", "params", "flops_per_token", "data_fingerprint",
            "study", "code", "code_versions")
# keys whose value must be a dict (or absent) for the report to read them
DICTS = ("model_config", "training_config", "study", "lengths", "classes", "experiment_model_fields")


def read_record(log_dir: Path) -> dict | None:
    """A run's record: run.json, checked against log.txt, the run's own account: a run.json that is
    not a record (truncated, emptied, a list) is replaced by the log's summary; a score or a config
    in it that the log contradicts is the log's; a value of the wrong kind is dropped. Each such
    repair is said in the record's `warnings`, naming the file. A 'running' run whose process is
    gone (the directory's lock is free) reads as stopped."""
    log_dir = Path(log_dir)
    path, log = log_dir / RECORD, log_dir / "log.txt"
    record, warnings = None, []
    why = "inferred from log.txt (no run.json)"
    if path.is_file():
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            record = None
        if not (isinstance(record, dict) and isinstance(record.get("experiment"), str)):
            record, why = None, f"inferred from log.txt ({path.name} is not a run record)"
            warnings.append(f"{path} is not a run record (truncated, emptied or edited?): read from log.txt instead")
    if record is None:
        if not log.is_file():
            return None
        record = summarize(log)
        record["status_why"] = why
    elif log.is_file():
        step = record.get("step") if isinstance(record.get("step"), int) and record.get("step") >= 0 else None
        truth = summarize(log, step)
        for key in FROM_LOG:
            if key in truth and truth[key] != record.get(key) and not _both_nan(truth[key], record.get(key)):
                if record.get("status") == "complete":
                    warnings.append(f"{path}: {key} is {_short(record.get(key))} but log.txt says {_short(truth[key])}; "
                                    f"log.txt's is used")
                record[key] = truth[key]
    versions = record.get("code_versions") if isinstance(record.get("code_versions"), list) else []
    if len(versions) > 1:
        spans = [f"steps {v['from_step']}-{nxt['from_step']}" if nxt else f"steps {v['from_step']}-"
                 for v, nxt in zip(versions, [*versions[1:], None])]
        warnings.append(f"trained by {len(versions)} versions of gptlab's code: " + "; ".join(
            f"{span} by {v['code']} (commit {v['commit']})" for span, v in zip(spans, versions)) +
            ": resumed after the code changed, so its numbers are no single version's")
    for key in DICTS:
        if key in record and record[key] is not None and not isinstance(record[key], dict):
            warnings.append(f"{path}: {key} is {_short(record[key])}, not a record of fields; left out")
            record[key] = None
    for key in ("val_loss", "hellaswag_acc_norm"):
        value = record.get(key)
        if value is not None and not (isinstance(value, (int, float)) and math.isfinite(value)):
            warnings.append(f"{path}: {key} is {_short(value)}: not a score, left out")
            record[key] = None
    for key, config in (("model_config", GPTConfig), ("training_config", TrainingConfig)):
        if isinstance(record.get(key), dict):  # a field added since the run: its default, what it trained with
            record[key] = {**{f.name: getattr(config(), f.name) for f in fields(config)}, **record[key]}
    if record.get("status") == "running" and not DirectoryLock(log_dir).held():
        record["status"], record["status_why"] = "stopped", "its process ended without saying why (killed?)"
    record["log_dir"] = str(log_dir)
    record["warnings"] = warnings
    return record


def _both_nan(a, b) -> bool:
    return isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b)


def _short(value) -> str:
    text = json.dumps(value, default=str)
    return text if len(text) <= 40 else text[:37] + "..."


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
