"""AdamW and the learning-rate schedule of the GPT-2 recipe."""

from __future__ import annotations

import math

import torch
from torch import nn

from gptlab.core.config import TrainingConfig


def build_optimizer(model: nn.Module, train: TrainingConfig, device_type: str) -> torch.optim.AdamW:
    """AdamW with weight decay on 2-D weights (matmuls, embeddings) only, not on biases
    and norm gains; the fused kernel on CUDA."""
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [{"params": [p for p in params if p.dim() >= 2], "weight_decay": train.weight_decay},
              {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=train.max_lr, betas=(train.beta1, train.beta2), eps=1e-8,
                             fused=device_type == "cuda")


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
