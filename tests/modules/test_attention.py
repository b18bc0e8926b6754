import math

import pytest
import torch

from gptlab import GPTConfig
from gptlab.modules.attention import BaseAttention, GQAAttention, KVCache, MLAAttention, MQAAttention
from gptlab.modules.position import ALiBi, PositionEncoding, RoPE

CONFIG = GPTConfig(block_size=16, n_embd=32, n_head=4)


def naive_attention(x, attn, n_kv_head, bias=None):
    """Loop over heads with an explicit softmax; each query head h uses K/V head h // group."""
    B, T, C = x.shape
    H, D = CONFIG.n_head, CONFIG.head_dim
    q, k, v = attn.c_attn(x).split([H * D, n_kv_head * D, n_kv_head * D], dim=2)
    heads = []
    for h in range(H):
        g = h // (H // n_kv_head)
        qh, kh, vh = q[..., h * D:(h + 1) * D], k[..., g * D:(g + 1) * D], v[..., g * D:(g + 1) * D]
        scores = qh @ kh.transpose(1, 2) / math.sqrt(D)
        if bias is not None:
            scores = scores + bias[h]
        scores = scores.masked_fill(torch.triu(torch.ones(T, T, dtype=torch.bool), 1), float("-inf"))
        heads.append(torch.softmax(scores, dim=-1) @ vh)
    return attn.c_proj(torch.cat(heads, dim=-1))


def test_mha_matches_naive_per_head_attention():
    torch.manual_seed(0)
    attn, x = BaseAttention(CONFIG), torch.randn(2, 10, 32)
    out = attn(x, PositionEncoding(CONFIG, 8), torch.arange(10))
    torch.testing.assert_close(out, naive_attention(x, attn, n_kv_head=4), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("n_kv_head", [1, 2])
def test_gqa_matches_naive_grouped_attention(n_kv_head):
    torch.manual_seed(0)
    attn, x = GQAAttention(GPTConfig(**{**vars(CONFIG), "n_kv_head": n_kv_head})), torch.randn(2, 10, 32)
    out = attn(x, PositionEncoding(CONFIG, 8), torch.arange(10))
    torch.testing.assert_close(out, naive_attention(x, attn, n_kv_head), atol=1e-5, rtol=1e-5)


def test_gqa_with_n_kv_head_equal_n_head_reproduces_mha():
    torch.manual_seed(0)
    mha = BaseAttention(CONFIG)
    gqa = GQAAttention(GPTConfig(**{**vars(CONFIG), "n_kv_head": 4}))
    gqa.load_state_dict(mha.state_dict())
    x, pe = torch.randn(2, 10, 32), RoPE(CONFIG, 8)
    torch.testing.assert_close(gqa(x, pe, torch.arange(10)), mha(x, pe, torch.arange(10)))


def test_mqa_equals_gqa_with_one_kv_head():
    torch.manual_seed(0)
    mqa = MQAAttention(CONFIG)
    gqa = GQAAttention(GPTConfig(**{**vars(CONFIG), "n_kv_head": 1}))
    gqa.load_state_dict(mqa.state_dict())
    assert mqa.c_attn.out_features == (4 + 2) * 8
    x, pe = torch.randn(2, 10, 32), RoPE(CONFIG, 8)
    torch.testing.assert_close(mqa(x, pe, torch.arange(10)), gqa(x, pe, torch.arange(10)))


def test_alibi_attention_adds_the_bias_to_the_scores():
    torch.manual_seed(0)
    attn, x, alibi = BaseAttention(CONFIG), torch.randn(2, 10, 32), ALiBi(CONFIG, 8)
    slopes = [2.0 ** -2, 2.0 ** -4, 2.0 ** -6, 2.0 ** -8]
    dist = torch.arange(10)[:, None] - torch.arange(10)[None, :]
    bias = torch.stack([-s * dist for s in slopes]).float()
    out = attn(x, alibi, torch.arange(10))
    torch.testing.assert_close(out, naive_attention(x, attn, 4, bias), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("q_lora_rank", [0, 12])
def test_mla_cached_latent_path_equals_uncached(q_lora_rank):
    torch.manual_seed(0)
    config = GPTConfig(block_size=16, n_embd=32, n_head=4, q_lora_rank=q_lora_rank)
    attn = MLAAttention(config)
    rope = RoPE(config, MLAAttention.rotary_dim(config))
    x = torch.randn(2, 12, 32)
    full = attn(x, rope, torch.arange(12))
    cache = KVCache(16)
    parts = [attn(x[:, :5], rope, torch.arange(5), cache)]  # a prompt, then one token at a time
    for t in range(5, 12):
        parts.append(attn(x[:, t:t + 1], rope, torch.arange(t, t + 1), cache))
    torch.testing.assert_close(torch.cat(parts, dim=1), full, atol=1e-5, rtol=1e-5)


def test_mla_decoding_never_up_projects_the_cache():
    """DeepSeek-V2's absorbed projections: with a cache, wkv_b's weight is used as a matrix
    on the queries and outputs, and the module itself (the up-projection of the latent) is
    never called."""
    torch.manual_seed(0)
    config = GPTConfig(block_size=16, n_embd=32, n_head=4)
    attn, rope = MLAAttention(config), RoPE(config, MLAAttention.rotary_dim(config))
    calls = []
    attn.wkv_b.register_forward_hook(lambda module, args, out: calls.append(args[0].shape))
    cache, x = KVCache(16), torch.randn(1, 6, 32)
    attn(x[:, :5], rope, torch.arange(5), cache)
    attn(x[:, 5:], rope, torch.arange(5, 6), cache)
    assert calls == []
    attn(x, rope, torch.arange(6))  # training: the up-projected path, one call
    assert calls == [torch.Size([1, 6, config.mla_dims()[0]])]


@pytest.mark.filterwarnings("ignore:flex_attention called without torch.compile")
def test_alibi_by_flex_attention_equals_the_explicit_bias():
    """The compiled GPU path (FlexAttention with ALiBi as a score_mod and a causal block
    mask) against SDPA with the materialised bias; run eagerly here, without gradients, as
    FlexAttention allows on a CPU."""
    from gptlab.modules.attention import causal_attention, flex_causal_attention
    torch.manual_seed(0)
    config = GPTConfig(block_size=300, n_embd=48, n_head=6)
    alibi = ALiBi(config, 8)
    for n_kv_head in (6, 2):
        q, k, v = torch.randn(2, 6, 300, 8), torch.randn(2, n_kv_head, 300, 8), torch.randn(2, n_kv_head, 300, 8)
        with torch.no_grad():
            flex = flex_causal_attention(q, k, v, alibi.score_mod(), gqa=n_kv_head != 6)
        torch.testing.assert_close(flex, causal_attention(q, k, v, alibi, torch.arange(300)), atol=1e-5, rtol=1e-5)


def test_mla_cache_holds_latent_and_rope_key_only():
    config = GPTConfig(block_size=16, n_embd=32, n_head=4, kv_lora_rank=24, qk_rope_head_dim=6)
    attn, cache = MLAAttention(config), KVCache(16)
    for dtype in (torch.float32, torch.bfloat16):
        cache = KVCache(16)
        attn.to(dtype)(torch.randn(1, 3, 32, dtype=dtype), RoPE(config, 6).to(dtype), torch.arange(3), cache)
        assert cache.bytes_per_token() == (24 + 6) * dtype.itemsize
        assert [tuple(b.shape) for b in cache.buffers] == [(1, 16, 24), (1, 1, 16, 6)]


def test_mha_cached_equals_uncached_with_a_multi_token_continuation():
    torch.manual_seed(0)
    attn, x = BaseAttention(CONFIG), torch.randn(2, 12, 32)
    for pe in (RoPE(CONFIG, 8), ALiBi(CONFIG, 8)):
        cache = KVCache(16)
        parts = [attn(x[:, :4], pe, torch.arange(4), cache), attn(x[:, 4:9], pe, torch.arange(4, 9), cache),
                 attn(x[:, 9:], pe, torch.arange(9, 12), cache)]
        torch.testing.assert_close(torch.cat(parts, dim=1), attn(x, pe, torch.arange(12)), atol=1e-5, rtol=1e-5)


def test_kv_cache_grows_when_full_and_keeps_every_entry():
    cache = KVCache(4)
    entries = [torch.randn(2, 3, t, 5) for t in (3, 1, 1, 6, 1)]  # past 4, then past 8 in one append
    for i, new in enumerate(entries):
        (held,) = cache.append(new)
        torch.testing.assert_close(held, torch.cat(entries[:i + 1], dim=2), rtol=0, atol=0)
    assert cache.length == 12 and cache.capacity == 16 and cache.buffers[0].shape == (2, 3, 16, 5)
    assert cache.bytes_per_token() == 3 * 5 * 4


def test_cached_attention_past_the_cache_capacity_equals_uncached():
    torch.manual_seed(0)
    attn, x = BaseAttention(CONFIG), torch.randn(2, 40, 32)  # CONFIG.block_size is 16
    for pe in (RoPE(CONFIG, 8), ALiBi(CONFIG, 8), PositionEncoding(CONFIG, 8)):
        pe.extend(40)
        cache = KVCache(CONFIG.block_size)
        parts = [attn(x[:, :10], pe, torch.arange(10), cache)]
        parts += [attn(x[:, t:t + 1], pe, torch.arange(t, t + 1), cache) for t in range(10, 40)]
        torch.testing.assert_close(torch.cat(parts, dim=1), attn(x, pe, torch.arange(40)), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("q_lora_rank", [0, 8])
def test_mla_latent_norms_use_deepseek_v2_eps(q_lora_rank):
    """DeepSeek-V2 normalises its latents with eps 1e-6; on a latent of rms 1e-3 the eps decides the result."""
    config = GPTConfig(block_size=16, n_embd=32, n_head=4, q_lora_rank=q_lora_rank)
    attn = MLAAttention(config)
    norms = [attn.kv_norm] + ([attn.q_norm] if q_lora_rank else [])
    for norm in norms:
        c = 1e-3 * torch.randn(2, 5, norm.weight.numel())
        expected = c / torch.sqrt((c ** 2).mean(-1, keepdim=True) + 1e-6) * norm.weight
        torch.testing.assert_close(norm(c), expected)
