"""Nothing a user had is lost or silently replaced: one run per log directory, checkpoints
copied without their markers, an attempt that never trained, a diverged run, stop_at."""

import json
import shutil
import signal
import subprocess
import sys
import time

import pytest
import torch

from gptlab.paths import REPO_ROOT
from gptlab.training import checkpoint as ckpt
from gptlab.training.logger import read_log

pytestmark = pytest.mark.slow

SMOKE = ["--preset", "smoke", "train.num_samples=0", "train.hellaswag=false"]


def train(*args, **kwargs):
    return subprocess.run([sys.executable, str(REPO_ROOT / "train.py"), *SMOKE, *args], capture_output=True,
                          text=True, timeout=300, **kwargs)


def start(*args):
    return subprocess.Popen([sys.executable, str(REPO_ROOT / "train.py"), *SMOKE, *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def wait_for_step(log_dir, step: int, proc) -> None:
    deadline = time.time() + 120
    while not ((log_dir / "log.txt").exists() and f"\n{step} train " in (log_dir / "log.txt").read_text()):
        assert proc.poll() is None and time.time() < deadline, proc.communicate()
        time.sleep(0.01)


@pytest.mark.long
def test_a_second_run_on_the_same_log_directory_is_refused_and_a_killed_run_leaves_no_stuck_lock(tmp_path):
    first = start("--log-dir", str(tmp_path), "--max-steps", "20", "--seed", "1")
    wait_for_step(tmp_path, 1, first)
    second = train("--log-dir", str(tmp_path), "--max-steps", "20", "--seed", "2", "model.n_layer=3", "--resume")
    assert second.returncode == 2 and f"{tmp_path} is in use by another training run (pid {first.pid})" in second.stderr
    _, err = first.communicate(timeout=300)
    assert first.returncode == 0, err
    state = torch.load(tmp_path / "model_00020.pt", weights_only=True)
    assert state["model_config"]["n_layer"] == 2 and state["training_config"]["seed"] == 1

    killed = start("--log-dir", str(tmp_path / "k"), "--max-steps", "20")
    wait_for_step(tmp_path / "k", 1, killed)
    killed.send_signal(signal.SIGKILL)
    killed.wait()
    again = train("--log-dir", str(tmp_path / "k"), "--max-steps", "3", "--resume", "auto", "train.eval_interval=3")
    assert again.returncode == 0, again.stderr


@pytest.mark.long
def test_checkpoints_copied_without_their_markers_are_used_not_overwritten(tmp_path):
    args = ["--max-steps", "6", "train.eval_interval=2"]
    assert train("--log-dir", str(tmp_path / "a"), *args, "train.stop_at=4").returncode == 0
    copy = tmp_path / "copy"
    copy.mkdir()
    for name in ("model_00002.pt", "model_00004.pt", "log.txt"):
        shutil.copy(tmp_path / "a" / name, copy / name)
    result = train("--log-dir", str(copy), *args, "--resume", "auto")
    assert result.returncode == 0, result.stderr
    assert "model_00004.pt had no .sha256 marker; it loads and is consistent, so it is used" in result.stderr
    assert f"resumed from {copy / 'model_00004.pt'} at step 4" in (copy / "log.txt").read_text()
    assert ckpt.verify(copy / "model_00004.pt") is None and ckpt.verify(copy / "model_00006.pt") is None


@pytest.mark.long
def test_resume_auto_never_starts_over_where_no_checkpoint_is_usable(tmp_path):
    assert train("--log-dir", str(tmp_path), "--max-steps", "4", "train.eval_interval=2").returncode == 0
    for name in ("model_00002.pt", "model_00004.pt"):
        (tmp_path / name).write_bytes((tmp_path / name).read_bytes()[:1000])
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.is_file() and p.name != ".lock"}
    result = train("--log-dir", str(tmp_path), "--max-steps", "4", "--resume", "auto")
    assert result.returncode == 2 and "holds 2 checkpoint(s), none usable" in result.stderr
    assert "model_00004.pt: its contents do not match its stored sha256" in result.stderr
    assert "will not start over" in result.stderr and "Traceback" not in result.stderr
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.is_file() and p.name != ".lock"} == before


@pytest.mark.long
def test_the_log_of_an_attempt_that_never_trained_does_not_block_the_corrected_command(tmp_path):
    # what a run that failed before its first step leaves: a header, an evaluation, no step, no checkpoint
    (tmp_path / "log.txt").write_text('# run started\n# experiment {"name": "baseline"}\n0 val 10.8\n')
    result = train("--log-dir", str(tmp_path), "--max-steps", "2")
    assert result.returncode == 0, result.stderr
    assert "never trained a step; it is kept as log." in result.stdout
    kept = list(tmp_path.glob("log.*.untrained.txt"))
    assert len(kept) == 1 and kept[0].read_text().endswith("0 val 10.8\n")
    assert [s for s, _ in read_log(tmp_path / "log.txt")["train"]] == [0, 1]


@pytest.mark.long
def test_a_diverged_run_writes_no_checkpoint_of_its_divergence(tmp_path):
    result = train("--log-dir", str(tmp_path), "--max-steps", "30", "train.eval_interval=2", "train.max_lr=1e12",
                   "train.warmup_steps=1", "train.max_bad_steps=100")
    assert result.returncode == 4 and "diverged" in result.stderr and "Traceback" not in result.stderr
    assert json.loads((tmp_path / "run.json").read_text())["status"] == "diverged"
    val = dict(read_log(tmp_path / "log.txt")["val"])
    for path in ckpt.list_checkpoints(tmp_path):
        state = torch.load(path, weights_only=True)
        assert all(torch.isfinite(t).all() for t in state["model"].values()), path
        assert torch.isfinite(torch.tensor(val[state["step"]])), path
    last = result.stderr.split("last good checkpoint is ")[-1]
    newest = ckpt.list_checkpoints(tmp_path)
    assert (str(newest[0]) in last) if newest else "not yet written" in last


@pytest.mark.long
def test_resume_past_stop_at_says_there_is_nothing_to_train(tmp_path):
    assert train("--log-dir", str(tmp_path), "--max-steps", "8", "train.eval_interval=3", "train.stop_at=6").returncode == 0
    before = (tmp_path / "log.txt").read_text()
    result = train("--log-dir", str(tmp_path), "--max-steps", "8", "train.eval_interval=3", "train.stop_at=3",
                   "--resume", "auto")
    assert result.returncode == 2 and "is at step 6, at or past train.stop_at=3: there is nothing to train" in result.stderr
    assert (tmp_path / "log.txt").read_text() == before
