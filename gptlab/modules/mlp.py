"""Feed-forward variants. Each is `cls(config)`, maps (B, T, C) to (B, T, C), and names its
layers as GPT-2 does (`c_fc` in, `c_proj` out) so initialisation treats them alike.

Gated variants (GLU family, Shazeer 2020, "GLU Variants Improve Transformer") have three
weight matrices instead of two, so their default hidden size is 8/3 * n_embd rather than
4 * n_embd: the parameter count then matches the GELU MLP and a comparison is fair.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from gptlab.core.config import GPTConfig


class MLP(nn.Module):
    """GPT-2's MLP: c_fc -> GELU (tanh approximation, as GPT-2) -> c_proj, hidden 4 * n_embd."""

    gated = False
    config_fields = ("mlp_hidden",)  # the GPTConfig.COMPONENT_FIELDS this class reads

    def __init__(self, config: GPTConfig):
        super().__init__()
        hidden = config.mlp_hidden or self.default_hidden(config.n_embd)
        self.c_fc = nn.Linear(config.n_embd, 2 * hidden if self.gated else hidden, bias=config.bias)
        self.c_proj = nn.Linear(hidden, config.n_embd, bias=config.bias)
        self.dropout = nn.Dropout(config.dropout)

    @classmethod
    def rung_fields(cls, own: GPTConfig, rung: GPTConfig) -> dict:
        """For another size on a ladder: a hidden size the experiment sets scales with n_embd (0 follows the rule:
        4 n_embd, or 8/3 n_embd gated)."""
        return {"mlp_hidden": max(1, round(own.mlp_hidden * rung.n_embd / own.n_embd))} if own.mlp_hidden else {}

    def default_hidden(self, n_embd: int) -> int:
        return round(8 * n_embd / 3) if self.gated else 4 * n_embd

    def activation(self, x: Tensor) -> Tensor:
        return F.gelu(x, approximate="tanh")

    def hidden(self, h: Tensor) -> Tensor:
        """What lies between c_fc and c_proj: the activation, gated or not (MoE applies it to every expert's
        rows at once)."""
        if self.gated:
            gate, up = h.chunk(2, dim=-1)
            return self.activation(gate) * up
        return self.activation(h)

    def forward(self, x: Tensor) -> Tensor:
        return self.dropout(self.c_proj(self.hidden(self.c_fc(x))))


class ReLUMLP(MLP):
    """The original Transformer's ReLU feed-forward (Vaswani et al. 2017, eq. 2)."""

    def activation(self, x: Tensor) -> Tensor:
        return F.relu(x)


class SiLUMLP(MLP):
    """SiLU / swish activation (Ramachandran et al. 2017), ungated."""

    def activation(self, x: Tensor) -> Tensor:
        return F.silu(x)


class GEGLU(MLP):
    """GELU(x W) * (x V) (Shazeer 2020, eq. 6), with the baseline's tanh GELU, so that
    geglu-vs-baseline changes the gating alone, not the GELU's approximation too."""

    gated = True


class SwiGLU(MLP):
    """Swish(x W) * (x V) (Shazeer 2020, eq. 6), as in PaLM and Llama."""

    gated = True

    def activation(self, x: Tensor) -> Tensor:
        return F.silu(x)
