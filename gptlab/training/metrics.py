"""The one path every number of a run takes: `Metrics` writes each to log.txt (rank 0), the
console and the trackers the run turned on (W&B, TensorBoard: gptlab.training.trackers), and
works out what is derived from them (tokens/s, MFU, memory) itself; nothing reads numbers
back from printed text. On an interactive terminal a progress bar sits under the console's
lines while a step computes; it is never written anywhere else."""

from __future__ import annotations

import os
import shutil
import sys
import time
from collections.abc import Mapping

import torch

from gptlab.training.distributed import Dist, peak_flops, process_seconds
from gptlab.training.logger import RunLog
from gptlab.training.preemption import Preempted
from gptlab.training.record import RunRecord
from gptlab.training.trackers import Tracker, scalars

class Metrics:
    """A context: leaving it closes the trackers with how the run ended (done, preempted,
    interrupted, failed) and clears the progress bar."""

    def __init__(self, log: RunLog, ctx: Dist, tokens_per_step: int, flops_per_token: int, last_step: int,
                 record: RunRecord | None = None, trackers: list[Tracker] = (), progress: bool | None = None):
        self.log, self.ctx, self.run_record, self.trackers = log, ctx, record, list(trackers)
        if progress is None:
            progress = show_progress(sys.stdout.isatty(), os.environ)
        self.progress = ProgressBar(last_step) if progress and ctx.master else None
        self.tokens_per_step, self.flops_per_token, self.last_step = tokens_per_step, flops_per_token, last_step
        peak = peak_flops(ctx)
        self.peak = peak["flops"] if peak else None
        self.step_seconds: list[float] = []  # this process's steps, for the time estimate
        self.said_hellaswag_skipped = False
        self.last_evaluation: dict = {}

    def __enter__(self) -> Metrics:
        return self

    def __exit__(self, kind, error, traceback) -> None:
        outcome = ("done" if kind is None else "preempted" if issubclass(kind, Preempted) else
                   "interrupted" if issubclass(kind, KeyboardInterrupt) else "failed")
        self.close(outcome)

    def header(self, key: str, value) -> None:
        """A line describing the run: log.txt's header, the trackers' run metadata."""
        self.log.header(key, value)
        self._to_trackers("metadata", key, value)

    def record(self, step: int, values: dict) -> None:
        """Write each named value of a step to every sink (the numbers only to the trackers)."""
        for key, value in values.items():
            self.log.record(step, key, value)
        numbers = scalars(values)
        if numbers:
            self._to_trackers("scalars", step, numbers)

    def step_started(self, step: int) -> None:
        """Show where the run is while step `step` computes (the progress bar, if any)."""
        if self.progress is not None:
            self.progress.draw(step)

    def training_step(self, step: int, loss: float, lr: float, norm: float, seconds: float, data_seconds: float,
                      extras: dict[str, float], clipped_norm: float | None = None) -> None:
        """A finished optimizer step: its loss (cross-entropy), lr, gradient norm (every gradient's, and
        `norm_clipped`, that of the gradients clipping compared where it compares only some), time, and the
        model's extra losses and metrics."""
        values = {"train": loss, "lr": lr, "norm": norm, "tok_per_sec": round(self.tokens_per_step / seconds)}
        if clipped_norm is not None:
            values["norm_clipped"] = clipped_norm
        if not self.step_seconds and (age := process_seconds()) is not None:
            # this process's fixed cost: from its start (Python, imports, data, model, the first evaluation) to the
            # start of its first step
            values["startup"] = round(age - seconds, 2)
        values.update({f"train_{name}": value for name, value in extras.items()})
        shown = f"{norm:.4f}" + (f" (clipped {clipped_norm:.4f})" if clipped_norm is not None else "")
        console = (f"step {step:5d} | loss {loss:.6f} | lr {lr:.4e} | norm {shown} | dt {seconds * 1000:.1f}ms | "
                   f"tok/sec {values['tok_per_sec']:,}")
        if self.peak:
            values["mfu"] = round(100 * self.flops_per_token * self.tokens_per_step / seconds
                                  / (self.peak * self.ctx.world_size), 2)
            console += f" | mfu {values['mfu']:.1f}%"
        if self.ctx.device_type == "cuda":
            values["mem_gib"] = round(torch.cuda.max_memory_allocated(self.ctx.device) / 2**30, 2)
            console += f" | mem {values['mem_gib']:.1f}GiB"
        console += f" | data {100 * data_seconds / seconds:.1f}%"
        console += console_extras(extras)
        self.record(step, values)
        self.print(console)
        self.update_record(step + 1, force=False)
        self.step_seconds.append(seconds)
        if len(self.step_seconds) == 2 and self.last_step - step > 2:  # the first step includes warm-up
            per_step = self.step_seconds[1]
            self.print(f"about {per_step:.2f}s a step: the remaining {self.last_step - step - 1:,} steps take about "
                       f"{duration(per_step * (self.last_step - step - 1))}, evaluations aside")

    def skipped_step(self, step: int, bad_steps: int) -> None:
        self.record(step, {"skipped_nonfinite": bad_steps})

    def evaluation(self, step: int, results: dict) -> None:
        """An evaluator's named results: val, hella (or why it was skipped), samples, ..."""
        self.last_evaluation = {"step": step, **results}
        samples = results.get("samples", [])
        skipped = results.get("hella") == "skipped"
        values = {key: value for key, value in results.items() if key not in ("samples", "hella_why")}
        if hasattr(os, "getloadavg"):  # the machine's load: a throughput measured beside other work is not the model's
            values["load"] = round(os.getloadavg()[0], 2)
        if skipped and self.said_hellaswag_skipped:  # said once per run, not at every evaluation
            values.pop("hella")
        elif skipped:
            self.header("hellaswag_skipped", results["hella_why"])  # why, for the record and the report's figures
        self.record(step, values)
        for text in samples:
            self.record(step, {"sample": repr(text)})
        if samples:
            self._to_trackers("text", step, "samples", samples)
        self._to_trackers("flush")
        self.update_record(step)
        message = f"step {step:5d} | val {results['val']:.4f}"
        if skipped:
            if not self.said_hellaswag_skipped:
                message += f" | hella skipped ({results['hella_why']})"
            self.said_hellaswag_skipped = True
        elif "hella" in results:  # not in a validation-only evaluation (val_interval)
            message += f" | hella acc_norm {results['hella']:.4f} ({results['hella_correct']}/{results['hella_n']})"
        self.print(message)
        for i, text in enumerate(samples):
            self.print(f"sample {i}: {text!r}")

    def summary(self, step: int, seconds: float, last_checkpoint) -> None:
        """The console's last words: where the run got, what it scored, where its files are."""
        e = self.last_evaluation
        scores = f"val {e['val']:.4f} at step {e['step']}" if e else "no evaluation in this process"
        if e and e.get("hella") != "skipped":
            scores += f", HellaSwag acc_norm {e['hella']:.4f}"
        self.print(f"done: step {step} of {self.last_step} in {duration(seconds)} | {scores}")
        self.print(f"log: {self.log.path} | last checkpoint: {last_checkpoint or 'none'}")
        self.print(f"plot: python plot_training_log.py {self.log.path} curves.png 0")

    def update_record(self, steps_done: int, status: str = "running", why: str = "", force: bool = True) -> None:
        if self.run_record is not None:
            self.run_record.update(steps_done, status, why, force)

    def print(self, text: str) -> None:
        if self.ctx.master:
            if self.progress is not None:
                self.progress.clear()
            print(text, flush=True)

    def close(self, outcome: str) -> None:
        """The end of the run's process: `done`, `preempted`, `interrupted` or `failed`."""
        if self.progress is not None:
            self.progress.clear()
        self._to_trackers("close", outcome)
        self.trackers = []

    def _to_trackers(self, method: str, *args) -> None:
        """Call each tracker; one that fails is turned off with a warning, and the run goes on:
        log.txt and the checkpoints are what must not fail."""
        for tracker in list(self.trackers):
            try:
                getattr(tracker, method)(*args)
            except Exception as e:  # noqa: BLE001 - any tracker error, reported and contained
                self.trackers.remove(tracker)
                name = type(tracker).__name__.removesuffix("Tracker")
                print(f"warning: {name} failed ({type(e).__name__}: {e}); it is off for the rest of this process, "
                      f"log.txt has every number", file=sys.stderr, flush=True)


def show_progress(isatty: bool, environ: Mapping[str, str]) -> bool:
    """A progress bar only for a person watching: stdout is a terminal (not a file or a pipe),
    not under CI (the CI variable set), not a terminal that cannot redraw a line."""
    ci = environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")
    return isatty and not ci and environ.get("TERM") != "dumb"


def progress_line(step: int, total: int, seconds_left: float | None, columns: int) -> str:
    """`step 1200/19073 [##----------] 6.3% | 2h 41m left`, cut to fit `columns`."""
    fraction = min(1.0, step / total) if total else 1.0
    head = f"step {step}/{total} "
    tail = f" {100 * fraction:.1f}% | {duration(seconds_left) + ' left' if seconds_left is not None else 'time left ?'}"
    room = min(40, columns - 1 - len(head) - len(tail) - 2)
    bar = f"[{'#' * int(room * fraction):-<{room}}]" if room >= 10 else ""
    return (head + bar + tail)[:max(0, columns - 1)]


class ProgressBar:
    """One status line under the console's lines, drawn while a step computes and cleared
    (overwritten with spaces, no escape codes) before anything is printed. Its time left is
    this process's wall-clock rate since its first step (compilation left out), evaluations
    included."""

    def __init__(self, total: int, stream=None):
        self.total, self.stream = total, stream or sys.stdout
        self.shown = 0  # characters on the status line now
        self.first: int | None = None  # the first step of this process
        self.since: tuple[float, int] | None = None  # (time, step) when it ended

    def draw(self, step: int) -> None:
        now, left = time.monotonic(), None
        if self.first is None:
            self.first = step
        elif self.since is None:
            self.since = (now, step)
        elif step > self.since[1]:
            left = (now - self.since[0]) / (step - self.since[1]) * (self.total - step)
        line = progress_line(step, self.total, left, shutil.get_terminal_size().columns)
        self.clear()
        self.stream.write(line)
        self.stream.flush()
        self.shown = len(line)

    def clear(self) -> None:
        if self.shown:
            self.stream.write("\r" + " " * self.shown + "\r")
            self.stream.flush()
            self.shown = 0


def console_extras(extras: dict[str, float]) -> str:
    """The model's extras for the console: ` | moe_balance 0.0101`, and a family of indexed
    metrics on one field: ` | moe_load 0.13 0.12 ...` for moe_load_0, moe_load_1, ..."""
    groups: dict[str, list[float]] = {}
    for name, value in extras.items():
        stem, _, index = name.rpartition("_")
        groups.setdefault(stem if stem and index.isdigit() else name, []).append(value)
    return "".join(f" | {name} " + " ".join(f"{v:.4f}" if len(values) == 1 else f"{v:.2f}" for v in values)
                   for name, values in groups.items())


def duration(seconds: float) -> str:
    """3725 -> '1h 02m'; 75 -> '1m 15s'; 4.2 -> '4.2s'."""
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h {minutes:02d}m" if hours else f"{minutes}m {secs:02d}s"
