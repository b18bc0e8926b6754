"""Training-step throughput: forward, backward, gradient clipping and the optimizer step, as the trainer
takes them, timed for several models in one process with the models interleaved (one step
of each in turn, the order rotated every round) so that whatever else the machine is doing
slows all of them alike."""

from __future__ import annotations

import contextlib
import statistics
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch
from torch import nn

from gptlab.bench.peak import synchronize
from gptlab.core.config import TrainingConfig
from gptlab.data.loader import DeviceBatches, TokenLoader
from gptlab.optim import optimizer_class
from gptlab.training.trainer import clip_gradients


@dataclass
class Contender:
    """One model under test, with everything its steps need and what they measured."""
    name: str
    model: nn.Module
    loss: Callable  # (model, x, y) -> the scalar training loss
    flops_per_token: int
    runner: nn.Module | None = None  # what the steps call: the model, or the model compiled
    batches: DeviceBatches | None = None
    optimizer_class: type | None = None  # an experiment's optimizer (gptlab.optim); None: the recipe's AdamW
    optimizer: torch.optim.Optimizer | None = None
    step_seconds: list[float] = field(default_factory=list)
    data_seconds: list[float] = field(default_factory=list)
    peak_memory: int | None = None  # bytes, CUDA only
    error: str | None = None

    def result(self, tokens_per_step: int, peak: dict, sheet: dict | None) -> dict:
        if self.error:
            return {"name": self.name, "error": self.error}
        rates = [tokens_per_step / s for s in self.step_seconds]  # in the order of the rounds
        tokens_per_second = max(rates)  # the fastest step: the least disturbed by the rest of the machine
        q1, q3 = (float(np.percentile(rates, q)) for q in (25, 75))
        flops = self.flops_per_token * tokens_per_second
        return {"name": self.name, "optimizer": getattr(self.optimizer_class, "__name__", "AdamW"),
                "params": sum(p.numel() for p in self.model.parameters()),
                "flops_per_token": self.flops_per_token, "tokens_per_second": tokens_per_second,
                "tokens_per_second_median": statistics.median(rates), "tokens_per_second_iqr": [q1, q3],
                # the fastest of the even rounds and of the odd ones: two half-length benchmarks in one, whose
                # disagreement is what a repeated run would show
                "tokens_per_second_halves": [max(rates[0::2]), max(rates[1::2] or rates[0::2])],
                "steps": len(rates), "flops_per_second": flops,
                "mfu_measured_peak": flops / peak["flops"], "mfu_data_sheet": flops / sheet["flops"] if sheet else None,
                "data_wait_share": sum(self.data_seconds) / sum(self.step_seconds),
                "peak_memory_bytes": self.peak_memory}


def random_tokens(vocab_size: int, n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, vocab_size, size=n, dtype=np.int64).astype(np.uint16)


def prepare(c: Contender, device: torch.device, tokens: np.ndarray, batch: int, seq_len: int,
            compile_model: bool) -> None:
    """The model on the device, its optimizer as the trainer builds it (the experiment's, with the
    recipe's settings; the reference's is the recipe's AdamW: fused on CUDA, decay on matrices
    only), compiled when asked, reading its own TokenLoader of the shared tokens. An optimizer's
    own FLOPs (Muon's Newton-Schulz iterations) join the model's, per token of a step."""
    c.model.to(device).train()
    if c.optimizer_class is None:
        matrices = [p for p in c.model.parameters() if p.dim() >= 2]
        others = [p for p in c.model.parameters() if p.dim() < 2]
        c.optimizer = torch.optim.AdamW([{"params": matrices, "weight_decay": 0.1},
                                         {"params": others, "weight_decay": 0.0}],
                                        lr=6e-4, betas=(0.9, 0.95), eps=1e-8, fused=device.type == "cuda")
    else:
        c.optimizer = optimizer_class(c.optimizer_class)(c.model, TrainingConfig(), device.type)
        c.flops_per_token += round(c.optimizer.flops_per_step() / (batch * seq_len))
    c.batches = DeviceBatches(TokenLoader([tokens], batch, seq_len, name="benchmark tokens"), device)
    c.runner = torch.compile(c.model) if compile_model else c.model


def train_step(c: Contender, device: torch.device, autocast) -> tuple[float, float]:
    """One optimizer step; (seconds, seconds spent waiting for the batch)."""
    synchronize(device)
    start = time.perf_counter()
    x, y = c.batches.next_batch()
    data = time.perf_counter() - start
    with autocast:
        loss = c.loss(c.runner, x, y)
    loss.backward()
    if c.optimizer_class is None:
        torch.nn.utils.clip_grad_norm_(c.model.parameters(), 1.0)
    else:
        clip_gradients(c.model, c.optimizer, 1.0)
    c.optimizer.step()
    c.optimizer.zero_grad(set_to_none=True)
    synchronize(device)
    return time.perf_counter() - start, data


def warm_up(c: Contender, device: torch.device, autocast, steps: int, resident: int = 0) -> None:
    """The first steps (compilation, allocator, kernel choice), untimed; on CUDA the peak
    memory of a step, counting this model's weights and optimizer state but not the other
    models' (`resident`: the bytes allocated before this model reached the device)."""
    for _ in range(steps):
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        train_step(c, device, autocast)
    if device.type == "cuda" and steps:
        c.peak_memory = torch.cuda.max_memory_allocated(device) - resident


def run_interleaved(contenders: list[Contender], device: torch.device, autocast, steps: int,
                    on_round: Callable[[int], None] | None = None) -> None:
    """`steps` timed steps of every contender, one of each per round, the order rotated."""
    live = [c for c in contenders if c.error is None]
    for r in range(steps):
        order = live[r % len(live):] + live[:r % len(live)] if live else []
        for c in order:
            seconds, data = train_step(c, device, autocast)
            c.step_seconds.append(seconds)
            c.data_seconds.append(data)
        if on_round:
            on_round(r)


def autocast_for(device: torch.device, dtype: torch.dtype):
    if dtype == torch.float32:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)
