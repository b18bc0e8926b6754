"""Every user mistake: one message saying what is wrong and what to do, exit status 2,
no traceback, and no file of the user's changed."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from gptlab.paths import REPO_ROOT
from gptlab.training.logger import read_header

pytestmark = pytest.mark.slow

SMOKE = ["--preset", "smoke", "--max-steps", "2", "train.num_samples=0", "train.hellaswag=false"]


def train(*args):
    return subprocess.run([sys.executable, str(REPO_ROOT / "train.py"), *args], capture_output=True, text=True,
                          timeout=300)


def snapshot(directory: Path) -> dict:
    return {p: p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()}


def assert_refused(result, *phrases):
    assert result.returncode == 2, result.stderr
    assert result.stderr.count("error:") == 1 and "Traceback" not in result.stderr, result.stderr
    for phrase in phrases:
        assert phrase in result.stderr, result.stderr


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """A finished smoke run of `rope`, shared by the tests that only read it."""
    log_dir = tmp_path_factory.mktemp("rope")
    result = train("--experiment", "rope", "--log-dir", str(log_dir), *SMOKE, "train.eval_interval=1")
    assert result.returncode == 0, result.stderr
    return log_dir


def test_missing_or_misspelt_experiment(tmp_path):
    assert_refused(train("--experiment", "swigl", "--log-dir", str(tmp_path), *SMOKE),
                   "no experiment named 'swigl'; did you mean swiglu", "available: alibi")
    assert_refused(train("--experiment", str(tmp_path / "mine.py"), "--log-dir", str(tmp_path), *SMOKE),
                   "mine.py does not exist")
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("override, phrase", [
    ("train.warmup=3", "TrainingConfig has no field 'warmup'; did you mean warmup_steps"),
    ("model.n_layer=two", "GPTConfig.n_layer takes a whole number, got 'two'"),
    ("train.hellaswag=maybe", "TrainingConfig.hellaswag takes true or false, got 'maybe'"),
])
def test_override_with_unknown_key_or_wrong_type(tmp_path, override, phrase):
    assert_refused(train("--log-dir", str(tmp_path), *SMOKE, override), phrase)
    assert not list(tmp_path.iterdir())


@pytest.mark.long  # the default tier's budget: one of its slowest
@pytest.mark.parametrize("damage", ["truncate", "garbage"])
def test_truncated_or_corrupt_checkpoint(finished_run, tmp_path, damage):
    bad = tmp_path / "model_00002.pt"
    data = (finished_run / "model_00002.pt").read_bytes()
    bad.write_bytes(data[: len(data) // 3] if damage == "truncate" else b"not a checkpoint at all")
    before = snapshot(tmp_path)
    for args in (["--inference", str(bad)], ["--experiment", "rope", "--resume", str(bad), *SMOKE]):
        result = train(*args, "--log-dir", str(tmp_path / "new"))
        assert_refused(result, str(bad), "cannot be read", "damaged")
    assert snapshot(tmp_path) == before


def test_checkpoint_whose_checksum_does_not_match(finished_run, tmp_path):
    for name in ("model_00002.pt", "model_00002.pt.sha256"):
        (tmp_path / name).write_bytes((finished_run / name).read_bytes())
    data = bytearray((tmp_path / "model_00002.pt").read_bytes())
    data[-5000] ^= 1
    (tmp_path / "model_00002.pt").write_bytes(bytes(data))
    assert_refused(train("--inference", str(tmp_path / "model_00002.pt")), "do not match its stored sha256")


def test_resume_path_that_does_not_exist(tmp_path):
    assert_refused(train("--resume", str(tmp_path / "model_09999.pt"), "--log-dir", str(tmp_path), *SMOKE),
                   "model_09999.pt does not exist", "--resume auto")
    assert_refused(train("--inference", str(tmp_path / "nope.pt")), "nope.pt does not exist")


def test_checkpoint_of_another_experiment_names_what_differs(finished_run, tmp_path):
    before = snapshot(finished_run)
    result = train("--experiment", "alibi", "--resume", str(finished_run / "model_00002.pt"),
                   "--log-dir", str(tmp_path), *SMOKE)
    assert_refused(result, "belongs to experiment 'rope', not 'alibi'",
                   "position_encoding_class was gptlab.modules.position.RoPE, now gptlab.modules.position.ALiBi")
    result = train("--experiment", "rope", "--resume", str(finished_run / "model_00002.pt"),
                   "--log-dir", str(tmp_path), *SMOKE, "model.n_layer=3")
    assert_refused(result, "model.n_layer was 2, now 3")
    result = train("--experiment", "alibi", "--resume", "auto", "--log-dir", str(finished_run), *SMOKE)
    assert_refused(result, "belongs to experiment 'rope'")
    assert snapshot(finished_run) == before


def test_log_directory_that_cannot_be_written(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("keep me")
    assert_refused(train("--log-dir", str(blocker / "log"), *SMOKE), "cannot write to the log directory",
                   "--log-dir")
    assert blocker.read_text() == "keep me"


def test_empty_data_directory(tmp_path):
    (tmp_path / "data").mkdir()
    result = train("--log-dir", str(tmp_path / "log"), *SMOKE, "train.data=fineweb", f"train.data_dir={tmp_path / 'data'}")
    assert_refused(result, "holds 0 train and 0 val shards", "python -m gptlab.data.fineweb")


def test_data_directory_with_a_damaged_shard(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    np.save(data / "edufineweb_val_000000.npy", np.arange(5000, dtype=np.uint16))
    (data / "edufineweb_train_000001.npy").write_bytes(b"\x93NUMPY\x01\x00truncated")
    before = snapshot(data)
    result = train("--log-dir", str(tmp_path / "log"), *SMOKE, "train.data=fineweb", f"train.data_dir={data}")
    assert_refused(result, "edufineweb_train_000001.npy is not a token shard", "prepare the data again")
    assert snapshot(data) == before


def test_files_that_are_not_gptlab_files_are_refused_without_unsafe_advice(tmp_path):
    pickled = tmp_path / "model_00001.pt"
    torch.save({"model": torch.nn.Linear(2, 2)}, pickled)  # a pickled class, as other frameworks save
    result = train("--inference", str(pickled))
    assert_refused(result, "cannot be read as a gptlab checkpoint", "not a checkpoint gptlab wrote")
    data = tmp_path / "data"
    data.mkdir()
    np.save(data / "edufineweb_val_000000.npy", np.arange(5000, dtype=np.uint16))
    np.save(data / "edufineweb_train_000001.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    result = train("--log-dir", str(tmp_path / "log"), *SMOKE, "train.data=fineweb", f"train.data_dir={data}")
    assert_refused(result, "holds Python objects, not tokens")
    for text in (result.stderr, train("--inference", str(pickled)).stderr):
        assert "weights_only" not in text and "allow_pickle" not in text and "trust" not in text


@pytest.mark.long
def test_resume_on_other_data_is_refused_unless_asked_for(tmp_path):
    def shards(directory, offset):
        directory.mkdir()
        np.save(directory / "edufineweb_val_000000.npy", (np.arange(5000) * 7 % 50000).astype(np.uint16))
        np.save(directory / "edufineweb_train_000001.npy", ((np.arange(30000) + offset) % 50000).astype(np.uint16))

    shards(tmp_path / "a", 0)
    shards(tmp_path / "b", 999)
    args = [*SMOKE, "--max-steps", "4", "train.data=fineweb", "--log-dir", str(tmp_path / "log")]
    assert train(*args, f"train.data_dir={tmp_path / 'a'}", "train.stop_at=2").returncode == 0
    before = snapshot(tmp_path / "log")
    result = train(*args, f"train.data_dir={tmp_path / 'b'}", "--resume", "auto")
    assert_refused(result, "it was reading other data", "train.allow_data_change=true")
    assert snapshot(tmp_path / "log") == before
    (tmp_path / "a").rename(tmp_path / "moved")  # the same data elsewhere is the same data
    assert train(*args, f"train.data_dir={tmp_path / 'moved'}", "--resume", "auto", "train.stop_at=3").returncode == 0
    result = train(*args, f"train.data_dir={tmp_path / 'b'}", "--resume", "auto", "train.allow_data_change=true")
    assert result.returncode == 0 and "reading it from its start" in result.stdout


@pytest.mark.long
def test_resume_after_the_experiment_file_changed_is_refused_unless_asked_for(tmp_path):
    exp = tmp_path / "mine.py"
    exp.write_text("from gptlab.modules import RoPE\nPOSITION_ENCODING_CLASS = RoPE\n")
    args = ["--experiment", str(exp), *SMOKE, "--max-steps", "3", "--log-dir", str(tmp_path / "log")]
    assert train(*args, "train.stop_at=1").returncode == 0
    header = read_header(tmp_path / "log" / "log.txt")["sources"]
    assert header[0]["path"] == str(exp) and header[0]["text"] == exp.read_text()
    exp.write_text(exp.read_text() + "# tuned since\n")
    assert_refused(train(*args, "--resume", "auto"), f"{exp} has changed since the checkpoint",
                   "train.allow_source_change=true")
    assert train(*args, "--resume", "auto", "train.allow_source_change=true").returncode == 0


def test_a_refused_resume_leaves_no_directory_behind(tmp_path):
    """--resume of a checkpoint that is not there: refused, and the log directory the command would
    have made (log_train/<experiment>/log and its new parents) is not left behind empty."""
    result = train("--experiment", "rope", "--resume", str(tmp_path / "model_00050.pt"),
                   "--log-dir", str(tmp_path / "new" / "log"), *SMOKE)
    assert_refused(result, "does not exist")
    assert list(tmp_path.iterdir()) == []
    (tmp_path / "kept").mkdir()  # a directory that was there before stays
    assert_refused(train("--experiment", "rope", "--resume", str(tmp_path / "x.pt"), "--log-dir",
                         str(tmp_path / "kept"), *SMOKE))
    assert (tmp_path / "kept").is_dir()
