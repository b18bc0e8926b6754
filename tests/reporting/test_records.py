"""The record of a run, read from its log: resumed segments, skipped evaluations, incomplete runs."""

import json

import pytest

from gptlab.files import DirectoryLock
from gptlab.training.record import RunRecord, read_record, summarize
from tests.reporting.runs import fake_run


def test_a_complete_run_is_summarised_from_its_log(tmp_path):
    run = fake_run(tmp_path / "r", vals=(10.8, 7.5, 7.1), hellas=(0.24, 0.26, 0.27))
    record = summarize(run / "log.txt")
    assert record["status"] == "complete" and record["step"] == 50 and record["tokens"] == 50 * 524288
    assert (record["val_loss"], record["val_step"], record["val_loss_best"]) == (7.1, 50, 7.1)
    assert (record["hellaswag_acc_norm"], record["hellaswag_acc"], record["hellaswag_step"]) == (0.27, 0.26, 50)
    assert record["tok_per_sec"] == 1000 + 25.5  # median of the steps after the first two
    assert record["experiment"] == "baseline" and record["seed"] == 1337 and record["params_non_embedding"] == 600


def test_a_resumed_log_counts_each_step_once_and_drops_a_replaced_attempts_steps(tmp_path):
    # a run reached step 30, was resumed from its step-25 checkpoint, and repeated 25-29 with other values
    run = fake_run(tmp_path / "r", vals=(10.8, 7.5), steps=30,
                   extra_lines=["# run resumed", *[f"{s} train {5.0:.6f}" for s in range(25, 28)],
                                "25 val 7.400000"])
    record = summarize(run / "log.txt", step=28)  # the live run knows it has done 28 steps
    assert record["step"] == 28 and record["val_loss"] == 7.4 and record["val_loss_best"] == 7.4
    assert record["status"] == "stopped"


def test_skipped_hellaswag_and_a_best_earlier_than_the_final(tmp_path):
    run = fake_run(tmp_path / "r", vals=(10.8, 7.0, 7.2))
    record = summarize(run / "log.txt")
    assert record["hellaswag_acc_norm"] is None and record["val_loss"] == 7.2 and record["val_loss_best"] == 7.0


def test_an_incomplete_run_without_a_final_evaluation(tmp_path):
    record = summarize(fake_run(tmp_path / "r", vals=(10.8,), steps=12) / "log.txt")
    assert record["status"] == "stopped" and record["step"] == 12 and record["val_step"] == 0


def test_a_running_record_whose_process_is_gone_reads_as_stopped(tmp_path):
    run = fake_run(tmp_path / "r", vals=(10.8,), steps=12, status="running")
    assert read_record(run)["status"] == "stopped"
    lock = DirectoryLock(run)
    assert lock.acquire()
    try:
        assert read_record(run)["status"] == "running"
    finally:
        lock.release()


def test_a_log_without_a_record_is_read_from_the_log(tmp_path):
    run = fake_run(tmp_path / "r", vals=(10.8, 7.5, 7.1))
    record = read_record(run)
    assert record["status"] == "complete" and "no run.json" in record["status_why"]
    assert read_record(tmp_path / "empty") is None


def test_the_live_record_keeps_what_other_tools_wrote(tmp_path, monkeypatch):
    run = fake_run(tmp_path / "r", vals=(10.8,), steps=3, status="running")
    data = json.loads((run / "run.json").read_text())
    (run / "run.json").write_text(json.dumps({**data, "lengths": {"losses": {"2": 7.0}}}))
    monkeypatch.setenv("GPTLAB_STUDY", json.dumps({"name": "s", "baseline": "baseline"}))
    RunRecord(run).update(3, "failed", "boom")
    written = json.loads((run / "run.json").read_text())
    assert written["status"] == "failed" and written["status_why"] == "boom"
    assert written["lengths"] == {"losses": {"2": 7.0}} and written["study"]["name"] == "s"


@pytest.mark.long
def test_a_training_run_keeps_its_record_current(tmp_path):
    import subprocess
    import sys
    log_dir = tmp_path / "run"
    result = subprocess.run([sys.executable, "train.py", "--experiment", "gqa", "--preset", "smoke", "--log-dir",
                             str(log_dir), "--max-steps", "4", "train.eval_interval=2", "train.hellaswag=false",
                             "train.num_samples=0", "train.stop_at=2"], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    record = json.loads((log_dir / "run.json").read_text())
    assert record["status"] == "stopped" and "stop_at" in record["status_why"] and record["step"] == 2
    assert record["classes"]["attention_class"].endswith("GQAAttention") and record["kv_cache_bytes_per_token"] == 256
    assert record["flops_per_token"] > 0 and record["mfu"] is None and record["peak_flops"] is None
    assert record["dtype"] == "float32" and record["world_size"] == 1 and record["device"] == "cpu"
    result = subprocess.run([sys.executable, "train.py", "--experiment", "gqa", "--preset", "smoke", "--log-dir",
                             str(log_dir), "--max-steps", "4", "train.eval_interval=2", "train.hellaswag=false",
                             "train.num_samples=0", "--resume"], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    record = json.loads((log_dir / "run.json").read_text())
    assert record["status"] == "complete" and record["step"] == 4 and record["val_step"] == 4
