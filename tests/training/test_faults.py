"""Crash recovery as it happens: SIGKILL at random moments, train_nightly.sh's loop and lock."""

import os
import random
import signal
import subprocess
import sys
import time

import torch

from gptlab.paths import REPO_ROOT
from gptlab.training import checkpoint as ckpt

ARGS = [str(REPO_ROOT / "train.py"), "--preset", "smoke", "--max-steps", "24", "train.eval_interval=2",
        "train.num_samples=0", "train.hellaswag=false", "model.dropout=0.1"]


def test_run_killed_again_and_again_ends_with_the_uninterrupted_weights(tmp_path, capsys):
    reference = subprocess.run([sys.executable, *ARGS, "--log-dir", str(tmp_path / "ref")], capture_output=True,
                               text=True, timeout=300)
    assert reference.returncode == 0, reference.stderr
    run_dir, rng = tmp_path / "run", random.Random(20261124)
    kills = kills_in_save = attempts = 0
    while True:
        attempts += 1
        assert attempts < 40, f"the run did not finish: {kills} kills"
        proc = subprocess.Popen([sys.executable, *ARGS, "--log-dir", str(run_dir), "--resume", "auto"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        if kills >= 5 and kills_in_save >= 1:
            _, err = proc.communicate(timeout=300)
            assert proc.returncode == 0, err
            break
        in_save = False
        if kills >= 2 and kills_in_save == 0:  # wait for a checkpoint write to begin, then kill it
            deadline = time.time() + 60
            while proc.poll() is None and time.time() < deadline and not in_save:
                in_save = any(run_dir.glob(".model_*.pt.tmp*"))
                time.sleep(0.001)
        else:
            time.sleep(rng.uniform(0.5, 6.0))
        if proc.poll() is not None:  # it finished first; start again and kill later
            assert proc.returncode == 0, proc.stderr.read()
            break
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        kills += 1
        kills_in_save += in_save
        if in_save:  # the kill left a partial file behind, which resume must not take for a checkpoint
            assert ckpt.latest_checkpoint(run_dir) is None or ckpt.verify(ckpt.latest_checkpoint(run_dir)) is None
    assert kills >= 5 and kills_in_save >= 1, (kills, kills_in_save)
    final, expected = (torch.load(d / "model_00024.pt", weights_only=True) for d in (run_dir, tmp_path / "ref"))
    for name, tensor in expected["model"].items():
        assert torch.equal(final["model"][name], tensor), name
    with capsys.disabled():
        print(f"\nfault test: survived {kills} SIGKILLs ({kills_in_save} during a checkpoint write), "
              f"final weights bitwise equal to the uninterrupted run")


def nightly(tmp_path, *args, env_extra=None, **kwargs):
    env = {**os.environ, "PYTHON": sys.executable, "RETRY_WAIT": "0", "NPROC": "1",
           "LOG_DIR": str(tmp_path / "run"), **(env_extra or {})}
    return subprocess.Popen(["bash", str(REPO_ROOT / "train_nightly.sh"), *args], env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, **kwargs)


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


def test_nightly_stops_at_once_on_a_bad_command(tmp_path):
    loop = nightly(tmp_path, env_extra={"EXPERIMENT": "ropee"})
    out, err = loop.communicate(timeout=120)
    assert loop.returncode == 2 and "no experiment named 'ropee'" in err
    assert "train.py refused the command" in (tmp_path / "run" / "nightly.log").read_text()


def test_nightly_help_explains_it():
    out = subprocess.run(["bash", str(REPO_ROOT / "train_nightly.sh"), "--help"], capture_output=True, text=True).stdout
    for word in ("EXPERIMENT", "NPROC", "TRAIN_ARGS", "MAX_RETRIES", "nightly.log", "--resume auto"):
        assert word in out
