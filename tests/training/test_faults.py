"""Crash recovery as it happens: SIGKILL at random moments, train_nightly.sh's loop and lock."""

import hashlib
import os
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest
import torch

from gptlab.paths import REPO_ROOT
from gptlab.training import checkpoint as ckpt

ARGS = [str(REPO_ROOT / "train.py"), "--preset", "smoke", "--max-steps", "24", "train.eval_interval=2",
        "train.num_samples=0", "train.hellaswag=false", "model.dropout=0.1"]


def wait_for(condition, proc, what: str, timeout: float = 120.0) -> None:
    deadline = time.time() + timeout
    while not condition():
        assert proc.poll() is None, f"the run ended before {what}: {proc.stderr.read()}"
        assert time.time() < deadline, f"no {what} within {timeout}s"
        time.sleep(0.001)


def new_log_text(log: Path, offset: int) -> str:
    return log.read_bytes()[offset:].decode(errors="replace") if log.exists() else ""


def complete_checkpoints(run_dir: Path) -> list[Path]:
    """Checkpoints whose bytes hash to their marker, computed here with hashlib."""
    found = []
    for path in run_dir.glob("model_*.pt"):
        marker = path.with_name(path.name + ".sha256")
        if marker.exists() and hashlib.sha256(path.read_bytes()).hexdigest() == marker.read_text().split()[0]:
            found.append(path)
    return sorted(found)


@pytest.mark.long
def test_run_killed_again_and_again_ends_with_the_uninterrupted_weights(tmp_path, capsys, one_thread):
    reference = subprocess.run([sys.executable, *ARGS, "--log-dir", str(tmp_path / "ref")], capture_output=True,
                               text=True, timeout=300)
    assert reference.returncode == 0, reference.stderr
    run_dir, log = tmp_path / "run", tmp_path / "run" / "log.txt"
    # each kill waits until the run has got somewhere (a step's loss, or a checkpoint write under
    # way), so however fast the machine, no attempt can finish before its kill
    for event in ["3 train", "7 train", "saving", "13 train", "17 train", "21 train"]:
        offset = log.stat().st_size if log.exists() else 0
        proc = subprocess.Popen([sys.executable, *ARGS, "--log-dir", str(run_dir), "--resume", "auto"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        if event == "saving":
            wait_for(lambda: any(run_dir.glob(".model_*.pt.tmp*")), proc, "checkpoint write")
        else:
            wait_for(lambda: f"\n{event} " in new_log_text(log, offset), proc, f"line '{event}'")
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        if event == "saving":  # half a file is left behind, and resume must not take it for a checkpoint
            assert any(run_dir.glob(".model_*.pt.tmp*"))
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                assert ckpt.latest_checkpoint(run_dir) == complete_checkpoints(run_dir)[-1]
    final = subprocess.run([sys.executable, *ARGS, "--log-dir", str(run_dir), "--resume", "auto"],
                           capture_output=True, text=True, timeout=300)
    assert final.returncode == 0, final.stderr
    assert not any(run_dir.glob(".model_*.pt.tmp*"))  # the finished run cleared what the kill left
    got, expected = (torch.load(d / "model_00024.pt", weights_only=True) for d in (run_dir, tmp_path / "ref"))
    for name, tensor in expected["model"].items():
        assert torch.equal(got["model"][name], tensor), name
    with capsys.disabled():
        print("\nfault test: survived 6 SIGKILLs (1 during a checkpoint write), final weights bitwise equal "
              "to the uninterrupted run")


def nightly(tmp_path, *args, env_extra=None, **kwargs):
    env = {**os.environ, "PYTHON": sys.executable, "RETRY_WAIT": "0", "NPROC": "1",
           "LOG_DIR": str(tmp_path / "run"), **(env_extra or {})}
    return subprocess.Popen(["bash", str(REPO_ROOT / "train_nightly.sh"), *args], env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, **kwargs)


@pytest.mark.long
def test_nightly_loop_resumes_after_its_training_process_is_killed(tmp_path):
    loop = nightly(tmp_path, "--preset", "smoke", "--max-steps", "12", "train.eval_interval=3",
                   "train.num_samples=0", "train.hellaswag=false")
    run_dir = tmp_path / "run"
    deadline = time.time() + 120
    while not (run_dir / "model_00003.pt.sha256").exists():
        assert time.time() < deadline and loop.poll() is None
        time.sleep(0.05)
    children = subprocess.run(["pgrep", "-P", str(loop.pid)], capture_output=True, text=True).stdout.split()
    for pid in children:
        os.kill(int(pid), signal.SIGKILL)
    out, err = loop.communicate(timeout=300)
    assert loop.returncode == 0, out + err
    record = (run_dir / "nightly.log").read_text()
    assert "failed with exit status" in record and "finished: the run is complete" in record
    assert record.count("start:") == 2 and "--resume auto" in record
    assert ckpt.verify(run_dir / "model_00012.pt") is None


def test_nightly_lock_keeps_a_second_loop_off_the_run(tmp_path):
    lock = tmp_path / "run" / "nightly.lock"
    lock.mkdir(parents=True)
    (lock / "pid").write_text(str(os.getpid()))  # a live process holds it
    second = nightly(tmp_path)
    out, err = second.communicate(timeout=60)
    assert second.returncode == 2 and "already running" in err
    assert lock.exists()


@pytest.mark.slow
def test_nightly_stops_at_once_on_a_bad_command(tmp_path):
    loop = nightly(tmp_path, env_extra={"EXPERIMENT": "ropee"})
    out, err = loop.communicate(timeout=120)
    assert loop.returncode == 2 and "no experiment named 'ropee'" in err
    assert "train.py refused the command" in (tmp_path / "run" / "nightly.log").read_text()


def test_nightly_help_explains_it():
    out = subprocess.run(["bash", str(REPO_ROOT / "train_nightly.sh"), "--help"], capture_output=True, text=True).stdout
    for word in ("EXPERIMENT", "NPROC", "TRAIN_ARGS", "MAX_RETRIES", "nightly.log", "--resume auto"):
        assert word in out


@pytest.mark.slow
def test_nightly_sees_a_refusal_through_torchrun(tmp_path):
    loop = nightly(tmp_path, env_extra={"EXPERIMENT": "ropee", "NPROC": "2"})
    out, err = loop.communicate(timeout=120)
    record = (tmp_path / "run" / "nightly.log").read_text()
    assert loop.returncode == 2 and "train.py refused the command (exit status 1)" in record, record
    assert record.count("start:") == 1


@pytest.mark.long
def test_nightly_says_a_stop_at_run_stopped_not_completed(tmp_path):
    loop = nightly(tmp_path, "--preset", "smoke", "--max-steps", "6", "train.stop_at=2", "train.num_samples=0",
                   "train.hellaswag=false")
    out, err = loop.communicate(timeout=300)
    record = (tmp_path / "run" / "nightly.log").read_text()
    assert loop.returncode == 0 and "stopped at its train.stop_at" in record and "complete" not in record
