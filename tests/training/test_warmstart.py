"""--init-from: a new run from a checkpoint's weights, or from a (small, locally saved) GPT-2:
the weights arrive as they were (the first validation loss is the source's), the optimizer
and the step start afresh, the log names the source, and a source whose architecture differs
is refused with every difference named before anything is written."""

import math

import numpy as np
import pytest
import torch

from gptlab.data import embedded
from gptlab.training.cli import main
from gptlab.training.logger import read_header, read_log

SMOKE = ["--preset", "smoke", "train.hellaswag=false", "train.num_samples=0"]


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    """A smoke baseline trained 4 steps: its checkpoint and its last validation loss."""
    log_dir = tmp_path_factory.mktemp("source")
    assert main(["--log-dir", str(log_dir), "--max-steps", "4", "train.eval_interval=4", *SMOKE]) == 0
    return log_dir / "model_00004.pt", read_log(log_dir / "log.txt")["val"][-1][1]


@pytest.mark.slow
def test_a_warm_start_takes_the_weights_only(tmp_path, source, capsys):
    checkpoint, source_val = source
    log_dir = tmp_path / "warm"
    assert main(["--log-dir", str(log_dir), "--init-from", str(checkpoint), "--max-steps", "2",
                 "train.eval_interval=2", "train.max_lr=1e-3", *SMOKE]) == 0
    out = capsys.readouterr().out
    assert f"initialised from {checkpoint} (experiment baseline, step 4)" in out
    series = read_log(log_dir / "log.txt")
    assert series["val"][0] == (0, source_val)  # the source's weights, evaluated on the same tokens
    assert [s for s, _ in series["train"]] == [0, 1]  # from step 0
    assert series["lr"][0][1] == pytest.approx(1e-3 / 5)  # a fresh schedule: warm-up step 1 of 5
    header = read_header(log_dir / "log.txt")
    assert header["init_from"]["source"] == str(checkpoint) and header["init_from"]["step"] == 4
    assert len(header["init_from"]["sha256"]) == 64
    state = torch.load(log_dir / "model_00002.pt", weights_only=True)
    assert state["step"] == 2 and state["init_from"]["kind"] == "checkpoint"
    assert all(v["step"].item() == 2 for v in state["optimizer"]["state"].values())  # a new AdamW: 2 steps


@pytest.mark.slow
def test_a_source_of_another_architecture_is_refused_naming_each_difference(tmp_path, source, capsys):
    checkpoint, _ = source
    code = main(["--experiment", "rope", "--log-dir", str(tmp_path / "x"), "--init-from", str(checkpoint),
                 *SMOKE, "model.n_layer=3"])
    err = capsys.readouterr().err
    assert code == 2
    assert "position_encoding_class is gptlab.modules.position.LearnedPositionEncoding there" in err
    assert "model.n_layer is 2 there, 3 here" in err and "Nothing was written" in err
    assert not (tmp_path / "x").exists()


def test_init_from_and_resume_are_refused_together(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        main(["--init-from", "gpt2", "--resume", "auto", "--log-dir", str(tmp_path)])
    assert e.value.code == 2 and "not allowed with argument" in capsys.readouterr().err


def test_a_missing_source_is_named(tmp_path, capsys):
    assert main(["--init-from", str(tmp_path / "nothing.pt"), "--log-dir", str(tmp_path / "run"), *SMOKE]) == 2
    assert "does not exist" in capsys.readouterr().err


@pytest.mark.slow
def test_a_warm_start_from_a_local_gpt2_scores_what_transformers_scores(tmp_path, capsys):
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)  # the smoke preset's shape: 2 layers, 8 heads, 64 wide, 64 positions
    hf = transformers.GPT2LMHeadModel(transformers.GPT2Config(
        n_layer=2, n_head=8, n_embd=64, n_positions=64, vocab_size=50257, resid_pdrop=0.0, embd_pdrop=0.0,
        attn_pdrop=0.0)).eval()
    hf.save_pretrained(tmp_path / "gpt2")
    log_dir = tmp_path / "run"
    assert main(["--log-dir", str(log_dir), "--init-from", str(tmp_path / "gpt2"), "--max-steps", "1", *SMOKE]) == 0
    out = capsys.readouterr().out
    assert "model.vocab_size=50257 (GPT-2's own, not padded)" in out
    # validation scores the first val_tokens of the validation split as sequences of 64
    val = np.asarray(embedded.embedded_splits()["val"][:2048 + 1], dtype=np.int64)
    x, y = torch.from_numpy(val[:-1]).view(-1, 64), torch.from_numpy(val[1:]).view(-1, 64)
    with torch.no_grad():
        logits = hf(x).logits
    expected = torch.nn.functional.cross_entropy(logits.reshape(-1, 50257), y.reshape(-1)).item()
    got = read_log(log_dir / "log.txt")["val"][0][1]
    assert math.isclose(got, expected, abs_tol=2e-6), (got, expected)
    assert read_header(log_dir / "log.txt")["model_config"]["vocab_size"] == 50257


@pytest.mark.slow
def test_gpt2_weights_need_gpt2s_shape(tmp_path, capsys):
    transformers = pytest.importorskip("transformers")
    transformers.GPT2LMHeadModel(transformers.GPT2Config(n_layer=1, n_head=2, n_embd=32, n_positions=64)
                                 ).save_pretrained(tmp_path / "gpt2")
    assert main(["--log-dir", str(tmp_path / "run"), "--init-from", str(tmp_path / "gpt2"), *SMOKE]) == 2
    err = capsys.readouterr().err
    assert "model.n_layer is 1 there, 2 here" in err and "model.n_embd is 32 there, 64 here" in err
    assert "use --preset gpt2" in err
