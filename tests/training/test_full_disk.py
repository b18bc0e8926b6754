"""A full disk, met at every write a run or a preparation makes: one error that says the disk is
full (with the space free and needed), nothing half-written taken for whole, a failure told from a
refusal, and a study that stops launching runs into it. Each on a real tmpfs that fills up."""

import json
import subprocess
import sys

import numpy as np
import pytest

from gptlab.files import DirectoryLock, disk_full, write_failure
from gptlab.paths import REPO_ROOT
from gptlab.training.logger import RunLog, read_log
from tests.conftest import fill

SMOKE = ["--preset", "smoke", "train.num_samples=0", "train.hellaswag=false"]


def run(*args, env=None, **kwargs):
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, cwd=REPO_ROOT, timeout=300,
                          env=env, **kwargs)


def test_a_log_line_cut_short_by_a_full_disk_is_not_continued_by_the_next(small_disk):
    disk = small_disk(1 << 20)
    log = RunLog(disk)
    log.record(0, "train", 10.0)
    fill(disk, leave=20)
    with pytest.raises(OSError) as error:
        log.header("sources", "x" * 100_000)
    assert disk_full(error.value, disk)
    (disk / "filler").unlink()
    RunLog(disk).record(1, "train", 9.0)  # the next run (a resume) starts on a line of its own
    assert read_log(disk / "log.txt")["train"] == [(0, 10.0), (1, 9.0)]
    assert (disk / "log.txt").read_text().endswith("\n1 train 9.000000\n")


def test_the_lock_is_taken_on_a_full_disk(small_disk):
    disk = small_disk(1 << 20)
    fill(disk)
    lock = DirectoryLock(disk)
    assert lock.acquire() and lock.held()
    lock.release()
    assert not lock.held()


def test_a_run_that_trained_and_could_not_save_failed_and_says_the_disk_is_full(small_disk):
    """The smoke model's checkpoint needs about 38 MiB; the disk holds 20: training goes on to step 2,
    the save fails, the run exits 1 (failed, not 2: refused) and its status file says why."""
    disk = small_disk(20 << 20)
    status = disk / ".exit_status"
    result = run("train.py", "--experiment", "baseline", "--log-dir", str(disk / "run"), "--max-steps", "4",
                 "train.eval_interval=2", *SMOKE, env={**__import__("os").environ, "GPTLAB_STATUS_FILE": str(status)})
    assert result.returncode == 1, result.stderr
    assert result.stderr.count("error:") == 1 and "Traceback" not in result.stderr
    assert "could not write checkpoint" in result.stderr and "is full" in result.stderr
    assert "MiB needed" in result.stderr and "inline_container" not in result.stderr
    assert status.read_text().strip() == "failed: disk full"
    assert json.loads((disk / "run" / "run.json").read_text())["status"] == "failed"
    assert not list((disk / "run").glob("model_*")) and not list((disk / "run").glob(".model_*"))


def test_prepare_on_a_full_disk_says_so_and_keeps_what_it_wrote(small_disk, tmp_path):
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text("".join(json.dumps({"text": f"document {i} " + "word " * 400}) + "\n" for i in range(400)))
    disk = small_disk(200_000)
    result = run("-m", "gptlab", "prepare", "--input", str(corpus), "--out", str(disk / "data"), "--shard-size",
                 "50000", "--workers", "1")
    assert result.returncode == 1, result.stdout + result.stderr
    assert "is full" in result.stderr and "Traceback" not in result.stderr and result.stderr.count("error:") == 1
    assert "rerun the same command to continue" in result.stderr


def test_write_failure_names_the_reason_without_library_internals(tmp_path):
    import errno
    full = OSError(errno.ENOSPC, "No space left on device")
    assert disk_full(full, tmp_path) and "is full" in write_failure(full, tmp_path)
    torn = RuntimeError("[enforce fail at inline_container.cc:672] . PytorchStreamWriter failed writing file")
    assert not disk_full(torn, tmp_path, needed=1000)  # plenty of space here: not a full disk
    assert write_failure(torn, tmp_path, needed=1000) == "the write failed (RuntimeError)"
    assert "is full" in write_failure(torn, tmp_path, needed=np.iinfo(np.int64).max)  # more than there is
