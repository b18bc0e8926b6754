"""The learning-rate schedule of the GPT-2 recipe: linear warm-up, then cosine decay to a floor
(build-nanogpt's get_lr), applied to every parameter group of the optimizer alike."""

from __future__ import annotations

import math

from gptlab.core.config import TrainingConfig


def learning_rate(step: int, train: TrainingConfig) -> float:
    """Linear warm-up to max_lr over warmup_steps, then cosine decay to
    max_lr * min_lr_ratio at max_steps (build-nanogpt's get_lr)."""
    min_lr = train.max_lr * train.min_lr_ratio
    if step < train.warmup_steps:
        return train.max_lr * (step + 1) / train.warmup_steps
    if step >= train.max_steps:
        return min_lr
    progress = (step - train.warmup_steps) / max(1, train.max_steps - train.warmup_steps)
    return min_lr + 0.5 * (1.0 + math.cos(math.pi * progress)) * (train.max_lr - min_lr)


def set_learning_rates(optimizer, step: int, train: TrainingConfig) -> float:
    """Every group at its own peak rate times the schedule's factor at `step` (a group whose peak is
    max_lr gets learning_rate(step) itself); returns that, the rate the log records."""
    lr = learning_rate(step, train)
    for group, peak in zip(optimizer.param_groups, optimizer.peak_lrs):
        group["lr"] = lr if peak == train.max_lr else lr * (peak / train.max_lr)
    return lr
