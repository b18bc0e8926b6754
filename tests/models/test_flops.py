"""Training FLOPs per token against each architecture's formula written out by hand."""

import pytest

from gptlab import build_model, load_experiment

C, L, H, V, T = 64, 3, 4, 50304, 128
SIZE = dict(n_layer=L, n_head=H, n_embd=C, block_size=T)


def flops(name: str, **overrides) -> int:
    return build_model(load_experiment(name), **{**SIZE, **overrides}).flops_per_token(T)


def gpt(attention_weights: int, score_width: int, mlp_weights: int) -> int:
    """6 FLOPs per matmul weight per token, plus scores and weighted sum: 6 * T * heads * (d_qk + d_v)."""
    per_layer = attention_weights + mlp_weights
    return 6 * (L * per_layer + C * V) + 6 * L * T * score_width


def test_baseline_is_6n_plus_12_l_c_t_without_embeddings():
    expected = gpt(attention_weights=C * 3 * C + C * C, score_width=2 * C, mlp_weights=2 * 4 * C * C)
    assert flops("baseline") == expected
    assert expected == 6 * (12 * L * C * C + C * V) + 12 * L * C * T  # nanoGPT's 6N + 12LCT, N without wpe


def test_gqa_and_mqa_count_their_narrower_key_value_projections():
    d = C // H
    for name, kv in (("gqa", 2), ("mqa", 1)):
        overrides = {"n_kv_head": kv} if name == "gqa" else {}
        expected = gpt(attention_weights=C * (C + 2 * kv * d) + C * C, score_width=2 * C, mlp_weights=8 * C * C)
        assert flops(name, **overrides) == expected


def test_mla_counts_its_latent_projections_and_real_head_widths():
    d = C // H  # DeepSeek-V2 defaults: d_c = 4 d, d_rope = d / 2, nope = v = d
    d_c, rope = 4 * d, d // 2
    attention = C * H * (d + rope) + C * (d_c + rope) + d_c * H * (d + d) + H * d * C
    assert flops("mla") == gpt(attention_weights=attention, score_width=H * (d + rope + d), mlp_weights=8 * C * C)


@pytest.mark.parametrize("name", ["swiglu", "geglu"])
def test_gated_mlps_count_three_matrices(name):
    hidden = round(8 * C / 3)
    assert flops(name) == gpt(attention_weights=4 * C * C, score_width=2 * C, mlp_weights=3 * C * hidden)


def test_breakdown_adds_up_and_names_the_parts():
    model = build_model(load_experiment("baseline"), **SIZE)
    parts = model.flops_breakdown(T)
    assert parts["lm_head"] == 6 * C * V and parts["mlp"] == 6 * L * 8 * C * C and parts["other"] == 0
    assert sum(parts.values()) == model.flops_per_token(T)


def test_non_embedding_parameters_leave_out_token_and_position_embeddings():
    model = build_model(load_experiment("baseline"), **SIZE)
    assert model.num_params() - model.num_params(non_embedding=True) == V * C + T * C
    rope = build_model(load_experiment("rope"), **SIZE)
    assert rope.num_params() - rope.num_params(non_embedding=True) == V * C


def test_a_user_attention_with_gpt2_widths_is_counted_like_the_baseline():
    from torch import nn

    from gptlab.core.experiment import Experiment
    from gptlab.modules import Attention

    class Mine(Attention):  # the shape of the README's worked example
        def __init__(self, config):
            super().__init__()
            self.n_head, self.head_dim = config.n_head, config.head_dim
            self.c_attn = nn.Linear(config.n_embd, 3 * config.n_embd)
            self.c_proj = nn.Linear(config.n_embd, config.n_embd)

    exp = load_experiment("baseline")
    mine = Experiment(**{**exp.__dict__, "attention_class": Mine})
    assert build_model(mine, **SIZE).flops_per_token(T) == flops("baseline")
