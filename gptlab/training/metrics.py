"""The one path every number of a run takes: `Metrics` writes each to log.txt (rank 0) and
the console, and works out what is derived from them (tokens/s, MFU, memory) itself.
Trackers (W&B, TensorBoard) will be further sinks here; nothing reads numbers back from
printed text."""

from __future__ import annotations

import torch

from gptlab.training.distributed import Dist
from gptlab.training.logger import RunLog
from gptlab.training.record import RunRecord

# dense bf16 tensor-core peak FLOP/s from NVIDIA's data sheets, by a part of the device name; the
# first match wins, so the variants with another peak come before their family's name
PEAK_FLOPS = {"H100 PCIe": 756e12, "H100 NVL": 835e12, "H100": 989e12, "H200": 989e12, "GH200": 989e12,
              "A100": 312e12, "L40S": 362e12, "L4": 121e12, "RTX 4090": 165e12, "RTX 3090": 71e12}


def peak_flops(ctx: Dist) -> dict | None:
    """{"flops": peak FLOP/s, "source": where the figure comes from} for this device, or None
    where it is not known (then no MFU is reported rather than a wrong one)."""
    if ctx.device_type != "cuda":
        return None
    name = torch.cuda.get_device_name(ctx.device)
    key = next((key for key in PEAK_FLOPS if key in name), None)
    return {"flops": PEAK_FLOPS[key], "source": f"data sheet, dense bf16 of {key}"} if key else None


class Metrics:
    def __init__(self, log: RunLog, ctx: Dist, tokens_per_step: int, flops_per_token: int, last_step: int,
                 record: RunRecord | None = None):
        self.log, self.ctx, self.run_record = log, ctx, record
        self.tokens_per_step, self.flops_per_token, self.last_step = tokens_per_step, flops_per_token, last_step
        peak = peak_flops(ctx)
        self.peak = peak["flops"] if peak else None
        self.step_seconds: list[float] = []  # this process's steps, for the time estimate
        self.said_hellaswag_skipped = False
        self.last_evaluation: dict = {}

    def header(self, key: str, value) -> None:
        self.log.header(key, value)

    def record(self, step: int, values: dict) -> None:
        """Write each named value of a step to every sink."""
        for key, value in values.items():
            self.log.record(step, key, value)

    def training_step(self, step: int, loss: float, lr: float, norm: float, seconds: float, data_seconds: float,
                      extras: dict[str, float]) -> None:
        """A finished optimizer step: its loss (cross-entropy), lr, gradient norm, time, and the
        model's extra losses and metrics."""
        values = {"train": loss, "lr": lr, "norm": norm, "tok_per_sec": round(self.tokens_per_step / seconds)}
        values.update({f"train_{name}": value for name, value in extras.items()})
        console = (f"step {step:5d} | loss {loss:.6f} | lr {lr:.4e} | norm {norm:.4f} | dt {seconds * 1000:.1f}ms | "
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
        if skipped and self.said_hellaswag_skipped:  # said once per run, not at every evaluation
            values.pop("hella")
        self.record(step, values)
        for text in samples:
            self.record(step, {"sample": repr(text)})
        self.update_record(step)
        message = f"step {step:5d} | val {results['val']:.4f}"
        if skipped:
            if not self.said_hellaswag_skipped:
                message += f" | hella skipped ({results['hella_why']})"
            self.said_hellaswag_skipped = True
        else:
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
            print(text, flush=True)


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
