"""Each component checks the config it is given when the model is built; GPTConfig keeps
only the rules every model shares, and a field no component reads is refused, not ignored."""


import pytest

from gptlab import ConfigError, GPTConfig, build_model, load_experiment
from gptlab.models.gpt import GPT
from gptlab.modules import MLP, BaseAttention, LearnedPositionEncoding, MQAAttention
from torch import nn

SMALL = dict(n_layer=1, n_embd=32, n_head=4, block_size=16, vocab_size=50)


def build(name, **fields):
    return build_model(load_experiment(name), **{**SMALL, **fields})


def refused(name, **fields) -> str:
    with pytest.raises(ConfigError) as info:
        build(name, **fields)
    return str(info.value)


def test_a_rule_of_one_component_does_not_refuse_another():
    # head size 6: MLA's default rotary width would be 3, which only matters where MLA is used
    config = GPTConfig(n_embd=72, n_head=12)
    for name in ("baseline", "rope", "alibi", "gqa", "swiglu"):
        build_model(load_experiment(name), n_layer=1, n_embd=72, n_head=12, vocab_size=50, block_size=8)
    assert config.head_dim == 6
    assert "RoPE rotates pairs of dimensions, but the attention asks it to rotate 3" in refused(
        "mla", n_embd=72, n_head=12)


def test_rope_refuses_an_odd_head_size_and_a_bad_theta():
    text = refused("rope", n_embd=28, n_head=4, rope_theta=-1.0)
    assert "asks it to rotate 7" in text and "rope_theta=-1.0 must be positive" in text
    build("alibi", n_embd=28, n_head=4)  # no rotation: an odd head size is fine


@pytest.mark.parametrize("name, n_kv_head, phrase", [
    ("baseline", 2, "n_kv_head=2 would be ignored: BaseAttention uses 4 K/V head(s)"),
    ("mqa", 2, "n_kv_head=2 would be ignored: MQAAttention uses 1 K/V head(s)"),
    ("gqa", 3, "GQAAttention needs n_kv_head to divide n_head=4, got n_kv_head=3; choose one of [1, 2, 4]"),
    ("mla", 2, "n_kv_head=2 would be ignored: none of MLAAttention"),
])
def test_attention_refuses_an_n_kv_head_it_would_ignore_or_cannot_use(name, n_kv_head, phrase):
    assert phrase in refused(name, n_kv_head=n_kv_head)


def test_attention_accepts_the_n_kv_head_it_means():
    assert build("baseline", n_kv_head=4).transformer.h[0].attn.n_kv_head == 4
    assert build("mqa", n_kv_head=1).transformer.h[0].attn.n_kv_head == 1
    assert build("gqa", n_kv_head=2).transformer.h[0].attn.n_kv_head == 2
    assert "choose one of" in refused("gqa", n_kv_head=0)  # GQA without groups would silently be MHA


def test_mla_fields_on_a_model_without_mla_are_refused():
    text = refused("baseline", kv_lora_rank=16, q_lora_rank=8)
    assert "kv_lora_rank=16 would be ignored" in text and "q_lora_rank=8 would be ignored" in text
    assert build("mla", kv_lora_rank=16, q_lora_rank=8).transformer.h[0].attn.kv_lora_rank == 16
    assert "MLA's qk_rope_head_dim comes to 0 (head size 1)" in refused("mla", n_embd=4, n_head=4)


def test_a_user_mlp_that_does_not_read_mlp_hidden_refuses_it():
    class PlainMLP(nn.Module):
        def __init__(self, config):
            super().__init__()
            self.c_fc = nn.Linear(config.n_embd, config.n_embd)

        def forward(self, x):
            return self.c_fc(x)

    config = GPTConfig(**SMALL, mlp_hidden=48)
    with pytest.raises(ConfigError, match="mlp_hidden=48 would be ignored: none of BaseAttention, "
                                          "LearnedPositionEncoding, PlainMLP, LayerNorm"):
        GPT(config, BaseAttention, LearnedPositionEncoding, PlainMLP, nn.LayerNorm)
    assert GPT(config, mlp_class=MLP).transformer.h[0].mlp.c_proj.in_features == 48


def test_every_problem_of_every_component_is_raised_at_once():
    with pytest.raises(ConfigError) as info:
        GPT(GPTConfig(**{**SMALL, "n_embd": 36}, n_kv_head=2, rope_theta=5.0, kv_lora_rank=8),
            MQAAttention, LearnedPositionEncoding)
    text = str(info.value)
    assert text.count("\n  - ") == 3, text
    for phrase in ("n_kv_head=2 would be ignored", "rope_theta=5.0 would be ignored", "kv_lora_rank=8 would be ignored"):
        assert phrase in text
