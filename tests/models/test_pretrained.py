"""Importing GPT-2 weights: gptlab's baseline with the weights of a Hugging Face GPT-2 (a small
random one, saved here) computes what transformers' GPT2LMHeadModel computes (logits, loss,
greedy tokens), and a checkpoint gptlab cannot express exactly is refused with a reason."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

pytest.importorskip("transformers")
from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig  # noqa: E402

from gptlab import GPTConfig, load_experiment  # noqa: E402
from gptlab.models.gpt import build_gpt  # noqa: E402
from gptlab.models.pretrained import GPT2_SIZES, PretrainedError, gpt2_model, load_gpt2  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
# GPT-2's vocabulary, so that generation and the loss run over all 50257 tokens; no eos, so
# that transformers' generate never stops early where gptlab's goes on
SMALL = dict(n_layer=2, n_head=4, n_embd=32, n_positions=64, vocab_size=50257, activation_function="gelu_new",
             resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, bos_token_id=None, eos_token_id=None)


def small_config(**changes) -> GPT2Config:
    return GPT2Config(**{**SMALL, **changes})


@pytest.fixture(scope="module")
def saved_gpt2(tmp_path_factory):
    """(directory, transformers model) of a small GPT-2 with every weight random: biases and
    LayerNorm gains away from 0 and 1 and weights of unit gain, so that a tensor left out,
    swapped or not transposed changes the logits and attention is far from uniform."""
    torch.manual_seed(0)
    hf = GPT2LMHeadModel(small_config()).eval()
    with torch.no_grad():
        for p in hf.parameters():
            if p.dim() == 1:
                p.add_(0.2 * torch.randn_like(p))
            else:
                p.normal_(0.0, SMALL["n_embd"] ** -0.5)
    directory = tmp_path_factory.mktemp("gpt2")
    hf.save_pretrained(directory)
    return directory, hf


@pytest.fixture(scope="module")
def imported(saved_gpt2):
    directory, _ = saved_gpt2
    config, state = load_gpt2(str(directory))
    model = build_gpt(load_experiment("baseline"), config)
    model.load_state_dict(state)  # strict
    return model.eval()


def test_config_is_the_checkpoints_with_gpt2s_unpadded_vocabulary(imported):
    assert imported.config == GPTConfig(block_size=64, vocab_size=50257, n_layer=2, n_head=4, n_embd=32,
                                        bias=True, dropout=0.0)
    assert imported.transformer.wte.weight is imported.lm_head.weight


def test_imported_logits_equal_transformers_logits(saved_gpt2, imported):
    _, hf = saved_gpt2
    idx = torch.randint(0, SMALL["vocab_size"], (3, SMALL["n_positions"]), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = hf(idx).logits
        logits = imported(idx).logits
    assert expected.std() > 0.5  # scores of order one: a mapping error cannot hide in the tolerance
    torch.testing.assert_close(logits, expected, atol=1e-5, rtol=1e-5)


def test_imported_loss_equals_transformers_loss(saved_gpt2, imported):
    _, hf = saved_gpt2
    idx = torch.randint(0, SMALL["vocab_size"], (2, 40), generator=torch.Generator().manual_seed(2))
    # transformers shifts the labels itself; gptlab takes the next tokens, the last one ignored
    targets = torch.cat([idx[:, 1:], torch.full((2, 1), -1)], dim=1)
    with torch.no_grad():
        expected = hf(idx, labels=idx).loss
        loss = imported(idx, targets).loss
    torch.testing.assert_close(loss, expected, atol=1e-5, rtol=1e-5)


def test_imported_greedy_generation_equals_transformers(saved_gpt2, imported):
    _, hf = saved_gpt2
    prompt = torch.randint(0, SMALL["vocab_size"], (2, 6), generator=torch.Generator().manual_seed(3))
    expected = hf.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=24, do_sample=False)
    tokens = imported.generate(prompt, 24, temperature=0, n_vocab=SMALL["vocab_size"])
    assert expected.shape == (2, 30)
    assert torch.equal(tokens, expected)


def test_gpt2_model_is_the_imported_baseline_in_eval_mode(saved_gpt2, imported):
    model = gpt2_model(str(saved_gpt2[0]))
    assert not model.training
    assert all(torch.equal(model.state_dict()[name], value) for name, value in imported.state_dict().items())


def test_gpt2_sizes_have_the_published_parameter_counts():
    published = {"gpt2": 124_439_808, "gpt2-medium": 354_823_168, "gpt2-large": 774_030_080,
                 "gpt2-xl": 1_557_611_200}
    for name, (n_layer, n_head, n_embd) in GPT2_SIZES.items():
        with torch.device("meta"):  # shapes only
            model = build_gpt(load_experiment("baseline"), GPTConfig(block_size=1024, vocab_size=50257, n_layer=n_layer,
                                                                n_head=n_head, n_embd=n_embd))
        assert model.num_params() == published[name], name


@pytest.mark.parametrize("change, reason", [
    (dict(activation_function="relu"), "activation_function='relu'"),
    (dict(n_inner=96), "n_inner=96"),
    (dict(layer_norm_epsilon=1e-6), "layer_norm_epsilon=1e-06"),
    (dict(scale_attn_weights=False), "scale_attn_weights=False"),
    (dict(scale_attn_by_inverse_layer_idx=True), "scale_attn_by_inverse_layer_idx=True"),
    (dict(reorder_and_upcast_attn=True), "reorder_and_upcast_attn=True"),
    (dict(add_cross_attention=True), "add_cross_attention=True"),
    (dict(tie_word_embeddings=False), "tie_word_embeddings=False"),
])
def test_a_gpt2_the_baseline_cannot_express_is_refused(tmp_path, change, reason):
    small_config(**change).save_pretrained(tmp_path)
    with pytest.raises(PretrainedError, match="cannot express exactly") as error:
        load_gpt2(str(tmp_path))
    assert reason in str(error.value)


def test_every_unsupported_feature_is_named_at_once(tmp_path):
    small_config(activation_function="relu", layer_norm_epsilon=1e-6).save_pretrained(tmp_path)
    with pytest.raises(PretrainedError, match="activation_function='relu'(.|\n)*layer_norm_epsilon=1e-06"):
        load_gpt2(str(tmp_path))


def test_the_tanh_gelu_under_its_other_name_is_accepted(tmp_path):
    GPT2LMHeadModel(small_config(activation_function="gelu_pytorch_tanh")).save_pretrained(tmp_path)
    config, _ = load_gpt2(str(tmp_path))
    assert config.n_layer == SMALL["n_layer"]


def test_a_model_other_than_gpt2_is_refused(tmp_path):
    LlamaConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=4,
                vocab_size=100).save_pretrained(tmp_path)
    with pytest.raises(PretrainedError, match="holds a 'llama' model"):
        load_gpt2(str(tmp_path))


def test_a_directory_without_config_or_weights_is_refused(tmp_path):
    with pytest.raises(PretrainedError, match="no config.json"):
        load_gpt2(str(tmp_path))
    small_config().save_pretrained(tmp_path)
    with pytest.raises(PretrainedError, match="cannot read the GPT-2 weights"):
        load_gpt2(str(tmp_path))


@pytest.mark.parametrize("source", ["gpt3", "/no/such/directory"])
def test_a_source_neither_published_nor_a_directory_is_refused(source):
    with pytest.raises(PretrainedError, match="neither a published GPT-2 nor an existing directory(.|\n)*gpt2-xl"):
        load_gpt2(source)


def test_without_transformers_the_error_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "transformers", None)  # `import transformers` raises ImportError
    with pytest.raises(PretrainedError, match=r'pip install -e "\.\[hf\]"'):
        load_gpt2("gpt2")


def test_a_published_size_out_of_reach_says_how_to_get_it(tmp_path):
    # an empty Hugging Face cache and no network: what a machine without the hub sees, without its retries
    env = {**os.environ, "HF_HOME": str(tmp_path), "HF_HUB_OFFLINE": "1"}
    code = "from gptlab.models.pretrained import load_gpt2; load_gpt2('gpt2')"
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode != 0
    assert "PretrainedError: cannot load gpt2: it is not in the Hugging Face cache" in result.stderr
    assert "hf download gpt2" in result.stderr
    assert "save_pretrained(DIR)" in result.stderr
