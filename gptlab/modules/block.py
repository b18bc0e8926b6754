"""The transformer block, built from injected component classes."""

from __future__ import annotations

from torch import Tensor, nn

from gptlab.core.config import GPTConfig
from gptlab.modules.attention import KVCache
from gptlab.modules.norm import build_norm
from gptlab.modules.position import PositionEncoding


class Block(nn.Module):
    """Pre-norm residual block: x + attn(ln_1(x)), then x + mlp(ln_2(x)) (GPT-2)."""

    def __init__(self, config: GPTConfig, attention_class: type[nn.Module],
                 mlp_class: type[nn.Module], norm_class: type[nn.Module]):
        super().__init__()
        self.ln_1 = build_norm(norm_class, config)
        self.attn = attention_class(config)
        self.ln_2 = build_norm(norm_class, config)
        self.mlp = mlp_class(config)

    def forward(self, x: Tensor, pos_enc: PositionEncoding, pos: Tensor,
                cache: KVCache | None = None) -> Tensor:
        x = x + self.attn(self.ln_1(x), pos_enc, pos, cache)
        return x + self.mlp(self.ln_2(x))
