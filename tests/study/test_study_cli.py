import json
import os
import signal
import subprocess
import sys
import time

import pytest

from gptlab.paths import REPO_ROOT
from gptlab.study.cli import main

TINY = ["--preset", "smoke", "train.max_steps=6", "train.eval_interval=3", "train.hellaswag=false",
        "train.num_samples=0"]


def wait_for_step(log, step: int, timeout: float = 120) -> None:
    """Until a run's log.txt holds the loss of `step` (the run got that far)."""
    deadline = time.time() + timeout
    while time.time() < deadline and not (log.is_file() and f"\n{step} train" in log.read_text()):
        time.sleep(0.2)


def study(*args, **kwargs):
    return subprocess.run([sys.executable, "-m", "gptlab.study", *args], capture_output=True, text=True,
                          cwd=REPO_ROOT, **kwargs)


def test_an_unfair_study_is_refused_before_anything_trains(tmp_path, capsys):
    exp = tmp_path / "hot.py"
    exp.write_text("from gptlab import TrainingConfig\nTRAINING_CONFIG = TrainingConfig(hellaswag_limit=7)\n")
    assert main(["--experiments", "baseline", str(exp), "--out", str(tmp_path / "runs"), "--preset", "gpt2"]) == 2
    err = capsys.readouterr().err
    assert "hot changes train.hellaswag_limit (0 -> 7)" in err and "--allow-unfair" in err
    assert not (tmp_path / "runs").exists()


def test_a_study_needs_experiments_and_parallel_needs_gpus(tmp_path, capsys):
    assert main(["--out", str(tmp_path)]) == 2
    assert "name a study file" in capsys.readouterr().err
    assert main(["--experiments", "baseline", "--parallel", "--out", str(tmp_path), *TINY]) == 2
    assert "--parallel puts one run on each GPU" in capsys.readouterr().err


def test_the_plan_names_each_variants_change_and_an_override_one_optimizer_ignores_is_an_error(tmp_path, capsys):
    out = str(tmp_path / "runs")
    assert main(["--experiments", "baseline", "muon", "mla", "--seeds", "3", "--lr-sweep", "0.5,1,2", "--launcher",
                 "slurm", "--dry-run", "--out", out, *TINY]) == 0
    printed = capsys.readouterr().out
    # what the experiment changes, not what a sweep point's multiplier does to its rates
    assert "  muon: optimizer AdamW -> Muon\n" in printed
    assert "  mla: attention BaseAttention -> MLAAttention, position_encoding LearnedPositionEncoding -> RoPE" in printed
    assert main(["--experiments", "baseline", "muon", "--seeds", "3", "--out", out, *TINY, "train.muon_lr=0.015"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: experiment 'baseline' of study study cannot run: the optimizer AdamW cannot run")
    assert "belongs in that experiment's file" in err and "Traceback" not in err
    assert not (tmp_path / "runs").exists()
    with pytest.raises(SystemExit):  # an empty sweep is a mistake, not "no sweep"
        main(["--experiments", "baseline", "rope", "--lr-sweep=,", "--out", out, *TINY])
    assert "',' is not a comma-separated list of multipliers" in capsys.readouterr().err


@pytest.mark.long
def test_a_study_trains_reports_and_skips_what_is_complete(tmp_path):
    out = tmp_path / "study"
    result = study("--experiments", "baseline", "rope", "--seeds", "2", "--out", str(out), *TINY)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count(": complete in ") == 4
    table = [line for line in result.stdout.splitlines() if line.startswith("| rope")]
    assert len(table) == 1 and "1337, 1338" in table[0] and "not tested: 2 and 2 seeds" in table[0]
    for name in ("report.md", "report.csv", "report.json", "study_curves.png", "study_deltas.png", "study.json"):
        assert (out / name).is_file(), name
    record = json.loads((out / "rope" / "seed1338" / "run.json").read_text())
    assert record["status"] == "complete" and record["seed"] == 1338
    assert record["study"]["differs"]["position_encoding_class"][1].endswith("RoPE")
    again = study("--experiments", "baseline", "rope", "--seeds", "2", "--out", str(out), *TINY)
    assert again.returncode == 0 and again.stdout.count("complete, skipped") == 4


@pytest.mark.long
def test_a_stopped_study_continues_where_it_stopped_with_the_same_numbers(tmp_path, one_thread):
    out = tmp_path / "study"
    args = [sys.executable, "-m", "gptlab.study", "--experiments", "rope", "--seeds", "2", "--out", str(out), *TINY,
            "train.max_steps=12"]
    process = subprocess.Popen(args, cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    log = out / "rope" / "seed1337" / "log.txt"
    wait_for_step(log, 4)
    process.send_signal(signal.SIGTERM)
    stdout, _ = process.communicate(timeout=120)
    assert process.returncode == 3, stdout
    assert "preempted" in stdout and "the same command continues it" in stdout
    assert not (out / "rope" / "seed1338").exists()  # no new run started
    result = subprocess.run(args, cwd=REPO_ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "rope seed1337: training, resuming from model_" in result.stdout
    # the same run, never stopped
    plain = tmp_path / "plain"
    subprocess.run([sys.executable, "train.py", "--experiment", "rope", "--seed", "1337", "--log-dir", str(plain),
                    *TINY, "train.max_steps=12"], cwd=REPO_ROOT, check=True, capture_output=True, env={**os.environ})
    stopped = json.loads((out / "rope" / "seed1337" / "run.json").read_text())
    uninterrupted = json.loads((plain / "run.json").read_text())
    assert stopped["val_loss"] == uninterrupted["val_loss"] and stopped["status"] == "complete"


@pytest.mark.long
def test_a_sweep_study_killed_and_restarted_ends_with_the_numbers_of_one_never_stopped(tmp_path, one_thread):
    """--lr-sweep: the sweep, the seeds at the shared rate and the seeds at each tuned rate; SIGTERM in the middle
    of the sweep, the same command again, and every run's final val loss equals an uninterrupted study's."""
    sweep = ["--experiments", "baseline", "rope", "--seeds", "2", "--lr-sweep", "0.5,1,2", *TINY]
    killed, whole = tmp_path / "killed", tmp_path / "whole"
    args = [sys.executable, "-m", "gptlab.study", *sweep, "--out", str(killed)]
    process = subprocess.Popen(args, cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    log = killed / "baseline" / "lr2" / "seed1337" / "log.txt"
    wait_for_step(log, 2, timeout=180)
    process.send_signal(signal.SIGTERM)
    stdout, _ = process.communicate(timeout=120)
    assert process.returncode == 3, stdout
    again = subprocess.run(args, cwd=REPO_ROOT, capture_output=True, text=True)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "baseline lr x2 seed1337: training, resuming from model_" in again.stdout
    assert "at each experiment's tuned learning rate" in again.stdout
    assert "rope: " in again.stdout and "its seeds train at x" in again.stdout and " (max_lr 0.0" in again.stdout
    result = study(*sweep, "--out", str(whole))
    assert result.returncode == 0, result.stdout + result.stderr

    def finals(root):
        return {str(p.parent.relative_to(root)): json.loads(p.read_text())["val_loss"] for p in root.rglob("run.json")}
    assert finals(killed) == finals(whole) and len(finals(whole)) >= 8  # 6 sweep points, seed 1338, tuned seeds
    report = json.loads((killed / "report.json").read_text())
    assert [t["kind"] for t in report] == ["shared", "tuned"]
    tuned = report[1]
    assert set(tuned["lr_sweep"]) == {"baseline", "rope"} and all(r["lr_multiplier"] for r in tuned["rows"])
    for name in ("study_curves.png", "study_curves_tuned.png", "study_lr.png"):
        assert (killed / name).is_file(), name
    assert "Learning-rate sweep (the first seed" in again.stdout


def test_a_sigterm_as_a_run_is_launched_stops_it_without_calling_it_failed(tmp_path):
    process = subprocess.Popen([sys.executable, "-m", "gptlab.study", "--experiments", "baseline", "--out",
                                str(tmp_path), *TINY], cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               text=True)
    seen = ""
    while ": training" not in seen:
        line = process.stdout.readline()
        assert line, seen
        seen += line
    process.send_signal(signal.SIGTERM)  # the run's process is starting Python: it has no handler yet
    seen += process.communicate(timeout=120)[0]
    assert process.returncode == 3, seen
    assert "failed (exit status" not in seen and ("stopped as it started" in seen or "preempted" in seen), seen
    assert "complete in" not in seen  # asked to stop, it did not train to the end


@pytest.mark.long
def test_a_study_stops_launching_runs_into_a_full_disk(small_disk):
    disk = small_disk(20 << 20)  # the smoke model's first checkpoint needs about 38 MiB
    result = study("--experiments", "baseline", "rope", "--out", str(disk), *TINY)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "baseline seed1337: failed: disk full" in result.stdout
    assert "the disk is full: no further run starts" in result.stdout
    assert "rope seed1337: training" not in result.stdout


def test_a_directory_holding_runs_of_other_settings_is_refused(tmp_path, capsys):
    from tests.reporting.runs import fake_run
    fake_run(tmp_path / "rope" / "seed1337", "rope", vals=(10.8,), steps=4, max_steps=4, status="complete")
    assert main(["--experiments", "rope", "--out", str(tmp_path), *TINY]) == 2
    err = capsys.readouterr().err
    assert "holds a run of other settings" in err and "give this study its own --out" in err


def test_overrides_after_the_experiments_are_overrides(tmp_path, capsys):
    exp = tmp_path / "hot.py"
    exp.write_text("from gptlab import TrainingConfig\nTRAINING_CONFIG = TrainingConfig(hellaswag_limit=7)\n")
    assert main(["--out", str(tmp_path / "r"), "--preset", "gpt2", "--experiments", "baseline", str(exp),
                 "train.max_steps=4"]) == 2
    err = capsys.readouterr().err
    assert "hot changes train.hellaswag_limit" in err and "not a plain name" not in err


def test_another_study_on_the_same_directory_is_refused(tmp_path, capsys):
    from gptlab.files import DirectoryLock
    lock = DirectoryLock(tmp_path)
    assert lock.acquire()
    try:
        assert main(["--experiments", "baseline", "--out", str(tmp_path), *TINY]) == 2
    finally:
        lock.release()
    assert "is in use by another study" in capsys.readouterr().err


@pytest.mark.long
def test_a_killed_study_takes_its_run_with_it_and_a_restart_continues_it(tmp_path, one_thread):
    """SIGKILL the study (the OOM killer, a closed multiplexer): its live run gets SIGTERM from the kernel
    (parent-death signal), saves a checkpoint and ends; the same command then resumes it, and the run
    ends with the numbers of one never stopped."""
    args = [sys.executable, "-m", "gptlab.study", "--experiments", "rope", "--out", str(tmp_path / "s"), *TINY,
            "train.max_steps=12"]
    process = subprocess.Popen(args, cwd=REPO_ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    log = tmp_path / "s" / "rope" / "seed1337" / "log.txt"
    wait_for_step(log, 4)
    process.kill()
    process.wait()
    from gptlab.files import DirectoryLock
    lock = DirectoryLock(log.parent)
    deadline = time.time() + 60
    while lock.held() and time.time() < deadline:  # the orphan saves and stops on its own
        time.sleep(0.2)
    assert not lock.held(), "the run kept training after its study was killed"
    record = json.loads((log.parent / "run.json").read_text())
    assert record["status"] == "stopped" and "preempted" in record.get("status_why", "")
    again = subprocess.run(args, cwd=REPO_ROOT, capture_output=True, text=True)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "rope seed1337: training, resuming from model_" in again.stdout
    plain = tmp_path / "plain"
    subprocess.run([sys.executable, "train.py", "--experiment", "rope", "--seed", "1337", "--log-dir", str(plain),
                    *TINY, "train.max_steps=12"], cwd=REPO_ROOT, check=True, capture_output=True)
    assert json.loads((log.parent / "run.json").read_text())["val_loss"] == json.loads(
        (plain / "run.json").read_text())["val_loss"]


@pytest.mark.long
def test_a_restarted_study_waits_for_its_run_still_alive_instead_of_failing_it(tmp_path):
    from gptlab.files import DirectoryLock
    run_dir = tmp_path / "rope" / "seed1337"
    run_dir.mkdir(parents=True)
    survivor = DirectoryLock(run_dir)  # stands for the run an earlier study process left training
    assert survivor.acquire()
    process = subprocess.Popen([sys.executable, "-m", "gptlab.study", "--experiments", "rope", "--out", str(tmp_path),
                                *TINY, "train.max_steps=2"], cwd=REPO_ROOT, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)
    seen = ""
    while "waiting for it to end" not in seen:
        line = process.stdout.readline()
        assert line, seen
        seen += line
    time.sleep(1)
    assert process.poll() is None  # it waits; it neither trains beside it nor calls it failed
    survivor.release()
    seen += process.communicate(timeout=120)[0]
    assert process.returncode == 0, seen
    assert "failed" not in seen.split("waiting for it to end")[1] and "rope seed1337: complete in" in seen


@pytest.mark.long
def test_a_closed_terminal_stops_the_study_as_sigterm_does(tmp_path):
    args = [sys.executable, "-m", "gptlab.study", "--experiments", "rope", "--out", str(tmp_path), *TINY,
            "train.max_steps=12"]
    process = subprocess.Popen(args, cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    log = tmp_path / "rope" / "seed1337" / "log.txt"
    wait_for_step(log, 4)
    process.send_signal(signal.SIGHUP)
    process.communicate(timeout=120)
    assert process.returncode == 3
    said = (tmp_path / "study.out").read_text()  # the terminal was gone: what it would have shown
    assert "SIGHUP: asking each run to save a checkpoint" in said and "preempted" in said
    assert list((tmp_path / "rope" / "seed1337").glob("model_*.pt"))
