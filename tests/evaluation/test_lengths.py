"""Length extrapolation: the same tokens scored at every length, checked against a loop that
scores each token by hand; the command on checkpoints written here as the trainer writes them."""

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from gptlab import build_model, load_experiment
from gptlab.data import embedded
from gptlab.evaluation.lengths import LengthError, length_losses, main, whole_tokens
from gptlab.paths import REPO_ROOT
from tests.conftest import save_run_checkpoint

TINY = dict(n_layer=2, n_head=2, n_embd=16, block_size=8, vocab_size=53)


def tiny(name: str):
    torch.manual_seed(0)
    return build_model(load_experiment(name), **TINY).eval()


def loss_token_by_token(model, stream: torch.Tensor, length: int) -> float:
    """Each target j scored alone: its context is the sequence of `length` tokens that holds
    position j-1 when the stream is cut into sequences from its start."""
    losses = []
    for j in range(1, len(stream)):
        start = (j - 1) // length * length
        logits = model(stream[start:j][None]).logits[0, -1]
        losses.append(-torch.log_softmax(logits.double(), -1)[stream[j]])
    return torch.stack(losses).mean().item()


@pytest.mark.parametrize("name", ["rope", "alibi", "sine"])
def test_every_length_scores_the_same_tokens(name):
    model = tiny(name)
    stream = torch.randint(0, 53, (2 * 64 + 1,))  # two sequences of the longest length, 8 x 8
    results = length_losses(model, stream, 8, (1, 2, 4, 8), tokens=128)
    for factor, result in results.items():
        assert result.why is None
        assert result.loss == pytest.approx(loss_token_by_token(model, stream, 8 * factor), rel=1e-5), factor
    assert len({round(r.loss, 6) for r in results.values()}) == 4  # and the length does change the loss


def test_learned_positions_say_they_are_not_defined_past_block_size():
    results = length_losses(tiny("baseline"), torch.randint(0, 53, (65,)), 8, (1, 2, 8), tokens=64)
    assert results[1].loss is not None and results[1].why is None
    for factor in (2, 8):
        assert results[factor].loss is None
        assert "learned positions are not defined past block_size=8" in results[factor].why


def test_a_stream_in_shards_is_read_as_one_stream():
    model, stream = tiny("rope"), torch.randint(0, 53, (129,))

    class Shards:  # what a TokenLoader exposes: its shards, in order
        shards = [stream[:50].numpy().astype(np.uint16), stream[50:].numpy().astype(np.uint16)]

    assert length_losses(model, Shards(), 8, tokens=128) == length_losses(model, stream, 8, tokens=128)


def test_tokens_must_be_whole_sequences_of_every_length_and_in_the_stream():
    model = tiny("rope")
    assert whole_tokens(1000, 8, (1, 2, 4, 8)) == 960 and whole_tokens(100, 8, (1, 3)) == 96
    with pytest.raises(LengthError, match="not a whole number of sequences"):
        length_losses(model, torch.randint(0, 53, (200,)), 8, tokens=100)
    with pytest.raises(LengthError, match="holds 128 tokens; scoring 128 needs 129"):
        length_losses(model, torch.randint(0, 53, (128,)), 8, tokens=128)


# checkpoints as the trainer writes them, of a model that reads the embedded corpus
SMALL = dict(n_layer=1, n_head=2, n_embd=16, block_size=16)


def write_run(log_dir, name: str, step: int = 3, seed: int = 0):
    torch.manual_seed(seed)
    model = build_model(load_experiment(name), **SMALL)
    save_run_checkpoint(log_dir, model, step, experiment=name)
    return model.eval()


def run(capsys, *argv):
    code = main([*map(str, argv), "--device", "cpu"])
    out, err = capsys.readouterr()
    return code, out, err


def test_a_run_gets_its_losses_recorded_beside_the_trainers_record(tmp_path, capsys):
    model = write_run(tmp_path / "log", "rope")
    (tmp_path / "log" / "run.json").write_text(json.dumps({"params": 123, "lengths": "stale"}))
    code, out, err = run(capsys, tmp_path / "log", "--tokens", "1100")
    assert code == 0, err
    record = json.loads((tmp_path / "log" / "run.json").read_text())
    assert record["params"] == 123  # the trainer's keys are kept
    lengths = record["lengths"]
    assert {k: lengths[k] for k in ("block_size", "tokens", "step")} == {"block_size": 16, "tokens": 1024, "step": 3}
    assert set(lengths["losses"]) == {"1", "2", "4", "8"} and "why" not in lengths
    # 1x is plain validation loss on the first 1,024 tokens of the embedded corpus's validation split
    stream = torch.from_numpy(embedded.embedded_splits()["val"][:1025].astype(np.int64))
    with torch.no_grad():
        expected = model(stream[:-1].view(-1, 16), stream[1:].view(-1, 16)).ce.item()
    assert lengths["losses"]["1"] == pytest.approx(expected, rel=1e-5)
    assert "8x" in out and "128" in out and "model_00003.pt" in out


def test_learned_positions_are_recorded_as_undefined_with_the_reason(tmp_path, capsys):
    write_run(tmp_path, "baseline")
    code, out, err = run(capsys, tmp_path / "model_00003.pt", "--tokens", "512", "--factors", "1", "4")
    assert code == 0, err
    lengths = json.loads((tmp_path / "run.json").read_text())["lengths"]
    assert lengths["losses"]["1"] > 0 and lengths["losses"]["4"] is None
    assert "learned positions are not defined past block_size=16" in lengths["why"]["4"]
    assert "not scored at 4x: learned positions are not defined past block_size=16" in out


def test_a_directory_of_runs_evaluates_each_runs_newest_checkpoint(tmp_path, capsys):
    write_run(tmp_path / "rope" / "log", "rope", step=2)
    write_run(tmp_path / "rope" / "log", "rope", step=5, seed=1)
    write_run(tmp_path / "alibi" / "log", "alibi", step=4)
    code, out, err = run(capsys, tmp_path, "--tokens", "256", "--factors", "1", "2")
    assert code == 0, err
    for name, step in (("rope", 5), ("alibi", 4)):
        assert json.loads((tmp_path / name / "log" / "run.json").read_text())["lengths"]["step"] == step


def test_a_run_that_is_training_keeps_its_record(tmp_path, capsys):
    from gptlab.files import DirectoryLock
    write_run(tmp_path, "rope")
    lock = DirectoryLock(tmp_path)
    assert lock.acquire()
    try:
        code, out, err = run(capsys, tmp_path, "--tokens", "256", "--factors", "1", "2")
    finally:
        lock.release()
    assert code == 0, err
    assert "not recorded: " in out and "in use by a training run" in out and not (tmp_path / "run.json").exists()


def assert_one_error(code, err, *phrases):
    assert code == 2 and err.count("error:") == 1 and "Traceback" not in err, err
    for phrase in phrases:
        assert phrase in err, err


def test_bad_input_is_one_error_line(tmp_path, capsys):
    assert_one_error(*run(capsys, tmp_path / "nowhere")[::2], "does not exist")
    assert_one_error(*run(capsys, tmp_path)[::2], "holds no checkpoint")
    write_run(tmp_path / "log", "rope")
    assert_one_error(*run(capsys, tmp_path / "log", "--tokens", "1")[::2], "do not fill one sequence")
    with open(tmp_path / "log" / "model_00003.pt", "r+b") as f:  # damaged after it was written
        f.truncate(1000)
    assert_one_error(*run(capsys, tmp_path / "log" / "model_00003.pt")[::2], "is damaged")
    assert_one_error(*run(capsys, tmp_path / "log")[::2], "holds no intact checkpoint", "model_00003.pt",
                     "do not match its stored sha256")
    assert not (tmp_path / "log" / "run.json").exists()


def test_the_module_runs_as_a_command(tmp_path):
    write_run(tmp_path, "alibi")
    result = subprocess.run([sys.executable, "-m", "gptlab.evaluation.lengths", str(tmp_path), "--tokens", "128",
                             "--device", "cpu"], capture_output=True, text=True, timeout=120, cwd=REPO_ROOT)
    assert result.returncode == 0, result.stderr
    assert set(json.loads((tmp_path / "run.json").read_text())["lengths"]["losses"]) == {"1", "2", "4", "8"}
