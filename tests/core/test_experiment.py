import textwrap

import pytest
import torch

from gptlab import ConfigError, GPTConfig, build_model, load_experiment
from gptlab.core.experiment import ExperimentError
from gptlab.modules import GQAAttention, LearnedPositionEncoding, MLAAttention, RoPE


def write(tmp_path, text, name="exp.py"):
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def test_absent_names_take_the_baseline_defaults():
    exp = load_experiment("rope")
    assert exp.position_encoding_class is RoPE
    assert exp.model_config == GPTConfig() and exp.name == "rope"
    assert load_experiment("baseline").position_encoding_class is LearnedPositionEncoding
    assert load_experiment("gqa").attention_class is GQAAttention
    assert load_experiment("gqa").model_config.n_kv_head == 4


def test_a_user_class_defined_in_the_file_plugs_in(tmp_path):
    path = write(tmp_path, """
        import torch
        from gptlab.modules import BaseAttention

        class ScaledAttention(BaseAttention):
            def forward(self, x, pos_enc, pos, cache=None):
                return 0.5 * super().forward(x, pos_enc, pos, cache)

        ATTENTION_CLASS = ScaledAttention
    """)
    exp = load_experiment(str(path))
    model = build_model(exp, n_layer=1, n_head=2, n_embd=16, block_size=8, vocab_size=11)
    assert type(model.transformer.h[0].attn).__name__ == "ScaledAttention"
    assert exp.class_names()["attention_class"].endswith("ScaledAttention")
    model(torch.zeros(1, 4, dtype=torch.long))


def test_unknown_name_lists_the_available_ones():
    with pytest.raises(ExperimentError, match=r"no experiment named 'ropee'; did you mean rope.*available: alibi, baseline"):
        load_experiment("ropee")


def test_misspelt_top_level_name_suggests_the_right_one(tmp_path):
    path = write(tmp_path, """
        from gptlab import GPTConfig
        MODEL_CONFG = GPTConfig(n_layer=2)
    """)
    with pytest.raises(ExperimentError, match="MODEL_CONFG is not a setting.*did you mean MODEL_CONFIG"):
        load_experiment(path)


def test_misspelt_config_field_suggests_the_right_one(tmp_path):
    path = write(tmp_path, """
        from gptlab import GPTConfig
        MODEL_CONFIG = GPTConfig(n_layers=2)
    """)
    with pytest.raises(ExperimentError, match="GPTConfig has no field 'n_layers'; did you mean n_layer"):
        load_experiment(path)


@pytest.mark.parametrize("line, message", [
    ("ATTENTION_CLASS = RoPE", "ATTENTION_CLASS = RoPE is a position encoding, not an attention class"),
    ("MLP_CLASS = MLAAttention", "MLP_CLASS = MLAAttention is an attention class, not an MLP"),
    ("NORM_CLASS = SwiGLU", "NORM_CLASS = SwiGLU is an MLP class, not a norm"),
    ("POSITION_ENCODING_CLASS = 3", "POSITION_ENCODING_CLASS must be a class, got 3"),
    ("MODEL_CONFIG = dict(n_layer=2)", r"MODEL_CONFIG must be a GPTConfig\(...\)"),
])
def test_a_value_of_the_wrong_kind_is_named(tmp_path, line, message):
    path = write(tmp_path, f"from gptlab.modules import RoPE, MLAAttention, SwiGLU\n{line}\n")
    with pytest.raises(ExperimentError, match=message):
        load_experiment(path)


def test_every_problem_is_reported_at_once(tmp_path):
    path = write(tmp_path, "from gptlab.modules import RoPE\nATTENTION_CLASS = RoPE\nMLP_CLAS = 1\n")
    with pytest.raises(ExperimentError) as info:
        load_experiment(path)
    assert "ATTENTION_CLASS" in str(info.value) and "MLP_CLAS" in str(info.value)


@pytest.mark.parametrize("name", ["../x", "../../etc/passwd", "a/b", ""])
def test_a_name_that_escapes_experiments_is_refused(name):
    with pytest.raises(ExperimentError, match="not a plain name"):
        load_experiment(name)


def test_a_missing_file_is_named(tmp_path):
    with pytest.raises(ExperimentError, match="does not exist"):
        load_experiment(str(tmp_path / "nope.py"))


def test_impossible_config_lists_every_field_at_once():
    with pytest.raises(ConfigError) as info:
        GPTConfig(n_embd=100, n_head=12, dropout=1.5)
    text = str(info.value)
    assert "n_embd=100 is not divisible by n_head=12" in text and "dropout=1.5" in text


def test_build_model_overrides_name_an_unknown_field():
    with pytest.raises(ConfigError, match="no field 'nlayer'; did you mean n_layer"):
        build_model(load_experiment("baseline"), nlayer=2)


def test_mla_sizes_rescale_with_the_head_size():
    model = build_model(load_experiment("mla"), n_layer=1, n_head=4, n_embd=64)
    attn = model.transformer.h[0].attn
    assert isinstance(attn, MLAAttention)
    assert (attn.kv_lora_rank, attn.qk_nope_head_dim, attn.qk_rope_head_dim, attn.v_head_dim) == (64, 16, 8, 16)


@pytest.mark.parametrize("line, suggestion", [
    ("MLP = SwiGLU", "did you mean MLP_CLASS?"),
    ("NORM = RMSNorm", "did you mean NORM_CLASS?"),
    ("FFN_CLASS = SwiGLU", "the settings are: MODEL_CONFIG"),
    ("NORMALIZATION_CLASS = RMSNorm", "did you mean NORM_CLASS?"),
    ("GPT_CONFIG = GPTConfig(n_layer=3)", "did you mean MODEL_CONFIG?"),
    ("CONFIG = GPTConfig(n_layer=3)", "did you mean MODEL_CONFIG?"),
    ("mlp_class = SwiGLU", "did you mean MLP_CLASS?"),
    ("model_config = GPTConfig(n_layer=3)", "did you mean MODEL_CONFIG?"),
    ("attention = GQAAttention", "did you mean ATTENTION_CLASS?"),
])
def test_a_name_an_experiment_does_not_read_is_an_error_not_a_silent_baseline(tmp_path, line, suggestion):
    path = write(tmp_path, f"""
        from gptlab import GPTConfig
        from gptlab.modules import GQAAttention, RMSNorm, SwiGLU
        {line}
    """)
    with pytest.raises(ExperimentError) as info:
        load_experiment(path)
    assert f"{line.split(' =')[0]} is not a setting an experiment reads" in str(info.value)
    assert suggestion in str(info.value)


def test_imports_and_private_helpers_are_not_settings(tmp_path):
    path = write(tmp_path, """
        import dataclasses
        from gptlab import GPTConfig
        from gptlab.modules import RoPE, SwiGLU

        _base = GPTConfig(n_layer=4)
        MODEL_CONFIG = dataclasses.replace(_base, n_head=8)
        POSITION_ENCODING_CLASS = RoPE
    """)
    exp = load_experiment(path)
    assert exp.model_config.n_layer == 4 and exp.position_encoding_class is RoPE
