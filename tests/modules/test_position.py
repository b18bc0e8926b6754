import math

import pytest
import torch

from gptlab import GPTConfig, build_model, load_experiment
from gptlab.modules.position import (ALiBi, LearnedPositionEncoding, PositionEncoding, RoPE,
                                     SinusoidalPositionalEncoding, alibi_slopes)


def test_sinusoidal_equals_attention_is_all_you_need_formula():
    config = GPTConfig(block_size=20, n_embd=16, n_head=2)
    enc = SinusoidalPositionalEncoding(config, rotary_dim=8)
    x = torch.zeros(1, 20, 16)
    out = enc(x, torch.arange(20))[0]
    for pos in range(20):
        for i in range(8):
            assert math.isclose(out[pos, 2 * i].item(), math.sin(pos / 10000 ** (2 * i / 16)), abs_tol=1e-6)
            assert math.isclose(out[pos, 2 * i + 1].item(), math.cos(pos / 10000 ** (2 * i / 16)), abs_tol=1e-6)


@pytest.mark.parametrize("block_size, first, n", [(16, 0, 16), (8, 30, 20)])  # within block_size, and past it
def test_rope_equals_complex_multiplication_with_theta_10000(block_size, first, n):
    rope = RoPE(GPTConfig(block_size=block_size, n_embd=32, n_head=2), rotary_dim=16)
    pos = torch.arange(first, first + n)
    rope.extend(first + n)
    x = torch.randn(2, 3, n, 16)
    theta = 10000.0 ** (-torch.arange(0, 16, 2, dtype=torch.float64) / 16)
    rotation = torch.polar(torch.ones(n, 8, dtype=torch.float64), pos[:, None].double() * theta)
    expected = torch.view_as_real(torch.view_as_complex(x.double().reshape(2, 3, n, 8, 2)) * rotation)
    torch.testing.assert_close(rope.rotate(x, pos), expected.reshape(2, 3, n, 16).float(), atol=1e-5, rtol=1e-5)


def test_rope_scores_depend_only_on_offset():
    config = GPTConfig(block_size=64, n_embd=32, n_head=2)
    rope = RoPE(config, rotary_dim=16)
    q, k = torch.randn(16), torch.randn(16)

    def score(i, j):
        qi = rope.rotate(q.view(1, 1, 1, 16), torch.tensor([i]))
        kj = rope.rotate(k.view(1, 1, 1, 16), torch.tensor([j]))
        return (qi * kj).sum().item()

    for offset in (0, 1, 5, 17):
        scores = [score(i + offset, i) for i in (0, 3, 20, 40)]
        assert max(scores) - min(scores) < 1e-4, (offset, scores)
    assert abs(score(5, 0) - score(9, 0)) > 1e-3  # and it does depend on the offset


def test_alibi_slopes_are_the_papers_geometric_sequence():
    torch.testing.assert_close(alibi_slopes(8), torch.tensor([2.0 ** -(i + 1) for i in range(8)]))
    torch.testing.assert_close(alibi_slopes(16), torch.tensor([2.0 ** -(0.5 * (i + 1)) for i in range(16)]))


def test_alibi_slopes_for_12_heads_follow_the_non_power_of_two_rule():
    # the 8 slopes for 8 heads, then the odd-indexed terms 2^-1, 2^-3, 2^-5, 2^-7 of the
    # 16-head sequence 2^-0.5, 2^-1, ... (Press et al. 2022, reference implementation)
    expected = [2.0 ** -(i + 1) for i in range(8)] + [2.0 ** -0.5, 2.0 ** -1.5, 2.0 ** -2.5, 2.0 ** -3.5]
    torch.testing.assert_close(alibi_slopes(12), torch.tensor(expected))


def test_alibi_bias_is_minus_slope_times_distance():
    config = GPTConfig(block_size=16, n_embd=32, n_head=4)
    alibi = ALiBi(config, rotary_dim=8)
    q_pos, k_pos = torch.arange(3, 7), torch.arange(7)
    bias = alibi.score_bias(q_pos, k_pos)
    slopes = [2.0 ** -2, 2.0 ** -4, 2.0 ** -6, 2.0 ** -8]
    for h in range(4):
        for a, i in enumerate(q_pos.tolist()):
            for j in range(i + 1):
                assert math.isclose(bias[h, a, j].item(), -slopes[h] * (i - j), abs_tol=1e-6)


def test_only_learned_positions_have_a_length_limit():
    config = GPTConfig(block_size=16, n_embd=32, n_head=2)
    assert LearnedPositionEncoding.max_positions(config) == 16
    assert "learned positions are not defined past block_size=16" in LearnedPositionEncoding.length_problem(config, 17)
    assert LearnedPositionEncoding.length_problem(config, 16) is None
    for cls in (PositionEncoding, SinusoidalPositionalEncoding, RoPE, ALiBi):
        assert cls.max_positions(config) is None and cls.length_problem(config, 10_000) is None, cls


@pytest.mark.parametrize("cls, tables", [(RoPE, ("cos", "sin")), (SinusoidalPositionalEncoding, ("table",))])
def test_tables_grow_on_demand_keeping_their_rows_bitwise(cls, tables):
    config = GPTConfig(block_size=16, n_embd=32, n_head=2)
    enc = cls(config, rotary_dim=16)
    before = {name: getattr(enc, name).clone() for name in tables}
    enc.extend(16)  # covered already: nothing changes
    assert all(getattr(enc, name).size(0) == 16 for name in tables)
    enc.extend(40)
    built_long = cls(GPTConfig(block_size=40, n_embd=32, n_head=2), rotary_dim=16)
    for name in tables:
        grown = getattr(enc, name)
        assert grown.size(0) >= 40 and grown.dtype == torch.float32
        assert torch.equal(grown[:16], before[name])  # what a normal run computes does not move
        torch.testing.assert_close(grown[:40], getattr(built_long, name), atol=1e-7, rtol=0)
        assert name in dict(enc.named_buffers())  # still a buffer: follows .to(device) and .double()


def test_sinusoidal_scales_the_token_embeddings_by_sqrt_n_embd():
    # Vaswani et al. 2017 §3.4: "we multiply those weights by sqrt(d_model)", then add the table (§3.5)
    config = GPTConfig(block_size=20, n_embd=16, n_head=2)
    enc = SinusoidalPositionalEncoding(config, rotary_dim=8)
    x, pos = torch.randn(2, 20, 16), torch.arange(20)
    torch.testing.assert_close(enc(x, pos) - enc(torch.zeros_like(x), pos), x * 4.0)


def rms(t):
    return t.pow(2).mean(-1).sqrt().mean().item()


def test_sinusoidal_token_and_position_signals_are_comparable_at_initialisation():
    # GPT-2's embeddings (std 0.02) against a table of sines and cosines: without the paper's
    # sqrt(n_embd) the position signal is ~35x the token signal, and a fresh model barely sees tokens
    torch.manual_seed(0)
    model = build_model(load_experiment("sine"), n_layer=1)
    enc, T = model.transformer.wpe, model.config.block_size
    tokens = model.transformer.wte(torch.randint(0, model.config.vocab_size, (4, T)))
    pos = torch.arange(T)
    with torch.no_grad():
        position_signal = enc(torch.zeros_like(tokens), pos)
        token_signal = enc(tokens, pos) - position_signal
    ratio = rms(token_signal) / rms(position_signal)
    assert 0.3 < ratio < 3, (rms(token_signal), rms(position_signal))


def test_rope_rotates_each_pair_bitwise_as_the_pairwise_formula_forward_and_backward():
    """(x_2i, x_2i+1) -> (x_2i cos - x_2i+1 sin, x_2i sin + x_2i+1 cos): written pair by pair here, in the same float32
    products and sums; the elementwise form must give the same bits, and the same gradients."""
    rope = RoPE(GPTConfig(block_size=32, n_embd=64, n_head=4), rotary_dim=16)
    angles = rope.angles(32)
    cos, sin = angles.cos().float(), angles.sin().float()
    torch.manual_seed(0)
    x = torch.randn(2, 4, 32, 16, requires_grad=True)
    pos = torch.arange(32)
    even, odd = x[..., 0::2], x[..., 1::2]
    want = torch.stack((even * cos - odd * sin, even * sin + odd * cos), dim=-1).flatten(-2)
    got = rope.rotate(x, pos)
    assert torch.equal(got, want)
    grad = torch.randn_like(got)
    assert torch.equal(torch.autograd.grad(got, x, grad)[0], torch.autograd.grad(want, x, grad)[0])
