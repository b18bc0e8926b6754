"""Preemption: SIGTERM or SIGINT saves a checkpoint at the next step boundary and exits with
status 3; resuming ends bitwise where an uninterrupted run ends; train_nightly.sh resumes a
preempted run at once."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from gptlab.paths import REPO_ROOT
from gptlab.training import checkpoint as ckpt
from gptlab.training.logger import read_log
from gptlab.training.preemption import PREEMPTED_EXIT

ARGS = ["--preset", "smoke", "--max-steps", "10", "train.eval_interval=4", "train.num_samples=0",
        "train.hellaswag=false", "model.dropout=0.1"]


def wait_for_line(log: Path, line: str, proc, timeout: float = 120.0) -> None:
    deadline = time.time() + timeout
    while not (log.exists() and f"\n{line} " in log.read_text()):
        assert proc.poll() is None, proc.communicate()
        assert time.time() < deadline
        time.sleep(0.005)


@pytest.mark.long
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["TERM", "INT"])
def test_a_signal_saves_at_the_next_step_and_the_resumed_run_is_bitwise_identical(tmp_path, sig, one_thread):
    whole = subprocess.run([sys.executable, str(REPO_ROOT / "train.py"), *ARGS, "--log-dir", str(tmp_path / "whole")],
                           capture_output=True, text=True, timeout=300)
    assert whole.returncode == 0, whole.stderr
    run_dir = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, str(REPO_ROOT / "train.py"), *ARGS, "--log-dir", str(run_dir)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_for_line(run_dir / "log.txt", "5 train", proc)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == PREEMPTED_EXIT, err
    saved = ckpt.list_checkpoints(run_dir)[0]
    step = int(ckpt.NAME.fullmatch(saved.name).group(1))
    assert 6 <= step < 10 and ckpt.verify(saved) is None
    assert f"stopped by {sig.name} at step {step}" in err and "--resume auto" in err and "Traceback" not in err
    assert max(s for s, _ in read_log(run_dir / "log.txt")["train"]) == step - 1  # no step half-taken

    resumed = subprocess.run([sys.executable, str(REPO_ROOT / "train.py"), *ARGS, "--log-dir", str(run_dir),
                              "--resume", "auto"], capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    a, b = (torch.load(d / "model_00010.pt", weights_only=True) for d in (tmp_path / "whole", run_dir))
    for name, tensor in a["model"].items():
        assert torch.equal(tensor, b["model"][name]), name
    assert a["loader"] == b["loader"]
    assert read_log(tmp_path / "whole" / "log.txt")["val"] == read_log(run_dir / "log.txt")["val"]


def nightly(run_dir: Path, retry_wait: int) -> subprocess.Popen:
    env = {**os.environ, "PYTHON": sys.executable, "RETRY_WAIT": str(retry_wait), "NPROC": "1", "LOG_DIR": str(run_dir)}
    return subprocess.Popen(["bash", str(REPO_ROOT / "train_nightly.sh"), *ARGS], env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


@pytest.mark.long
def test_nightly_resumes_a_preempted_run_at_once(tmp_path):
    run_dir = tmp_path / "run"
    loop = nightly(run_dir, retry_wait=3600)
    wait_for_line(run_dir / "log.txt", "3 train", loop)
    children = subprocess.run(["pgrep", "-P", str(loop.pid)], capture_output=True, text=True).stdout.split()
    for pid in children:
        os.kill(int(pid), signal.SIGTERM)
    out, err = loop.communicate(timeout=300)  # a retry wait of an hour would time this out
    assert loop.returncode == 0, out + err
    record = (run_dir / "nightly.log").read_text()
    assert "with a checkpoint; resuming at once" in record and "failed with exit status" not in record
    assert record.count("start:") == 2 and "finished: the run is complete" in record
    assert ckpt.verify(run_dir / "model_00010.pt") is None


@pytest.mark.long
def test_sigterm_to_the_nightly_loop_saves_and_stops_it(tmp_path):
    run_dir = tmp_path / "run"
    loop = nightly(run_dir, retry_wait=0)
    wait_for_line(run_dir / "log.txt", "5 train", loop)
    loop.send_signal(signal.SIGTERM)
    out, err = loop.communicate(timeout=120)
    assert loop.returncode == 143, out + err
    record = (run_dir / "nightly.log").read_text()
    assert "received SIGTERM" in record and "run the same command to continue" in record
    assert record.count("start:") == 1 and not (run_dir / "nightly.lock").exists()
    saved = ckpt.list_checkpoints(run_dir)[0]
    assert int(ckpt.NAME.fullmatch(saved.name).group(1)) >= 6 and ckpt.verify(saved) is None
