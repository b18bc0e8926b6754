"""gptlab export: which experiment exports as which transformers class (or is refused), and,
with transformers installed, that the exported model computes what gptlab's does: logits to
1e-4 and greedy generations token for token, loaded the way any user loads it."""

import json
import warnings

import pytest
import torch

from gptlab import build_model, load_experiment
from gptlab.core.config import GPT2_VOCAB
from gptlab.core.experiment import available_experiments
from gptlab.export import families
from gptlab.export.cli import main
from gptlab.export.families import family_of, halves
from gptlab.export.huggingface import ExportError, export_model
from gptlab.models.gpt import build_gpt
from gptlab.modules import BaseAttention
from tests.evaluation.test_lengths import write_run

# written out by hand from the transformers classes' architectures, not read from the code
EXPORTS = {"baseline": "GPT2LMHeadModel", "relu": "GPT2LMHeadModel", "silu": "GPT2LMHeadModel",
           "sine": "GPT2LMHeadModel", "nope": "GPT2LMHeadModel", "small_init": "GPT2LMHeadModel",
           "mqa": "GPTBigCodeForCausalLM", "rope": "GPTNeoXForCausalLM", "llama": "LlamaForCausalLM",
           "deepseek_v2": "DeepseekV2ForCausalLM",
           "muon": "GPT2LMHeadModel", "llama_muon": "LlamaForCausalLM"}  # the optimizer leaves no trace in a model
# the component no class computes alongside the rest of the experiment
REFUSED = {"alibi": "ALiBi", "geglu": "GEGLU", "swiglu": "SwiGLU", "gqa": "GQAAttention", "mla": "MLAAttention",
           "rmsnorm": "RMSNorm", "qknorm": "QKNormAttention", "moe": "MoE"}
HF_TINY = dict(n_layer=2, n_head=4, n_embd=32, block_size=32, vocab_size=50304)


def meta_model(name: str, **overrides):
    with torch.device("meta"):
        return build_model(load_experiment(name), **{"n_layer": 1, **overrides})


def test_every_experiment_is_either_exported_or_refused():
    assert set(EXPORTS) | set(REFUSED) == set(available_experiments())


@pytest.mark.parametrize("name", sorted(EXPORTS))
def test_an_experiment_exports_as_the_class_that_computes_it(name):
    family, why = family_of(meta_model(name))
    assert family is not None and family.hf_class == EXPORTS[name], why


@pytest.mark.parametrize("name", sorted(REFUSED))
def test_an_experiment_no_class_computes_is_refused_naming_the_component(name, tmp_path):
    model = meta_model(name)
    assert family_of(model)[0] is None
    with pytest.raises(ExportError, match=f"experiment 'x' cannot be exported exactly.*{REFUSED[name]}"):
        export_model(model, tmp_path / "out", description={"experiment": "x"})
    assert not (tmp_path / "out").exists()


MIXTRAL = """from gptlab import GPTConfig
from gptlab.modules import GQAAttention, RMSNorm, RoPE, SwiGLUMoE

MODEL_CONFIG = GPTConfig(bias=False, n_kv_head=2, n_experts=4, moe_top_k=2)
ATTENTION_CLASS = GQAAttention
POSITION_ENCODING_CLASS = RoPE
MLP_CLASS = SwiGLUMoE
NORM_CLASS = RMSNorm
"""


def mixtral_experiment(tmp_path) -> str:
    """Mixtral's shape as a user writes it: SwiGLU experts routed top-2, RoPE, RMSNorm, GQA, no biases."""
    path = tmp_path / "mixtral.py"
    path.write_text(MIXTRAL)
    return str(path)


def test_a_mixture_of_swiglu_experts_on_llamas_stack_exports_as_mixtral_and_its_limits_are_said(tmp_path):
    name = mixtral_experiment(tmp_path)
    family, why = family_of(meta_model(name))
    assert family is not None and family.hf_class == "MixtralForCausalLM", why
    family, why = family_of(meta_model(name, bias=True))
    assert family is None and "closest: MixtralForCausalLM" in why[0] and "biases (model.bias=true)" in why[0]
    family, why = family_of(meta_model(name, moe_top_k=1))
    assert family is None and "top-1 routing" in why[0]


def test_a_subclass_is_refused_since_it_may_compute_something_else():
    class MyAttention(BaseAttention):
        pass

    exp = load_experiment("baseline")
    exp.attention_class = MyAttention
    with torch.device("meta"):
        model = build_gpt(exp)
    family, why = family_of(model)
    assert family is None and "MyAttention" in why[0]


def test_a_vocabulary_smaller_than_gpt2s_is_refused():
    family, why = family_of(meta_model("baseline", vocab_size=1000))
    assert family is None and "vocab_size=1000" in why[0]


def test_a_non_empty_output_directory_is_refused_and_left_alone(tmp_path):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "mine.txt").write_text("keep me")
    with pytest.raises(ExportError, match="not an empty directory"):
        export_model(meta_model("baseline"), tmp_path / "out")
    assert (tmp_path / "out" / "mine.txt").read_text() == "keep me"


def test_the_halves_layout_rotates_the_same_pairs_as_gptlabs_interleaved_rope():
    """RoFormer's interleaved rotation of q and k, then q.k, equals permuting each head to
    halves and rotating halves (x_i with x_i+d/2, as GPT-NeoX and Llama do), written here."""
    torch.manual_seed(0)
    H, T, D = 3, 5, 8
    q, k = torch.randn(H, T, D, dtype=torch.float64), torch.randn(H, T, D, dtype=torch.float64)
    angles = torch.outer(torch.arange(T, dtype=torch.float64), 10000.0 ** (-torch.arange(0, D, 2) / D))
    cos, sin = angles.cos(), angles.sin()

    def interleaved(x):
        even, odd = x[..., 0::2], x[..., 1::2]
        return torch.stack((even * cos - odd * sin, even * sin + odd * cos), -1).flatten(-2)

    def rotate_halves(x):
        first, second = x[..., :D // 2], x[..., D // 2:]
        return torch.cat((first * cos - second * sin, second * cos + first * sin), -1)

    def permuted(x):  # the rows of a (H * D, ...) projection, as heads of D
        return halves(x.transpose(0, 1).reshape(T, H * D).t(), H, D).t().reshape(T, H, D).transpose(0, 1)

    ours = interleaved(q) @ interleaved(k).transpose(-1, -2)
    theirs = rotate_halves(permuted(q)) @ rotate_halves(permuted(k)).transpose(-1, -2)
    torch.testing.assert_close(theirs, ours)
    assert not torch.allclose(rotate_halves(q) @ rotate_halves(k).transpose(-1, -2), ours)  # the layout matters


def test_export_list_names_every_experiments_class_or_refusal(capsys):
    with pytest.raises(SystemExit):
        main(["--list", "ckpt.pt", "out"])
    capsys.readouterr()
    assert main(["--list"]) == 0
    out = capsys.readouterr().out
    for name, hf_class in EXPORTS.items():
        assert any(line.split() == [name, hf_class] for line in out.splitlines()), name
    for name, component in REFUSED.items():
        assert any(line.startswith(name + " ") and "refused" in line and component in line for line in out.splitlines())


# with transformers: the export computes what gptlab's model does

def scrambled(name: str, seed: int = 0, **overrides):
    """A tiny model whose every weight matters: gptlab's init perturbed well away from its
    structure (norm gains off 1, biases off 0), so a wrong mapping cannot hide in a small logit."""
    torch.manual_seed(seed)
    model = build_model(load_experiment(name), **{**HF_TINY, **overrides})
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.2 * torch.randn_like(p))
    return model.eval()


def load_hf(directory):
    transformers = pytest.importorskip("transformers")
    return (transformers.AutoModelForCausalLM.from_pretrained(directory, dtype=torch.float32).eval(),
            transformers.AutoTokenizer.from_pretrained(directory))


def assert_same_logits_and_generations(model, hf) -> None:
    """The exported model's logits (to 1e-4) and greedy generations (token for token) are gptlab's."""
    idx = torch.randint(0, GPT2_VOCAB, (3, HF_TINY["block_size"]), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ours, theirs = model(idx).logits[..., :GPT2_VOCAB], hf(idx).logits
    assert theirs.shape == ours.shape
    torch.testing.assert_close(theirs, ours, rtol=1e-4, atol=1e-4)
    prompt = idx[:, :8]
    expected = model.generate(prompt, max_new_tokens=16, temperature=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        got = hf.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=16, do_sample=False,
                          eos_token_id=None, pad_token_id=None)
    assert got.tolist() == expected.tolist()


@pytest.mark.long
@pytest.mark.parametrize("name,overrides", [
    ("baseline", {}), ("relu", {}), ("silu", {}), ("sine", {}), ("nope", {}), ("mqa", {}), ("rope", {}),
    ("baseline", dict(bias=False)), ("rope", dict(rope_theta=500.0)),
    ("llama", {}), ("llama", dict(bias=True, n_kv_head=2)), ("deepseek_v2", {}), ("deepseek_v2", dict(q_lora_rank=16)),
])
def test_the_exported_model_computes_gptlabs_logits_and_greedy_generations(name, overrides, tmp_path):
    pytest.importorskip("transformers")
    model = scrambled(name, **overrides)
    exported = export_model(model, tmp_path / "out", description={"experiment": name})
    hf, tokenizer = load_hf(tmp_path / "out")
    assert type(hf).__name__ == EXPORTS[name] == exported.family.hf_class
    assert_same_logits_and_generations(model, hf)


@pytest.mark.long
@pytest.mark.parametrize("overrides,implementation", [
    (dict(mlp_hidden=64), "grouped_mm"),  # transformers' grouped matmul takes rows of 16-byte multiples
    (dict(n_kv_head=4, n_experts=3, moe_top_k=3), "eager"),  # SwiGLU's 8/3 x 32 = 86 wide: its loop over experts
])
def test_a_mixtral_shaped_export_computes_gptlabs_logits_and_greedy_generations(overrides, implementation, tmp_path):
    """In evaluation no token is dropped (capacity is a training rule) and jitter is off: the layer is Mixtral's."""
    pytest.importorskip("transformers")
    model = scrambled(mixtral_experiment(tmp_path), **overrides)
    export_model(model, tmp_path / "out", description={"experiment": "mixtral"})
    hf, _ = load_hf(tmp_path / "out")  # as anyone loads it: config.json names the experts' implementation it needs
    assert hf.config._experts_implementation == implementation
    assert type(hf).__name__ == "MixtralForCausalLM"
    assert_same_logits_and_generations(model, hf)


@pytest.mark.long
def test_the_exported_tokenizer_is_gpt2s_and_the_files_are_what_transformers_reads(tmp_path):
    pytest.importorskip("transformers")
    from gptlab.data.tokenizer import gpt2_encoding
    export_model(scrambled("llama"), tmp_path / "out")
    names = {p.name for p in (tmp_path / "out").iterdir()}
    assert {"config.json", "model.safetensors", "generation_config.json", "tokenizer.json", "tokenizer_config.json",
            "vocab.json", "merges.txt", "README.md"} <= names
    _, tokenizer = load_hf(tmp_path / "out")
    text = "The exported model speaks GPT-2's BPE:\n\n  naïve 12345 <|endoftext|>tokens."
    assert tokenizer.encode(text) == gpt2_encoding().encode(text, allowed_special="all")
    assert tokenizer.decode(gpt2_encoding().encode(text, allowed_special="all")) == text
    config = json.loads((tmp_path / "out" / "config.json").read_text())
    assert config["vocab_size"] == GPT2_VOCAB and config["tie_word_embeddings"] is True
    assert json.loads((tmp_path / "out" / "generation_config.json").read_text())["eos_token_id"] == 50256


@pytest.mark.long
def test_a_bfloat16_export_holds_the_rounded_weights(tmp_path):
    pytest.importorskip("transformers")
    model = scrambled("baseline")
    export_model(model, tmp_path / "out", dtype="bfloat16")
    from safetensors.torch import load_file
    weights = load_file(tmp_path / "out" / "model.safetensors")
    assert weights["transformer.h.0.mlp.c_fc.weight"].dtype == torch.bfloat16
    torch.testing.assert_close(weights["transformer.h.0.mlp.c_fc.weight"],
                               model.transformer.h[0].mlp.c_fc.weight.t().bfloat16(), rtol=0, atol=0)


@pytest.mark.long
@pytest.mark.parametrize("name", ["rope", "llama", "deepseek_v2"])
@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_a_half_precision_export_of_rope_checks_against_the_rounded_weights_not_rounded_tables(name, dtype, tmp_path):
    """transformers computes RoPE's angles in float32 whatever the weights' dtype, as gptlab does."""
    pytest.importorskip("transformers")
    exported = export_model(scrambled(name), tmp_path / "out", dtype=dtype)
    assert exported.max_difference <= 1e-4 * max(1.0, exported.logit_scale)


@pytest.mark.long
def test_an_export_that_would_compute_something_else_is_caught_and_not_left_behind(tmp_path, monkeypatch):
    """Break the mapping on purpose (no RoPE pair permutation): the check refuses it."""
    pytest.importorskip("transformers")
    monkeypatch.setattr(families, "halves", lambda rows, n_heads, head_dim: rows)
    with pytest.raises(ExportError, match="does not compute what the gptlab model does"):
        export_model(scrambled("llama"), tmp_path / "out")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.long
def test_the_check_covers_every_position_a_model_uses(tmp_path, monkeypatch):
    """Position rows from 64 on zeroed in the export (a 128-token model): a probe of 64 tokens
    would pass it; the check runs over all block_size positions and refuses it."""
    pytest.importorskip("transformers")
    table = families.position_table

    def first_64_rows_only(model):
        rows = table(model).clone()
        rows[64:] = 0
        return rows
    monkeypatch.setattr(families, "position_table", first_64_rows_only)
    with pytest.raises(ExportError, match="over all 128 positions"):
        export_model(scrambled("baseline", block_size=128), tmp_path / "out")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.long
def test_a_rounded_export_says_what_it_was_checked_against(tmp_path, capsys):
    """--dtype bfloat16: the check compares with gptlab at the same rounded weights (the mapping) and
    says, as well, how far the export is from the float32 checkpoint (what rounding costs)."""
    pytest.importorskip("transformers")
    write_run(tmp_path / "run" / "log", "baseline", step=3)
    assert main([str(tmp_path / "run"), str(tmp_path / "hf"), "--dtype", "bfloat16"]) == 0
    out = capsys.readouterr().out
    assert "differ from gptlab's at the same bfloat16-rounded weights by at most" in out
    assert "from the float32 checkpoint's by at most" in out and "what rounding the weights to bfloat16 costs" in out
    assert "what rounding" in (tmp_path / "hf" / "README.md").read_text()


@pytest.mark.long
def test_export_command_writes_a_runs_newest_checkpoint(tmp_path, capsys):
    pytest.importorskip("transformers")
    write_run(tmp_path / "run" / "log", "rope", step=3)
    model = write_run(tmp_path / "run" / "log", "rope", step=7, seed=1)
    assert main([str(tmp_path / "run"), str(tmp_path / "hf")]) == 0
    out = capsys.readouterr().out
    assert "model_00007.pt (experiment rope, step 7)" in out and "GPTNeoXForCausalLM" in out
    hf, _ = load_hf(tmp_path / "hf")
    idx = torch.randint(0, model.config.vocab_size, (1, model.config.block_size))
    with torch.no_grad():
        torch.testing.assert_close(hf(idx).logits, model(idx).logits[..., :GPT2_VOCAB], rtol=1e-4, atol=1e-4)


@pytest.mark.long
def test_export_command_writes_into_the_current_directory_or_new_parents(tmp_path, capsys, monkeypatch):
    pytest.importorskip("transformers")
    write_run(tmp_path / "run" / "log", "baseline")
    (tmp_path / "here").mkdir()
    monkeypatch.chdir(tmp_path / "here")
    assert main([str(tmp_path / "run"), "."]) == 0 and (tmp_path / "here" / "config.json").is_file()
    assert main([str(tmp_path / "run"), str(tmp_path / "a" / "b" / "hf")]) == 0
    assert (tmp_path / "a" / "b" / "hf" / "model.safetensors").is_file()
    assert sorted(p.name for p in (tmp_path / "a" / "b").iterdir()) == ["hf"]  # no temporary left beside it


def test_export_command_refuses_a_corrupt_checkpoint_in_one_line(tmp_path, capsys):
    (tmp_path / "model_00001.pt").write_bytes(b"not a checkpoint")
    assert main([str(tmp_path / "model_00001.pt"), str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "model_00001.pt" in err and not (tmp_path / "out").exists()
