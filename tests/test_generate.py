"""`gptlab generate`: the samples are model.generate's tokens decoded (checked against the
trainer's own sampler), a sample ends at <|endoftext|>, a run's directory means its newest
intact checkpoint, every mistake is one error, and train.py --inference prints the same."""

import dataclasses
import os
import subprocess
import sys

import pytest
import torch

from gptlab import build_model, load_experiment
from gptlab.cli import main as gptlab_main
from gptlab.data.tokenizer import EOT
from gptlab.evaluation.samples import generate_samples
from gptlab.generate import Sampling, load_source, main, sample
from gptlab.paths import REPO_ROOT
from gptlab.training.cli import main as train_main
from tests.conftest import save_run_checkpoint

# GPT-2's vocabulary (the default vocab_size), so that any prompt is in it
SMALL = dict(n_layer=1, n_head=2, n_embd=16, block_size=16)
PROMPT = "The function"


def tiny(name: str = "baseline", seed: int = 0):
    torch.manual_seed(seed)
    return build_model(load_experiment(name), **SMALL).eval()


def write_checkpoint(log_dir, step: int, model):
    return save_run_checkpoint(log_dir, model, step)


def printed_samples(out: str) -> list[str]:
    return [chunk.split("\n", 1)[1].rstrip("\n") for chunk in out.split("--- sample ")[1:]]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A run's log directory: steps 2 and 5 of different weights, and a damaged step 7."""
    log_dir = tmp_path_factory.mktemp("run")
    write_checkpoint(log_dir, 2, tiny(seed=2))
    write_checkpoint(log_dir, 5, tiny(seed=5))
    newest = write_checkpoint(log_dir, 7, tiny(seed=7))
    newest.write_bytes(newest.read_bytes()[:1000])
    return log_dir


def test_samples_are_model_generate_decoded_with_the_same_seed():
    model = tiny()
    for seed, temperature, top_k in ((7, 1.0, 50), (8, 0.7, None)):
        sampling = Sampling(prompt=PROMPT, num_samples=2, max_new_tokens=6, temperature=temperature, top_k=top_k,
                            seed=seed, stop_at_eot=False)
        expected = generate_samples(model, PROMPT, 2, 6, "cpu", seed=seed, temperature=temperature, top_k=top_k)
        assert sample(model, sampling, "cpu") == expected
    assert sample(model, dataclasses.replace(sampling, seed=9), "cpu") != expected  # the seed does matter


def test_the_command_prints_those_samples_from_a_checkpoint(tmp_path, capsys):
    model = tiny()
    path = write_checkpoint(tmp_path, 3, model)
    assert main([str(path), "--prompt", PROMPT, "--num-samples", "2", "--max-new-tokens", "6", "--seed", "3",
                 "--ignore-eot", "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"{path}: experiment baseline, step 3, {model.num_params():,} parameters, on cpu\n")
    assert printed_samples(out) == generate_samples(model, PROMPT, 2, 6, "cpu", seed=3)


def test_a_sample_ends_at_the_first_endoftext_after_the_prompt():
    model = tiny()
    with torch.no_grad():  # the final norm ignores its input and favours <|endoftext|>: p about 0.3 in the top 50
        direction = torch.nn.functional.normalize(torch.randn(SMALL["n_embd"]), dim=0)
        model.transformer.ln_f.weight.zero_()
        model.transformer.ln_f.bias.copy_(direction)
        model.transformer.wte.weight[EOT] = 3.0 * direction
    prompt = "<|endoftext|>" + PROMPT  # the prompt's own <|endoftext|> is kept
    sampling = Sampling(prompt=prompt, num_samples=6, max_new_tokens=8, seed=0)
    stopped = sample(model, sampling, "cpu")
    full = sample(model, dataclasses.replace(sampling, stop_at_eot=False), "cpu")
    cut = 0
    for short, long in zip(stopped, full):
        assert short.startswith(prompt) and long.startswith(short)
        assert "<|endoftext|>" not in short[len(prompt):]
        if long != short:
            assert long[len(short):].startswith("<|endoftext|>")
            cut += 1
    assert cut >= 2 and any(len(short) > len(prompt) for short, long in zip(stopped, full) if long != short)


def test_a_run_directory_means_its_newest_intact_checkpoint(run_dir):
    source = load_source(str(run_dir))
    assert source.description.startswith(f"{run_dir / 'model_00005.pt'}: experiment baseline, step 5")
    sampling = Sampling(prompt=PROMPT, num_samples=1, max_new_tokens=5)
    expected = sample(tiny(seed=5), sampling, "cpu")
    assert sample(source.model, sampling, "cpu") == expected != sample(tiny(seed=2), sampling, "cpu")


def test_the_damaged_checkpoint_skipped_is_named(run_dir, capsys):
    assert main([str(run_dir), "--max-new-tokens", "2", "--num-samples", "1", "--device", "cpu"]) == 0
    out, err = capsys.readouterr()
    assert "model_00005.pt: experiment baseline, step 5" in out
    assert "warning: skipping checkpoint" in err and "model_00007.pt" in err


@pytest.mark.parametrize("make, args, phrases", [
    (None, ["--prompt", "word " * 20], ["learned positions are not defined past block_size=16",
                                        "the prompt (21 tokens) + --max-new-tokens 32"]),
    (None, ["--prompt", ""], ["--prompt is empty"]),
    (None, ["--max-new-tokens", "0", "--num-samples", "0"], ["--max-new-tokens 0: give at least 1",
                                                            "--num-samples 0: give at least 1"]),
    (None, ["--temperature", "-1"], ["--temperature -1.0: give 0 (greedy) or a positive number"]),
    (None, ["--top-k", "-3", "--seed", str(2**70)], ["--top-k -3: give a positive K", "--seed 1180591620717411303424: "
                                                    "give a seed from 0 to 2**64 - 1"]),
    ("missing", [], ["nope.pt does not exist", "a run's log directory", "gpt2-medium"]),
    ("garbage", [], ["cannot be read as a gptlab checkpoint", "damaged"]),
    ("checksum", [], ["do not match its stored sha256"]),
    ("empty dir", [], ["holds no checkpoint (model_NNNNN.pt)"]),
    ("all damaged", [], ["holds no intact checkpoint", "model_00004.pt"]),
    ("gpt3", [], ["gpt3 does not exist", "did you mean gpt2?"]),
])
def test_a_mistake_is_one_error_and_exit_status_2(tmp_path, capsys, make, args, phrases):
    source = write_checkpoint(tmp_path, 4, tiny())
    if make == "missing":
        source = tmp_path / "nope.pt"
    elif make == "garbage":
        source.write_bytes(b"not a checkpoint at all")
        source.with_name(source.name + ".sha256").unlink()
    elif make == "checksum":
        data = bytearray(source.read_bytes())
        data[-5000] ^= 1
        source.write_bytes(bytes(data))
    elif make == "empty dir":
        source = tmp_path / "empty"
        source.mkdir()
    elif make == "all damaged":
        source.write_bytes(source.read_bytes()[:500])
        source = tmp_path
    elif make == "gpt3":
        source = "gpt3"
    assert main([str(source), *args, "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert err.count("error:") == 1 and "Traceback" not in err, err
    for phrase in phrases:
        assert phrase in err, err


def test_inference_and_generate_print_the_same(tmp_path, capsys):
    path = write_checkpoint(tmp_path, 4, tiny())
    for options in ([], ["--seed", "0", "--num-samples", "2", "--temperature", "0.8", "--top-k", "0"]):
        assert train_main(["--inference", str(path), "--max-new-tokens", "4", *options]) == 0
        inference = capsys.readouterr().out
        assert gptlab_main(["generate", str(path), "--max-new-tokens", "4", *options]) == 0
        assert capsys.readouterr().out == inference
        assert inference.count("--- sample") == (4 if not options else 2)  # the default of --inference: 4


@pytest.mark.long  # two Python processes
def test_train_py_inference_and_the_gptlab_command_print_the_same_samples(tmp_path):
    path = write_checkpoint(tmp_path, 4, tiny())
    args = ["--seed", "11", "--num-samples", "3", "--max-new-tokens", "8", "--device", "cpu"]
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    inference = subprocess.run([sys.executable, str(REPO_ROOT / "train.py"), "--inference", str(path), *args],
                               capture_output=True, text=True, timeout=120, env=env)
    generate = subprocess.run([sys.executable, "-m", "gptlab", "generate", str(path), *args], capture_output=True,
                              text=True, timeout=120, env=env)
    assert inference.returncode == generate.returncode == 0, inference.stderr + generate.stderr
    assert printed_samples(inference.stdout) == printed_samples(generate.stdout)
    assert len(printed_samples(generate.stdout)) == 3


@pytest.mark.long  # imports transformers
def test_openai_gpt2_weights_from_a_hugging_face_directory(tmp_path, capsys):
    transformers = pytest.importorskip("transformers")
    from gptlab.models.pretrained import gpt2_model
    torch.manual_seed(0)
    config = transformers.GPT2Config(n_layer=1, n_head=2, n_embd=16, n_positions=16, vocab_size=50257,
                                     activation_function="gelu_new")
    transformers.GPT2LMHeadModel(config).save_pretrained(tmp_path / "gpt2")
    assert main([str(tmp_path / "gpt2"), "--num-samples", "2", "--max-new-tokens", "4", "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"{tmp_path / 'gpt2'}: OpenAI's GPT-2 weights")
    assert printed_samples(out) == sample(gpt2_model(str(tmp_path / "gpt2")),
                                          Sampling(num_samples=2, max_new_tokens=4), "cpu")
    assert main([str(tmp_path / "gpt2"), "--prompt", "word " * 15, "--device", "cpu"]) == 2
    assert "learned positions are not defined past block_size=16" in capsys.readouterr().err


def test_a_long_request_streams_its_tokens_and_allocates_its_cache_as_it_goes():
    """A hundred million new tokens on RoPE (no length limit): the first tokens come at once, the
    same as a short request's, and the caches start at block_size (the whole request would be 25 GB)."""
    torch.manual_seed(0)
    model = build_model(load_experiment("rope"), **SMALL).eval()
    idx = torch.tensor([[464, 2163]])
    stream = model.stream(idx, 100_000_000, temperature=0)
    first = torch.cat([next(stream) for _ in range(20)], dim=1)  # past block_size (16): the caches doubled
    assert torch.equal(first, model.generate(idx, 20, temperature=0)[:, 2:])
    stream.close()
    assert not model.training


def test_one_sample_is_printed_as_it_is_drawn(tmp_path):
    """gptlab generate --num-samples 1 --max-new-tokens 1000000 on a RoPE checkpoint: text after the
    prompt reaches stdout while it still generates."""
    torch.manual_seed(0)
    save_run_checkpoint(tmp_path, build_model(load_experiment("rope"), **SMALL), 3, experiment="rope")
    process = subprocess.Popen([sys.executable, "-m", "gptlab", "generate", str(tmp_path), "--num-samples", "1",
                                "--max-new-tokens", "1000000", "--ignore-eot", "--prompt", PROMPT], cwd=REPO_ROOT,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, bufsize=0)
    try:
        seen = ""
        while PROMPT not in seen or len(seen.split(PROMPT, 1)[1]) < 40:
            char = process.stdout.read(1)
            assert char, process.stderr.read()
            seen += char
        assert process.poll() is None  # still generating
    finally:
        process.kill()
        process.wait()
