"""The transformer block, built from injected component classes."""

from __future__ import annotations

from typing import NamedTuple

from torch import Tensor, nn

from gptlab.core.config import GPTConfig
from gptlab.modules.attention import KVCache
from gptlab.modules.norm import build_norm
from gptlab.modules.position import PositionEncoding


class Extras(NamedTuple):
    """What a component reports besides its output, by returning `(output, Extras(...))`:
    `losses` are added to the training loss as they are (a mixture-of-experts balance
    loss, its coefficient applied), `metrics` are logged only. The model sums each loss
    over the layers that report it and averages each metric."""
    losses: dict[str, Tensor] = {}
    metrics: dict[str, Tensor] = {}


def split_extras(out) -> tuple[Tensor, Extras | None]:
    """A component's output and its Extras (None when it returned a plain tensor)."""
    return (out[0], out[1]) if isinstance(out, tuple) else (out, None)


class Block(nn.Module):
    """Pre-norm residual block: x + attn(ln_1(x)), then x + mlp(ln_2(x)) (GPT-2).
    Returns the new x and the Extras its components reported."""

    def __init__(self, config: GPTConfig, attention_class: type[nn.Module],
                 mlp_class: type[nn.Module], norm_class: type[nn.Module]):
        super().__init__()
        self.ln_1 = build_norm(norm_class, config)
        self.attn = attention_class(config)
        self.ln_2 = build_norm(norm_class, config)
        self.mlp = mlp_class(config)
        # CompleteP's branch multiplier 1/m_L (Dey et al. 2025, alpha = 1); 1 in the standard parametrization
        self.branch_scale = 1.0 / config.multipliers()[1]

    def forward(self, x: Tensor, pos_enc: PositionEncoding, pos: Tensor,
                cache: KVCache | None = None) -> tuple[Tensor, list[Extras]]:
        attn_out, attn_extras = split_extras(self.attn(self.ln_1(x), pos_enc, pos, cache))
        x = x + (attn_out * self.branch_scale if self.branch_scale != 1.0 else attn_out)
        mlp_out, mlp_extras = split_extras(self.mlp(self.ln_2(x)))
        mlp_out = mlp_out * self.branch_scale if self.branch_scale != 1.0 else mlp_out
        return x + mlp_out, [e for e in (attn_extras, mlp_extras) if e is not None]
