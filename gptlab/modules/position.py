"""Position encodings.

One interface, one channel: the model owns a single `PositionEncoding` and
- calls it on the token embeddings: `x = pos_enc(x, pos)` (learned and sinusoidal add here),
- hands it to every attention layer, which calls `pos_enc.rotate(t, pos)` on q and k
  (RoPE) and adds `pos_enc.score_bias(q_pos, k_pos)` to the attention scores (ALiBi).
`pos` are absolute token positions, so cached generation sees the same encoding as a
full forward pass. Every hook defaults to "no effect".

An encoding owns its length limit: `max_positions(config)` is the longest sequence it is
defined for (learned positions: block_size), or None for no limit. Before each forward pass
the model calls `extend(n)` with the sequence's end, a plain int (no device sync), and the
unbounded encodings with tables (sinusoidal, RoPE) grow them on demand; the rows below
block_size stay bitwise what they were.
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

    @classmethod
    def max_positions(cls, config: GPTConfig) -> int | None:
        """The longest sequence this encoding is defined for; None: any length. A subclass
        with a trained table of block_size rows returns block_size."""
        return None

    @classmethod
    def length_problem(cls, config: GPTConfig, n_positions: int) -> str | None:
        """Why a sequence of n_positions tokens cannot be encoded, or None when it can."""
        limit = cls.max_positions(config)
        if limit is None or n_positions <= limit:
            return None
        return f"{cls.__name__} is not defined past {limit} positions; use sequences of at most {limit} tokens"

    def extend(self, n_positions: int) -> None:
        """Make the encoding cover positions 0..n_positions-1; tables grow here."""

    def forward(self, x: Tensor, pos: Tensor) -> Tensor:
        """x: (B, T, C) token embeddings at positions pos: (T,)."""
        return x

    def rotate(self, x: Tensor, pos: Tensor) -> Tensor:
        """x: (B, H, T, D) queries or keys at positions pos: (T,)."""
        return x

    def score_bias(self, q_pos: Tensor, k_pos: Tensor) -> Tensor | None:
        """An additive (H, Tq, Tk) bias for the attention scores, or None."""
        return None

    def score_mod(self):
        """The same bias as FlexAttention's score_mod(score, b, h, q_idx, kv_idx) -> score,
        for the compiled GPU path that never materialises it; None when there is no bias."""
        return None


class LearnedPositionEncoding(PositionEncoding):
    """GPT-2's learned absolute position embedding (`wpe`), added to the token embeddings."""

    def __init__(self, config: GPTConfig, rotary_dim: int):
        super().__init__(config, rotary_dim)
        self.weight = nn.Parameter(torch.empty(config.block_size, config.n_embd))
        self.init_weights(0.02)  # GPT-2's

    def init_weights(self, std: float) -> None:
        """Draw the table, as the model's initialisation scheme asks (gptlab.models.init)."""
        nn.init.normal_(self.weight, mean=0.0, std=std)

    @classmethod
    def max_positions(cls, config: GPTConfig) -> int:
        return config.block_size

    @classmethod
    def length_problem(cls, config: GPTConfig, n_positions: int) -> str | None:
        if n_positions <= config.block_size:
            return None
        return (f"learned positions are not defined past block_size={config.block_size}: wpe holds a trained "
                f"vector for positions 0..{config.block_size - 1} only; use at most {config.block_size} tokens, or "
                f"a position encoding that extrapolates (SinusoidalPositionalEncoding, RoPE, ALiBi)")

    def forward(self, x: Tensor, pos: Tensor) -> Tensor:
        return x + self.weight[pos]


class NoPE(PositionEncoding):
    """No position encoding: the causal mask alone tells a token where it is (it sees
    itself and the tokens before it). Kazemnejad et al. 2023, "The Impact of Positional
    Encoding on Length Generalization in Transformers", find it competitive with the
    encodings and better at lengths beyond training. Every hook is the base class's
    "no effect"; no length limit."""


def sinusoid_table(n_pos: int, dim: int) -> Tensor:
    """PE(pos, 2i) = sin(pos / 10000^(2i/d)), PE(pos, 2i+1) = cos(...)
    ("Attention Is All You Need", Vaswani et al. 2017, §3.5)."""
    pos = torch.arange(n_pos, dtype=torch.float64)[:, None]
    inv_freq = 10000.0 ** (-torch.arange(0, dim, 2, dtype=torch.float64) / dim)
    table = torch.zeros(n_pos, dim, dtype=torch.float64)
    table[:, 0::2] = torch.sin(pos * inv_freq)
    table[:, 1::2] = torch.cos(pos * inv_freq[: dim // 2])
    return table.float()


def grown(table: Tensor, n_positions: int, make) -> Tensor | None:
    """The fixed table (rows = positions) made at least twice as long to cover n_positions,
    or None when it covers them already. Its rows are kept as they are; the new ones are
    computed as at construction by `make(n)` (the first n rows, on the CPU, in float64 then
    cast to float32)."""
    if n_positions <= table.size(0):
        return None
    new_rows = make(max(n_positions, 2 * table.size(0)))[table.size(0):]
    return torch.cat([table, new_rows.to(device=table.device, dtype=table.dtype)])


class SinusoidalPositionalEncoding(PositionEncoding):
    """Fixed sinusoidal encoding added to the token embeddings ("Attention Is All You Need",
    Vaswani et al. 2017, §3.5), with the token embeddings multiplied by sqrt(n_embd) first as
    the paper does (§3.4). Without that scale the table (entries of size ~1) is ~35x GPT-2's
    initial embeddings (std 0.02) and drowns the tokens; with it, tokens and positions enter
    at comparable size (rms 0.55 and 0.71 at n_embd=768), in a residual stream ~30x larger
    than the baseline's. The tied lm_head is not scaled. The table grows on demand: no
    length limit."""

    def __init__(self, config: GPTConfig, rotary_dim: int):
        super().__init__(config, rotary_dim)
        self.scale = math.sqrt(config.n_embd)
        self.register_buffer("table", sinusoid_table(config.block_size, config.n_embd), persistent=False)

    def extend(self, n_positions: int) -> None:
        table = grown(self.table, n_positions, lambda n: sinusoid_table(n, self.table.size(1)))
        if table is not None:
            self.table = table

    def forward(self, x: Tensor, pos: Tensor) -> Tensor:
        return x * self.scale + self.table[pos].to(x.dtype)


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
        self.theta, self.rotary_dim = config.rope_theta, rotary_dim
        cos, sin = self.tables(config.block_size)
        self.register_buffer("cos", cos, persistent=False)
        self.register_buffer("sin", sin, persistent=False)

    def angles(self, n_positions: int) -> Tensor:
        """pos * theta^(-2i/d) for pos < n_positions, in float64: (n_positions, d/2)."""
        inv_freq = self.theta ** (-torch.arange(0, self.rotary_dim, 2, dtype=torch.float64) / self.rotary_dim)
        return torch.outer(torch.arange(n_positions, dtype=torch.float64), inv_freq)

    def tables(self, n_positions: int) -> tuple[Tensor, Tensor]:
        """(n_positions, d) float32: cos of each pair's angle on both of its dimensions, and its sin, negated on
        the pair's first: the rotation of `rotate` as two elementwise products."""
        angles = self.angles(n_positions)
        cos, sin = angles.cos().float(), angles.sin().float()
        return cos.repeat_interleave(2, dim=-1), torch.stack((-sin, sin), dim=-1).flatten(-2)

    def extend(self, n_positions: int) -> None:
        cos = grown(self.cos, n_positions, lambda n: self.tables(n)[0])
        if cos is not None:
            self.cos, self.sin = cos, grown(self.sin, n_positions, lambda n: self.tables(n)[1])

    def rotate(self, x: Tensor, pos: Tensor) -> Tensor:
        """Each pair (x_2i, x_2i+1) to (x_2i cos - x_2i+1 sin, x_2i+1 cos + x_2i sin): x * cos + x' * sin with
        x' the pairs swapped (x_2i+1, x_2i) and the sin table negated on each pair's first (bitwise the pair-by-
        pair products and sums, in three elementwise passes instead of a split, four products and a stack)."""
        x32 = x.float()  # rotate in float32, as under bf16
        swapped = x32.unflatten(-1, (-1, 2)).flip(-1).flatten(-2)
        return (x32 * self.cos[pos] + swapped * self.sin[pos]).type_as(x)


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
    on key j; no position information enters the embeddings (Press et al. 2022). The bias is
    computed from the positions: no table, no length limit."""

    def __init__(self, config: GPTConfig, rotary_dim: int):
        super().__init__(config, rotary_dim)
        self.register_buffer("slopes", alibi_slopes(config.n_head), persistent=False)

    def score_bias(self, q_pos: Tensor, k_pos: Tensor) -> Tensor:
        distance = (q_pos[:, None] - k_pos[None, :]).to(self.slopes.dtype)
        return -self.slopes[:, None, None] * distance

    def score_mod(self):
        slopes = self.slopes

        def alibi(score: Tensor, b: Tensor, h: Tensor, q_idx: Tensor, kv_idx: Tensor) -> Tensor:
            return score - slopes[h] * (q_idx - kv_idx)
        return alibi
