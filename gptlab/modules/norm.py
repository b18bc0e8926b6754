"""Normalisation layers. A norm class is built as `cls(n_embd)`; LayerNorm also follows
`config.bias`. nn.LayerNorm is PyTorch's own; RMSNorm is PyTorch's nn.RMSNorm."""

from __future__ import annotations

from torch import nn

from gptlab.core.config import GPTConfig


class RMSNorm(nn.RMSNorm):
    """Root-mean-square norm without mean-centring or bias (Zhang & Sennrich 2019)."""

    def __init__(self, n_embd: int, eps: float = 1e-5):
        super().__init__(n_embd, eps=eps)


def build_norm(norm_class: type[nn.Module], config: GPTConfig) -> nn.Module:
    if issubclass(norm_class, nn.LayerNorm):
        return norm_class(config.n_embd, bias=config.bias)
    return norm_class(config.n_embd)
