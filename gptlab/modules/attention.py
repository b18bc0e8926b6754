"""Causal self-attention variants: MHA, MQA, GQA, QK-norm and DeepSeek-V2's MLA.

Every class takes `(config)` and is called as `attn(x, pos_enc, pos, cache=None)`:
x is (B, T, C); `pos_enc` is the model's `PositionEncoding` (rotary tables and score
biases come only through it); `pos` holds the absolute positions of x's tokens; `cache`
is the layer's `KVCache` during generation. The residual output projection is named
`c_proj` so the model can give it GPT-2's scaled initialisation. A class checks the
config it is given in `check_config` when the model is built.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.attention.flex_attention import create_block_mask, flex_attention

from gptlab.core.config import GPTConfig, divisors
from gptlab.modules.norm import RMSNorm
from gptlab.modules.position import PositionEncoding


class KVCache:
    """What one attention layer keeps of past tokens, for generation.

    Holds any tensors with time on dim -2 (K/V for MHA/GQA, the latent for MLA), allocated
    for `capacity` positions on the first `append` and doubled whenever they are full, so a
    sequence may run past block_size when the position encoding allows it.
    """

    def __init__(self, capacity: int):
        self.capacity = capacity
        self.length = 0
        self.buffers: list[Tensor] = []

    def append(self, *new: Tensor) -> tuple[Tensor, ...]:
        """Store the new entries after the cached ones; return all entries so far."""
        t = new[0].size(-2)
        if self.length + t > self.capacity:  # full: double, keeping what is cached
            self.capacity = max(self.length + t, 2 * self.capacity)
            free = self.capacity - self.length
            self.buffers = [torch.cat([b[..., :self.length, :], b.new_zeros(*b.shape[:-2], free, b.size(-1))], dim=-2)
                            for b in self.buffers]
        if not self.buffers:
            self.buffers = [x.new_zeros(*x.shape[:-2], self.capacity, x.size(-1)) for x in new]
        for buffer, x in zip(self.buffers, new):
            buffer[..., self.length:self.length + t, :] = x
        self.length += t
        return tuple(buffer[..., :self.length, :] for buffer in self.buffers)

    def bytes_per_token(self) -> int:
        """Cache bytes one token costs this layer, per sequence."""
        return sum(b[0].numel() // self.capacity * b.element_size() for b in self.buffers)


def causal_attention(q: Tensor, k: Tensor, v: Tensor, pos_enc: PositionEncoding, q_pos: Tensor,
                     dropout_p: float = 0.0, scale: float | None = None) -> Tensor:
    """Scaled dot-product attention of q (B, H, Tq, D) over keys at positions 0..Tk-1,
    each query seeing only keys at or before its own position, plus the position
    encoding's score bias; k and v may have fewer heads than q (GQA). scale: of the scores,
    default 1/sqrt(D). Uses SDPA's fused causal path whenever it is exact; a full sequence
    with a bias goes through FlexAttention when compiled on a GPU (the bias is never
    materialised), and through SDPA with an explicit (H, Tq, Tk) bias otherwise."""
    t_q, t_k = q.size(-2), k.size(-2)
    gqa = k.size(-3) != q.size(-3)
    score_mod = pos_enc.score_mod()
    if score_mod is not None and t_q == t_k and dropout_p == 0.0 and use_flex(q):
        return flex_causal_attention(q, k, v, score_mod, scale, gqa)
    k_pos = torch.arange(t_k, device=q.device)
    bias = pos_enc.score_bias(q_pos, k_pos)
    if bias is None and t_q == t_k:  # a full sequence from position 0
        return F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p, is_causal=True, scale=scale,
                                              enable_gqa=gqa)
    if bias is None and t_q == 1:  # one new token sees every cached key
        return F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p, scale=scale, enable_gqa=gqa)
    future = k_pos[None, :] > q_pos[:, None]
    if bias is None:
        mask = ~future
    else:
        mask = bias.to(q.dtype).masked_fill(future, float("-inf"))
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout_p, scale=scale, enable_gqa=gqa)


def use_flex(q: Tensor) -> bool:
    """FlexAttention only where it is fast and can run backward: compiled, on a GPU."""
    return q.is_cuda and torch.compiler.is_compiling()


def _causal(b: Tensor, h: Tensor, q_idx: Tensor, kv_idx: Tensor) -> Tensor:
    return q_idx >= kv_idx


def flex_causal_attention(q: Tensor, k: Tensor, v: Tensor, score_mod, scale: float | None = None,
                          gqa: bool = False) -> Tensor:
    """Causal attention of a full sequence with `score_mod` added to the scores, by
    FlexAttention; the causal block mask lets it skip the blocks above the diagonal."""
    block_mask = create_block_mask(_causal, None, None, q.size(-2), k.size(-2), device=q.device)
    return flex_attention(q, k, v, score_mod=score_mod, block_mask=block_mask, scale=scale, enable_gqa=gqa)


class Attention(nn.Module):
    """Base of every attention class: the interface above, and what the model asks of it."""

    config_fields: tuple[str, ...] = ()  # the GPTConfig.COMPONENT_FIELDS this class reads

    @staticmethod
    def rotary_dim(config: GPTConfig) -> int:
        """Width of the q/k slices that RoPE rotates."""
        return config.head_dim

    @classmethod
    def check_config(cls, config: GPTConfig) -> list[str]:
        """Every reason this class cannot be built from config, one sentence each."""
        return []

    @classmethod
    def rung_fields(cls, own: GPTConfig, rung: GPTConfig) -> dict:
        """The fields this class reads, for another size of the model: `own` is the experiment's config at its
        own size, `rung` its shape on a ladder (n_layer, n_embd, n_head; heads of 64). ValueError, in words,
        where the class has no such size. Nothing here: its sizes follow n_embd and n_head by rule."""
        return {}

    def score_flops(self, seq_len: int) -> int:
        """Forward FLOPs per token of the scores (q.k) and the weighted sum of values, over
        seq_len keys; the projections are counted as the nn.Linear layers they are. By default
        every query head has q, k and v of `self.head_dim`; a class with other widths (MLA)
        says so here. A class without `n_head` and `head_dim` attributes counts 0."""
        return 2 * seq_len * getattr(self, "n_head", 0) * 2 * getattr(self, "head_dim", 0)

    def forward(self, x: Tensor, pos_enc: PositionEncoding, pos: Tensor,
                cache: KVCache | None = None) -> Tensor:
        raise NotImplementedError


class BaseAttention(Attention):
    """GPT-2 multi-head attention: every query head has its own key/value head. Subclasses
    share K/V heads between query heads by choosing fewer of them (`kv_heads`)."""

    config_fields = ("n_kv_head",)

    def __init__(self, config: GPTConfig):
        super().__init__()
        self.n_head, self.head_dim = config.n_head, config.head_dim
        self.n_kv_head = self.kv_heads(config)
        self.c_attn = nn.Linear(config.n_embd, (self.n_head + 2 * self.n_kv_head) * self.head_dim, bias=config.bias)
        self.c_proj = nn.Linear(self.n_head * self.head_dim, config.n_embd, bias=config.bias)
        self.dropout = config.dropout
        self.resid_dropout = nn.Dropout(config.dropout)
        self.scale = config.attention_scale(self.head_dim)  # muP's 1/d where the head grows; None: SDPA's

    @staticmethod
    def kv_heads(config: GPTConfig) -> int:
        return config.n_head

    @classmethod
    def check_config(cls, config: GPTConfig) -> list[str]:
        kv_heads = cls.kv_heads(config)
        if config.n_kv_head and config.n_kv_head != kv_heads:
            return [f"n_kv_head={config.n_kv_head} would be ignored: {cls.__name__} uses {kv_heads} K/V "
                    f"head(s) with n_head={config.n_head}; use GQAAttention for n_kv_head groups, or leave "
                    f"n_kv_head at 0"]
        return []

    def forward(self, x: Tensor, pos_enc: PositionEncoding, pos: Tensor,
                cache: KVCache | None = None) -> Tensor:
        B, T, _ = x.shape
        q_size, kv_size = self.n_head * self.head_dim, self.n_kv_head * self.head_dim
        q, k, v = self.c_attn(x).split([q_size, kv_size, kv_size], dim=2)
        q = q.view(B, T, self.n_head, self.head_dim).transpose(1, 2)  # (B, H, T, D)
        k = k.view(B, T, self.n_kv_head, self.head_dim).transpose(1, 2)
        v = v.view(B, T, self.n_kv_head, self.head_dim).transpose(1, 2)
        q, k = self.normalize_qk(q, k)
        q, k = pos_enc.rotate(q, pos), pos_enc.rotate(k, pos)
        if cache is not None:
            k, v = cache.append(k, v)
        y = causal_attention(q, k, v, pos_enc, pos, self.dropout if self.training else 0.0, self.scale)
        y = y.transpose(1, 2).contiguous().view(B, T, q_size)
        return self.resid_dropout(self.c_proj(y))


    def normalize_qk(self, q: Tensor, k: Tensor) -> tuple[Tensor, Tensor]:
        """Queries and keys (B, H, T, D) before the position encoding rotates them; unchanged here."""
        return q, k


class QKNormAttention(BaseAttention):
    """QK-norm: each head's query and key RMS-normalised, with a learned gain of the head size
    shared by the heads, before RoPE and the dot product (per head as in Gemma 3 and Qwen3;
    OLMo 2 normalises all heads' width at once). It bounds the attention logits, which keeps
    them from growing without limit at high learning rates (Dehghani et al. 2023, ViT-22B).
    The scale stays 1/sqrt(head size). Combine with GQA as `class X(QKNormAttention, GQAAttention)`."""

    norm_eps = 1e-6  # as OLMo 2, Gemma 3 and Qwen3

    def __init__(self, config: GPTConfig):
        super().__init__(config)
        self.q_norm = RMSNorm(self.head_dim, eps=self.norm_eps)
        self.k_norm = RMSNorm(self.head_dim, eps=self.norm_eps)

    def normalize_qk(self, q: Tensor, k: Tensor) -> tuple[Tensor, Tensor]:
        return self.q_norm(q), self.k_norm(k)


class GQAAttention(BaseAttention):
    """Grouped-query attention (Ainslie et al. 2023) with `config.n_kv_head` K/V heads."""

    @staticmethod
    def kv_heads(config: GPTConfig) -> int:
        return config.n_kv_head

    @classmethod
    def rung_fields(cls, own: GPTConfig, rung: GPTConfig) -> dict:
        """The group keeps its size (query heads per K/V head): n_kv_head = n_head / group."""
        if not own.n_kv_head or own.n_head % own.n_kv_head:
            return {}  # its own config is refused by check_config, which says why
        group = own.n_head // own.n_kv_head
        if rung.n_head % group:
            fits = ", ".join(f"d{n}" for n in range(group, 4 * group + 1, group))
            raise ValueError(f"GQA with {group} query heads per K/V head (n_kv_head={own.n_kv_head} of {own.n_head}) "
                             f"needs n_head divisible by {group}, and this rung has {rung.n_head}: rungs such as "
                             f"{fits} fit, or set model.n_kv_head for another group")
        return {"n_kv_head": rung.n_head // group}

    @classmethod
    def check_config(cls, config: GPTConfig) -> list[str]:
        if config.n_kv_head < 1 or config.n_head % config.n_kv_head:
            return [f"GQAAttention needs n_kv_head to divide n_head={config.n_head}, got n_kv_head="
                    f"{config.n_kv_head}; choose one of {divisors(config.n_head)}"]
        return []


class MQAAttention(BaseAttention):
    """Multi-query attention (Shazeer 2019): one K/V head shared by all query heads."""

    @staticmethod
    def kv_heads(config: GPTConfig) -> int:
        return 1


class MLAAttention(Attention):
    """Multi-head latent attention (DeepSeek-V2, arXiv:2405.04434 §2.1).

    Keys and values are up-projected from one joint latent c_kv of width kv_lora_rank
    (eq. 9-11); position enters through a decoupled key k_rope of width qk_rope_head_dim,
    shared by all heads and rotated by the position encoding (eq. 14-19). The cache holds
    c_kv and k_rope: (kv_lora_rank + qk_rope_head_dim) values per token per layer.
    """

    config_fields = ("kv_lora_rank", "q_lora_rank", "qk_rope_head_dim", "qk_nope_head_dim", "v_head_dim")
    norm_eps = 1e-6  # of the latent RMSNorms, as DeepSeek-V2 (PyTorch's default would be float32's epsilon)

    def __init__(self, config: GPTConfig):
        super().__init__()
        self.n_head, self.q_lora_rank = config.n_head, config.q_lora_rank
        self.kv_lora_rank, self.qk_nope_head_dim, self.qk_rope_head_dim, self.v_head_dim = config.mla_dims()
        qk_head_dim = self.qk_nope_head_dim + self.qk_rope_head_dim
        if self.q_lora_rank:  # queries from their own latent (eq. 12-13)
            self.wq_a = nn.Linear(config.n_embd, config.q_lora_rank, bias=False)
            self.q_norm = RMSNorm(config.q_lora_rank, eps=self.norm_eps)
            self.wq_b = nn.Linear(config.q_lora_rank, self.n_head * qk_head_dim, bias=False)
        else:
            self.wq = nn.Linear(config.n_embd, self.n_head * qk_head_dim, bias=False)
        self.wkv_a = nn.Linear(config.n_embd, self.kv_lora_rank + self.qk_rope_head_dim, bias=False)
        self.kv_norm = RMSNorm(self.kv_lora_rank, eps=self.norm_eps)
        self.wkv_b = nn.Linear(self.kv_lora_rank, self.n_head * (self.qk_nope_head_dim + self.v_head_dim), bias=False)
        self.c_proj = nn.Linear(self.n_head * self.v_head_dim, config.n_embd, bias=config.bias)
        self.dropout = config.dropout
        self.resid_dropout = nn.Dropout(config.dropout)
        self.scale = config.attention_scale(qk_head_dim)  # muP's 1/d where the head grows; None: 1/sqrt(d)

    @staticmethod
    def rotary_dim(config: GPTConfig) -> int:
        return config.mla_dims()[2]

    @classmethod
    def rung_fields(cls, own: GPTConfig, rung: GPTConfig) -> dict:
        """The latents are widths: a rank the experiment sets scales with n_embd (one left at 0 follows the
        paper's rule from the head size, which heads of 64 keep); the per-head sizes stay."""
        return {f: max(1, round(getattr(own, f) * rung.n_embd / own.n_embd))
                for f in ("kv_lora_rank", "q_lora_rank") if getattr(own, f)}

    def score_flops(self, seq_len: int) -> int:
        return 2 * seq_len * self.n_head * (self.qk_nope_head_dim + self.qk_rope_head_dim + self.v_head_dim)

    @classmethod
    def check_config(cls, config: GPTConfig) -> list[str]:
        names = ("kv_lora_rank", "qk_nope_head_dim", "qk_rope_head_dim", "v_head_dim")
        return [f"MLA's {name} comes to 0 (head size {config.head_dim}); set model.{name} to a positive size"
                for name, size in zip(names, config.mla_dims()) if size < 1]

    def forward(self, x: Tensor, pos_enc: PositionEncoding, pos: Tensor,
                cache: KVCache | None = None) -> Tensor:
        B, T, _ = x.shape
        q = self.wq_b(self.q_norm(self.wq_a(x))) if self.q_lora_rank else self.wq(x)
        q = q.view(B, T, self.n_head, -1).transpose(1, 2)
        q_nope, q_rope = q.split([self.qk_nope_head_dim, self.qk_rope_head_dim], dim=-1)
        q_rope = pos_enc.rotate(q_rope, pos)

        c_kv, k_rope = self.wkv_a(x).split([self.kv_lora_rank, self.qk_rope_head_dim], dim=-1)
        c_kv = self.kv_norm(c_kv)  # (B, T, d_c)
        k_rope = pos_enc.rotate(k_rope.unsqueeze(1), pos)  # (B, 1, T, d_h^R), one for all heads
        dropout = self.dropout if self.training else 0.0
        if cache is not None:
            c_kv, k_rope = cache.append(c_kv, k_rope)
            y = self.latent_attention(q_nope, q_rope, c_kv, k_rope, pos_enc, pos, dropout)
        else:
            t_k = c_kv.size(1)
            kv = self.wkv_b(c_kv).view(B, t_k, self.n_head, -1).transpose(1, 2)
            k_nope, v = kv.split([self.qk_nope_head_dim, self.v_head_dim], dim=-1)
            q, k = torch.cat([q_nope, q_rope], dim=-1), torch.cat([k_nope, k_rope.expand(B, self.n_head, t_k, -1)], dim=-1)
            # SDPA's flash kernels want values as wide as queries and keys; narrower ones send it down its
            # unfused path (a T x T score matrix in memory; on the CPU as fast at T=256): pad them with zeros,
            # which the weighted sum leaves zero, and drop that part after
            pad = q.size(-1) - self.v_head_dim
            y = causal_attention(q, k, F.pad(v, (0, pad)) if pad > 0 else v, pos_enc, pos, dropout, self.scale)
            y = y[..., :self.v_head_dim] if pad > 0 else y
        y = y.transpose(1, 2).contiguous().view(B, T, self.n_head * self.v_head_dim)
        return self.resid_dropout(self.c_proj(y))

    def latent_attention(self, q_nope: Tensor, q_rope: Tensor, c_kv: Tensor, k_rope: Tensor,
                         pos_enc: PositionEncoding, pos: Tensor, dropout: float) -> Tensor:
        """Attention over the cached latent itself (DeepSeek-V2 §2.1.2, the absorbed
        projections): head h's key is W_UK_h c and its value W_UV_h c, so q_h.k = (W_UK_h^T q_h).c
        and the weighted sum of values is W_UV_h (sum of weights * c). The queries are taken
        into the latent space, attend over c_kv (one shared "head", plus the shared rotary
        key), and the result is taken out by W_UV: the cache is never up-projected.
        Returns (B, H, T, v_head_dim), what the up-projected path returns."""
        w_kv = self.wkv_b.weight.view(self.n_head, self.qk_nope_head_dim + self.v_head_dim, self.kv_lora_rank)
        w_uk, w_uv = w_kv.split([self.qk_nope_head_dim, self.v_head_dim], dim=1)  # (H, d, d_c)
        q_latent = torch.einsum("bhtd,hdc->bhtc", q_nope, w_uk)
        latent = c_kv.unsqueeze(1)  # (B, 1, T_k, d_c)
        y_latent = causal_attention(torch.cat([q_latent, q_rope], dim=-1), torch.cat([latent, k_rope], dim=-1),
                                    latent, pos_enc, pos, dropout,
                                    scale=self.scale or (self.qk_nope_head_dim + self.qk_rope_head_dim) ** -0.5)
        return torch.einsum("bhtc,hvc->bhtv", y_latent, w_uv)
