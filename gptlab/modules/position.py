"""Position encodings.

One interface, one channel: the model owns a single `PositionEncoding` and
- calls it on the token embeddings: `x = pos_enc(x, pos)` (learned and sinusoidal add here),
- hands it to every attention layer, which calls `pos_enc.rotate(t, pos)` on q and k
  (RoPE) and adds `pos_enc.score_bias(q_pos, k_pos)` to the attention scores (ALiBi).
`pos` are absolute token positions, so cached generation sees the same encoding as a
full forward pass. Every hook defaults to "no effect".
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from gptlab.core.config import GPTConfig


class PositionEncoding(nn.Module):
    """Base class; subclasses override the hooks they need.

    Constructed as `cls(config, rotary_dim)`, where `rotary_dim` is the width of the q/k
    slices the attention asks to rotate (the head size, or MLA's qk_rope_head_dim).
    """

    config_fields: tuple[str, ...] = ()  # the GPTConfig.COMPONENT_FIELDS this class reads

    def __init__(self, config: GPTConfig, rotary_dim: int):
        super().__init__()

    @classmethod
    def check_config(cls, config: GPTConfig, rotary_dim: int) -> list[str]:
        """Every reason this encoding cannot be built from config, one sentence each."""
        return []

    def forward(self, x: Tensor, pos: Tensor) -> Tensor:
        """x: (B, T, C) token embeddings at positions pos: (T,)."""
        return x

    def rotate(self, x: Tensor, pos: Tensor) -> Tensor:
        """x: (B, H, T, D) queries or keys at positions pos: (T,)."""
        return x

    def score_bias(self, q_pos: Tensor, k_pos: Tensor) -> Tensor | None:
        """An additive (H, Tq, Tk) bias for the attention scores, or None."""
        return None


class LearnedPositionEncoding(PositionEncoding):
    """GPT-2's learned absolute position embedding (`wpe`), added to the token embeddings."""

    def __init__(self, config: GPTConfig, rotary_dim: int):
        super().__init__(config, rotary_dim)
        self.weight = nn.Parameter(torch.empty(config.block_size, config.n_embd))
        nn.init.normal_(self.weight, mean=0.0, std=0.02)

    def forward(self, x: Tensor, pos: Tensor) -> Tensor:
        return x + self.weight[pos]


def sinusoid_table(n_pos: int, dim: int) -> Tensor:
    """PE(pos, 2i) = sin(pos / 10000^(2i/d)), PE(pos, 2i+1) = cos(...)
    ("Attention Is All You Need", Vaswani et al. 2017, §3.5)."""
    pos = torch.arange(n_pos, dtype=torch.float64)[:, None]
    inv_freq = 10000.0 ** (-torch.arange(0, dim, 2, dtype=torch.float64) / dim)
    table = torch.zeros(n_pos, dim, dtype=torch.float64)
    table[:, 0::2] = torch.sin(pos * inv_freq)
    table[:, 1::2] = torch.cos(pos * inv_freq[: dim // 2])
    return table.float()


class SinusoidalPositionalEncoding(PositionEncoding):
    """Fixed sinusoidal encoding added to the token embeddings (Vaswani et al. 2017)."""

    def __init__(self, config: GPTConfig, rotary_dim: int):
        super().__init__(config, rotary_dim)
        self.register_buffer("table", sinusoid_table(config.block_size, config.n_embd), persistent=False)

    def forward(self, x: Tensor, pos: Tensor) -> Tensor:
        return x + self.table[pos].to(x.dtype)


class RoPE(PositionEncoding):
    """Rotary position embedding (RoFormer, Su et al. 2021, eq. 34): each pair
    (x_2i, x_2i+1) of q and k, read as a complex number, is multiplied by
    exp(i * pos * theta^(-2i/d)), so q.k depends only on the offset between positions."""

    config_fields = ("rope_theta",)

    @classmethod
    def check_config(cls, config: GPTConfig, rotary_dim: int) -> list[str]:
        problems = []
        if rotary_dim % 2:
            problems.append(f"RoPE rotates pairs of dimensions, but the attention asks it to rotate {rotary_dim} "
                            f"(the head size n_embd/n_head, or MLA's qk_rope_head_dim); choose an even width")
        if config.rope_theta <= 0:
            problems.append(f"rope_theta={config.rope_theta} must be positive")
        return problems

    def __init__(self, config: GPTConfig, rotary_dim: int):
        super().__init__(config, rotary_dim)
        inv_freq = config.rope_theta ** (-torch.arange(0, rotary_dim, 2, dtype=torch.float64) / rotary_dim)
        angles = torch.outer(torch.arange(config.block_size, dtype=torch.float64), inv_freq)
        self.register_buffer("cos", angles.cos().float(), persistent=False)
        self.register_buffer("sin", angles.sin().float(), persistent=False)

    def rotate(self, x: Tensor, pos: Tensor) -> Tensor:
        cos, sin = self.cos[pos], self.sin[pos]  # (T, D/2)
        x_even, x_odd = x.float().unflatten(-1, (-1, 2)).unbind(-1)  # rotate in float32, as under bf16
        rotated = torch.stack((x_even * cos - x_odd * sin, x_even * sin + x_odd * cos), dim=-1)
        return rotated.flatten(-2).type_as(x)


def alibi_slopes(n_head: int) -> Tensor:
    """Head slopes of ALiBi (Press et al. 2022, §3): the geometric sequence starting at
    2^(-8/n) with that ratio; for n not a power of two, the 2^floor(log2 n) slopes
    followed by every other slope of the sequence for twice that many heads."""
    def geometric(n: int) -> list[float]:
        start = 2.0 ** (-8.0 / n)
        return [start ** (i + 1) for i in range(n)]

    closest = 2 ** math.floor(math.log2(n_head))
    slopes = geometric(closest) + geometric(2 * closest)[0::2][: n_head - closest]
    return torch.tensor(slopes)


class ALiBi(PositionEncoding):
    """Attention with Linear Biases: head h adds -slope_h * (i - j) to the score of query i
    on key j; no position information enters the embeddings (Press et al. 2022)."""

    def __init__(self, config: GPTConfig, rotary_dim: int):
        super().__init__(config, rotary_dim)
        self.register_buffer("slopes", alibi_slopes(config.n_head), persistent=False)

    def score_bias(self, q_pos: Tensor, k_pos: Tensor) -> Tensor:
        distance = (q_pos[:, None] - k_pos[None, :]).to(self.slopes.dtype)
        return -self.slopes[:, None, None] * distance
