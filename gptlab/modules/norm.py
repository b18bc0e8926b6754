"""Normalisation layers. A norm class is built as `cls(n_embd)`; LayerNorm also follows
`config.bias`. nn.LayerNorm is PyTorch's own; RMSNorm is PyTorch's nn.RMSNorm, with its backward
written out on the CPU (below)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from gptlab.core.config import GPTConfig


class RMSNorm(nn.RMSNorm):
    """Root-mean-square norm without mean-centring or bias (Zhang & Sennrich 2019):
    y = x / sqrt(mean(x^2) + eps) * weight.

    On the CPU in eager mode, PyTorch has a fused forward kernel (aten._fused_rms_norm) but no backward one:
    autograd differentiates the composite (pow, mean, rsqrt, two products) op by op, about ten passes over the
    activations, which made the Llama stack's norms cost several times LayerNorm's. There the forward is
    PyTorch's kernel and the backward the closed form (_RMSNormCPU); the forward is bitwise PyTorch's, the
    gradients equal to float rounding (tests/modules/test_norm.py). Compiled, on CUDA or in another dtype:
    nn.RMSNorm as it is."""

    def __init__(self, n_embd: int, eps: float = 1e-5):
        super().__init__(n_embd, eps=eps)

    def forward(self, x: Tensor) -> Tensor:
        if (x.device.type != "cpu" or torch.compiler.is_compiling() or self.weight is None
                or x.dtype not in (torch.float32, torch.float64) or x.dtype != self.weight.dtype
                or torch.is_autocast_enabled("cpu")):
            return super().forward(x)
        return _RMSNormCPU.apply(x, self.weight, list(self.normalized_shape), self.eps)


class _RMSNormCPU(torch.autograd.Function):
    """y = x * rstd * w, rstd = 1 / sqrt(mean(x^2) + eps) over the normalised dimensions. With x_hat = x * rstd and
    g = dy * w: dx = rstd * (g - x_hat * mean(g * x_hat)), dw = sum over the other dimensions of dy * x_hat."""

    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, shape: list[int], eps: float | None) -> Tensor:
        y, rstd = torch.ops.aten._fused_rms_norm(x, shape, weight, eps)
        ctx.save_for_backward(x, weight, rstd)
        ctx.dims = tuple(range(-len(shape), 0))
        return y

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, dy: Tensor):
        x, weight, rstd = ctx.saved_tensors
        x_hat = x * rstd
        dw = None
        if ctx.needs_input_grad[1]:
            dw = (dy * x_hat).reshape(-1, *weight.shape).sum(0)
        dx = None
        if ctx.needs_input_grad[0]:
            g = dy * weight
            dx = torch.addcmul(g, x_hat, (g * x_hat).mean(ctx.dims, keepdim=True), value=-1).mul_(rstd)
        return dx, dw, None, None


def build_norm(norm_class: type[nn.Module], config: GPTConfig) -> nn.Module:
    if issubclass(norm_class, nn.LayerNorm):
        return norm_class(config.n_embd, bias=config.bias)
    return norm_class(config.n_embd)
