"""Studies on SLURM: the sbatch script and the manifest (default tier), and, on a real one-node
cluster (`eval "$(bash tools/slurm_cluster.sh up)"`, then `pytest -m slurm`), a study submitted as a
job array that ends with the numbers of the same study run locally, through a requeue in the
middle of a run, a run that fails for its own reasons, resubmission and `gptlab status`."""

import contextlib
import io
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from gptlab.paths import REPO_ROOT
from gptlab.study.slurm import (SlurmError, SlurmOptions, code_changes, code_fingerprint, ranges, run_task,
                                time_limit_seconds)

TINY = ["--preset", "smoke", "train.max_steps=6", "train.eval_interval=3", "train.hellaswag=false",
        "train.num_samples=0"]


def study(*args, **kwargs):
    return subprocess.run([sys.executable, "-m", "gptlab.study", *args], capture_output=True, text=True,
                          cwd=REPO_ROOT, timeout=300, **kwargs)


def status(*args) -> subprocess.CompletedProcess:
    """`gptlab status ARGS` in this process (what it prints captured): the command reads files and asks SLURM,
    and a fresh interpreter a call costs a second and a half of imports."""
    from gptlab.cli import main
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(["status", *map(str, args)])
        except SystemExit as exit_:
            code = exit_.code
    return subprocess.CompletedProcess(["gptlab", "status", *args], code, out.getvalue(), err.getvalue())


def gptlab_status(root) -> dict[str, str]:
    """Each run's status as `gptlab status --json` gives it, from a fresh process (as a user runs it while the
    cluster changes: the cluster tests read it again and again)."""
    out = subprocess.run([sys.executable, "-m", "gptlab", "status", str(root), "--json"], capture_output=True,
                         text=True, cwd=REPO_ROOT, timeout=120)
    assert out.returncode == 0, out.stderr
    return {f"{r['experiment']} {r['seed']}": r for r in json.loads(out.stdout)}


# ---- without a cluster

def test_the_sbatch_script_of_a_two_node_eight_gpu_study(tmp_path):
    result = study("--experiments", "baseline", "rope", "--seeds", "2", "--out", str(tmp_path), *TINY,
                   "--launcher", "slurm", "--dry-run", "--slurm", "nodes=2", "gpus_per_node=8", "partition=gpu",
                   "account=lab", "qos=high", "time=1-00:00:00", "cpus_per_task=32", "mem=480G", "max_parallel=2",
                   "sbatch=--constraint=h100", "setup=module load cuda/12.4", "setup=source ~/venv/bin/activate")
    assert result.returncode == 0, result.stderr
    script = result.stdout
    for line in ("#SBATCH --array=0-3%2", "#SBATCH --nodes=2", "#SBATCH --gpus-per-node=8", "#SBATCH --partition=gpu",
                 "#SBATCH --account=lab", "#SBATCH --qos=high", "#SBATCH --time=1-00:00:00",
                 "#SBATCH --cpus-per-task=32", "#SBATCH --mem=480G", "#SBATCH --requeue",
                 "#SBATCH --signal=B:USR1@300", "#SBATCH --constraint=h100", "module load cuda/12.4",
                 "source ~/venv/bin/activate", "exec python -m gptlab.study.slurm task"):
        assert line in script, line
    # a run of 2 nodes x 8 GPUs: torchrun on each node under srun with the task's CPUs (srun 22.05-23.02 does not
    # inherit --cpus-per-task), rendezvous on the first node at a port of the job's own
    assert "srun --kill-on-bad-exit=1 --nodes=2 --ntasks-per-node=1 '--cpus-per-task=${SLURM_CPUS_PER_TASK}' python " \
           "-m torch.distributed.run --nnodes=2 --nproc_per_node=8 --rdzv_backend=c10d " \
           "'--rdzv_endpoint=${MASTER_ADDR}:${MASTER_PORT}'" in script
    assert 'MASTER_ADDR="$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)"' in script
    assert "export MASTER_PORT=$(( 29500 + SLURM_JOB_ID % 10000 ))" in script
    assert "nothing was submitted" in script and not (tmp_path / "slurm").exists()


def test_a_script_asks_for_cpus_and_memory_by_default_and_one_node_needs_no_srun(tmp_path):
    """No CPUs asked for let eight ranks share one core under cgroups; no memory, the partition's default."""
    result = study("--experiments", "baseline", "--out", str(tmp_path), *TINY, "--launcher", "slurm", "--dry-run",
                   "--slurm", "gpus_per_node=8")
    assert result.returncode == 0, result.stderr
    assert "#SBATCH --cpus-per-task=32" in result.stdout and "#SBATCH --mem-per-cpu=8G" in result.stdout
    # one node: torchrun itself, which passes the task's signals to its processes; no srun, no fixed port
    assert f"python -m torch.distributed.run --standalone --nproc_per_node=8 {REPO_ROOT / 'train.py'}" in result.stdout
    assert "srun" not in result.stdout and "MASTER_PORT" not in result.stdout
    result = study("--experiments", "baseline", "--out", str(tmp_path), *TINY, "--launcher", "slurm", "--dry-run")
    assert "#SBATCH --cpus-per-task=1" in result.stdout and "--no-launch" in result.stdout  # a CPU run


def test_a_time_limit_that_leaves_little_training_is_warned_about(tmp_path):
    result = study("--experiments", "baseline", "--out", str(tmp_path), *TINY, "--launcher", "slurm", "--dry-run",
                   "--slurm", "time=00:06:00", "signal_seconds=300")
    assert result.returncode == 0, result.stderr
    assert "# warning: time=00:06:00 with signal_seconds=300: each task is asked to save 300 s before its limit, " \
           "so it trains at most 60 s (17% of the allocation)" in result.stdout
    result = study("--experiments", "baseline", "--out", str(tmp_path), *TINY, "--launcher", "slurm", "--dry-run",
                   "--slurm", "time=02:00:00")
    assert "warning" not in result.stdout


def test_torch_uses_the_cpus_the_scheduler_gave_the_task():
    """A task given 1 CPU ran torch with 2 threads: the allocation, shared by the node's processes, sets them
    (OMP_NUM_THREADS, where given, wins)."""
    import torch
    from gptlab.training.distributed import allocated_cpus, set_threads
    before = torch.get_num_threads()
    try:
        assert allocated_cpus({"SLURM_CPUS_PER_TASK": "1"}) == 1 and set_threads({"SLURM_CPUS_PER_TASK": "1"}) == 1
        assert set_threads({"SLURM_CPUS_PER_TASK": "32", "LOCAL_WORLD_SIZE": "8"}) == 4
        torch.set_num_threads(2)
        assert set_threads({"SLURM_CPUS_PER_TASK": "1", "OMP_NUM_THREADS": "2"}) == 2
    finally:
        torch.set_num_threads(before)


def test_slurm_settings_are_checked_and_named():
    assert SlurmOptions.parse(["nodes=2", "sbatch=--x", "sbatch=--y"]).sbatch == ["--x", "--y"]
    for items, phrase in ((["node=2"], "did you mean nodes"), (["nodes=two"], "give a whole number"),
                          (["time=tomorrow"], "not a SLURM time limit"), (["nodes=0"], "nodes=0 must be")):
        with pytest.raises(SlurmError, match=phrase):
            SlurmOptions.parse(items)
    assert ranges([0, 1, 2, 5, 7, 8]) == "0-2,5,7-8" and ranges([3]) == "3"


@pytest.mark.parametrize("text, seconds", [("24:00:00", 86400), ("1-12:00:00", 129600), ("90", 5400),
                                           ("90:30", 5430), ("1-2", 93600), ("1-2:30", 95400), ("1-2:30:15", 95415),
                                           ("UNLIMITED", None), ("", None)])
def test_slurm_time_limits_in_every_form_sbatch_takes(text, seconds):
    # sbatch(1): "minutes", "minutes:seconds", "hours:minutes:seconds", "days-hours",
    # "days-hours:minutes" and "days-hours:minutes:seconds"
    assert time_limit_seconds(text) == seconds


@pytest.mark.parametrize("items, phrase", [
    (["time=1:00:00:00"], "not a SLURM time limit"), (["time=1-"], "not a SLURM time limit"),
    (["time=0"], "no time at all"), (["port=99999"], "the base must be from 1024 to 55536"), (["port=60000"], "the base must be"), (["signal_seconds=0"], "must be 1 to 65535"),
    (["signal_seconds=70000"], "must be 1 to 65535"),
    (["time=00:01:00", "signal_seconds=300"], "not shorter than the time limit"),
    (["partition"], "give KEY=VALUE"), (["sbatch=--array=0-99"], "gptlab sets --array itself"),
    (["sbatch=-N2"], "gptlab sets -N itself"), (["sbatch=#SBATCH --time=5"], "gptlab sets --time itself"),
    (["sbatch=--x\n--array=1"], "must be one line"), (["partition=a\nb"], "must be one line"),
    ({"time": 5.5}, "time=5.5 must be a string"), ({"python": 3}, "python=3 must be a string"),
    ({"nodes": True}, "nodes=True must be a whole number"), ({"bogus": 1}, "SLURM setting 'bogus': not a SLURM"),
])
def test_slurm_settings_sbatch_would_refuse_or_misread_are_refused_before_submission(items, phrase):
    with pytest.raises(SlurmError, match=phrase):
        SlurmOptions.parse(items)


def test_an_empty_setup_line_sets_nothing_and_the_command_line_replaces_the_files_settings(tmp_path):
    assert SlurmOptions.parse(["setup="]).setup == []
    assert SlurmOptions.parse({"time": 90}).time == "90"  # a study file's number: minutes, as sbatch reads it
    file = tmp_path / "s.py"
    file.write_text("EXPERIMENTS = ['baseline', 'rope']\nLAUNCHER = 'slurm'\nSLURM = {'nodes': 2, 'signal_seconds': 600}\n")
    result = study(str(file), "--out", str(tmp_path / "runs"), *TINY, "--dry-run", "--slurm", "nodes=1",
                   "signal_seconds=300")  # back to the defaults: still given, still applied
    assert result.returncode == 0, result.stderr
    assert "#SBATCH --nodes=1" in result.stdout and "#SBATCH --signal=B:USR1@300" in result.stdout


@pytest.mark.parametrize("manifest", [b"[1, 2, 3]", b'{"runs": [{"no_log_dir": 1}]}', b'{"runs": "x"}', b"\xff\xfe",
                                      b"{garbage"])
def test_a_damaged_manifest_is_said_and_the_runs_own_files_still_shown(tmp_path, manifest):
    """A truncated manifest used to make status refuse everything: the runs' own files say what they did."""
    (tmp_path / "slurm").mkdir()
    (tmp_path / "slurm" / "manifest.json").write_bytes(manifest)
    out = status(tmp_path)
    assert out.returncode == 2 and "Traceback" not in out.stderr, out.stderr  # no run at all: one error
    assert "manifest.json" in out.stderr and "move it away" in out.stderr
    from tests.reporting.runs import fake_run
    fake_run(tmp_path / "baseline" / "seed1337", "baseline", 1337, vals=(10.8, 8.0, 7.1), status="complete")
    out = status(tmp_path)
    assert out.returncode == 0 and "1 runs: 1 complete" in out.stdout, out.stdout + out.stderr
    assert "warning: " in out.stdout and "manifest.json" in out.stdout and "their SLURM jobs are unknown" in out.stdout


def test_slurm_flags_need_the_slurm_launcher_and_a_local_dry_run_plans_only(tmp_path):
    result = study("--experiments", "baseline", "rope", "--out", str(tmp_path / "x"), *TINY, "--dry-run")
    assert result.returncode == 0 and "--dry-run: nothing was trained; 2 run(s) would be" in result.stdout
    assert "rope seed1337: " in result.stdout and not (tmp_path / "x").exists()
    result = study("--experiments", "baseline", "--out", str(tmp_path), *TINY, "--slurm", "nodes=2")
    assert result.returncode == 2 and "give --launcher slurm too" in result.stderr


def test_a_task_refuses_code_that_changed_since_submission(tmp_path):
    exp = tmp_path / "mine.py"
    exp.write_text("from gptlab.modules import RoPE\nPOSITION_ENCODING_CLASS = RoPE\n")
    code = code_fingerprint([str(exp)])
    assert code_changes(code) == []
    exp.write_text("from gptlab.modules import ALiBi\nPOSITION_ENCODING_CLASS = ALiBi\n")
    assert code_changes(code) == [f"{exp} (edited or removed)"]
    run_dir = tmp_path / "run"
    manifest = {"slurm": {}, "code": code, "runs": [{"label": "mine seed1", "log_dir": str(run_dir), "command": ["false"],
                                                     "study": {}}]}
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    assert run_task(tmp_path / "manifest.json", 0) == 1
    state = json.loads((run_dir / "slurm.json").read_text())
    assert state["state"] == "failed" and "the code changed since the study was submitted" in state["why"]
    assert "resubmit the study with the same command" in state["why"]


def test_status_of_a_local_study(tmp_path):
    from tests.reporting.runs import fake_run
    fake_run(tmp_path / "baseline" / "seed1337", "baseline", 1337, vals=(10.8, 8.0, 7.1), status="complete")
    fake_run(tmp_path / "rope" / "seed1337", "rope", 1337, vals=(10.8,), steps=20, status="stopped")
    (tmp_path / "study.json").write_text(json.dumps({"runs": [
        {"experiment": "baseline", "seed": 1337, "log_dir": "baseline/seed1337"},
        {"experiment": "rope", "seed": 1337, "log_dir": "rope/seed1337"},
        {"experiment": "alibi", "seed": 1337, "log_dir": "alibi/seed1337"}]}))
    states = gptlab_status(tmp_path)
    assert [states[k]["state"] for k in ("baseline 1337", "rope 1337", "alibi 1337")] == [
        "complete", "stopped", "not started"]
    assert states["baseline 1337"]["val_loss"] == 7.1 and states["rope 1337"]["step"] == 20
    table = status(tmp_path).stdout
    assert "3 runs: 1 complete, 1 stopped, 1 not started" in table and "log moved" in table
    (tmp_path / "baseline" / "seed1337" / "run.json").write_text("[]")  # damaged: rebuilt from log.txt, and said
    assert gptlab_status(tmp_path)["baseline 1337"]["state"] == "complete"
    table = status(tmp_path).stdout
    assert "  warning: " in table and "run.json" in table.split("  warning: ")[1]


def test_status_names_what_each_run_left_behind(tmp_path):
    """A manifest's job id written as a number was a traceback; a deleted run directory read "not started" (and
    the report dropped the seed); a failed run said only "failed (exit status 1)"; a task that died before its
    run started (a wrong python) read "not started" with no reason."""
    from tests.reporting.runs import fake_run
    runs = {"baseline 1337": "baseline/seed1337", "rope 1337": "rope/seed1337", "baseline 1338": "baseline/seed1338",
            "rope 1338": "rope/seed1338"}
    fake_run(tmp_path / "baseline" / "seed1337", "baseline", 1337, vals=(10.8, 8.0, 7.1), status="complete")
    failed = fake_run(tmp_path / "rope" / "seed1337", "rope", 1337, vals=(10.8,), steps=20, status="failed")
    (failed / "console.txt").write_text("step 19 | loss 7.0\nTraceback (most recent call last):\nRuntimeError: boom\n")
    (failed / "slurm.json").write_text(json.dumps({"state": "failed", "why": "failed (exit status 1)", "failures": 2}))
    (tmp_path / "slurm").mkdir()
    (tmp_path / "slurm" / "77_2.out").write_text("gptlab task baseline seed1338 (77_2, restart 0): ...\n")
    (tmp_path / "slurm" / "77_3.out").write_text("/var/spool/slurmd/job78/slurm_script: line 9: /nonexistent/python: "
                                                 "No such file or directory\n")
    manifest = {"runs": [{"log_dir": str(tmp_path / d), "job": f"77_{i}" if i else 77, "experiment": key.split()[0],
                          "seed": int(key.split()[1])} for i, (key, d) in enumerate(runs.items())]}
    (tmp_path / "slurm" / "manifest.json").write_text(json.dumps(manifest))
    states = gptlab_status(tmp_path)
    assert states["baseline 1337"]["state"] == "complete"
    assert states["rope 1337"]["state"] == "failed" and "RuntimeError: boom" in states["rope 1337"]["why"]
    assert states["baseline 1338"]["state"] == "missing" and "is gone" in states["baseline 1338"]["why"]
    assert states["rope 1338"]["state"] == "failed"
    assert "before the run started" in states["rope 1338"]["why"] and "/nonexistent/python" in states["rope 1338"]["why"]


def test_the_report_names_a_planned_seed_whose_run_is_gone(tmp_path):
    from gptlab.reporting.report import write_report
    from tests.reporting.runs import fake_run
    for seed in (1337, 1338, 1339):
        fake_run(tmp_path / "baseline" / f"seed{seed}", "baseline", seed, vals=(10.8, 7.1 + seed / 1e5), status="complete")
    (tmp_path / "study.json").write_text(json.dumps({"runs": [
        {"experiment": "baseline", "seed": s, "log_dir": f"baseline/seed{s}"} for s in (1337, 1338, 1339, 1340)]}))
    text = write_report([tmp_path], tmp_path, figures=False)
    assert "Planned by the study but with no run record" in text and "baseline seed 1340" in text


def test_a_run_resumed_under_other_code_says_so_in_its_record_and_the_report(tmp_path):
    from gptlab.reporting.report import write_report
    from gptlab.training.record import read_record
    from tests.reporting.runs import fake_run
    for seed in (1337, 1338, 1339):
        fake_run(tmp_path / "baseline" / f"seed{seed}", "baseline", seed, vals=(10.8, 8.0, 7.1 + seed / 1e5),
                 status="complete", header={"environment": {"device": "cpu", "git_commit": "abc", "code": "c0de"}})
    changed = tmp_path / "baseline" / "seed1339" / "log.txt"
    redone = [line for line in changed.read_text().splitlines(keepends=True)  # what the resumed attempt logs again
              if line[0].isdigit() and (int(line.split()[0]) > 12 or line.startswith("12 train "))]
    changed.write_text(changed.read_text() + "# run resumed from x/model_00012.pt at step 12\n"
                       '# environment {"device": "cpu", "git_commit": "abd", "code": "beef"}\n' + "".join(redone))
    (tmp_path / "baseline" / "seed1339" / "run.json").unlink()
    record = read_record(tmp_path / "baseline" / "seed1339")
    assert record["code_versions"] == [{"from_step": 0, "code": "c0de", "commit": "abc"},
                                       {"from_step": 12, "code": "beef", "commit": "abd"}]
    assert any("trained by 2 versions of gptlab's code: steps 0-12 by c0de (commit abc); steps 12- by beef" in w
               for w in record["warnings"])
    text = write_report([tmp_path], tmp_path, figures=False)
    assert "CODE: these runs were trained by 2 versions of gptlab's code" in text
    assert "seed 1339: trained by 2 versions of gptlab's code" in text  # the row's note names the run


# ---- on a real cluster

@pytest.fixture(scope="module")
def cluster():
    if not shutil.which("sbatch"):
        pytest.skip("no SLURM here: eval \"$(bash tools/slurm_cluster.sh up)\" starts a one-node cluster")
    if subprocess.run(["sinfo", "-h"], capture_output=True, timeout=30).returncode != 0:
        pytest.skip("SLURM does not answer: eval \"$(bash tools/slurm_cluster.sh up)\" (it sets SLURM_CONF)")


def wait_until(condition, what: str, timeout: float = 600):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if condition():
            return
        time.sleep(1)
    raise AssertionError(f"timed out waiting for {what}")


def alive(root) -> bool:
    manifest = json.loads((Path(root) / "slurm" / "manifest.json").read_text())
    jobs = sorted({r["job"].split("_")[0] for r in manifest["runs"] if r.get("job")})
    out = subprocess.run(["squeue", "-h", "-j", ",".join(jobs)], capture_output=True, text=True).stdout
    return bool(out.strip())


def finals(root) -> dict:
    return {str(p.parent.relative_to(root)): json.loads(p.read_text())["val_loss"] for p in Path(root).rglob("run.json")}


@pytest.mark.slurm
def test_a_study_on_slurm_ends_with_the_local_studys_numbers_through_a_requeue(cluster, tmp_path, one_thread):
    common = ["--experiments", "baseline", "rope", "--seeds", "2", *TINY, "train.max_steps=24", "train.eval_interval=4"]
    on_slurm, local = tmp_path / "slurm", tmp_path / "local"
    submitted = study(*common, "--out", str(on_slurm), "--launcher", "slurm", "--slurm", "cpus_per_task=1",
                      "max_parallel=2")
    assert submitted.returncode == 0 and "submitted job array" in submitted.stdout, submitted.stdout + submitted.stderr
    log = on_slurm / "baseline" / "seed1337" / "log.txt"
    wait_until(lambda: log.is_file() and "\n6 train" in log.read_text(), "baseline seed1337 at step 6")
    states = gptlab_status(on_slurm)
    assert states["baseline 1337"]["state"] == "running" and states["baseline 1338"]["state"] == "pending"
    job = states["baseline 1337"]["job"]
    subprocess.run(["scontrol", "requeue", job], check=True)  # as a preemption: checkpoint, requeue, resume
    wait_until(lambda: gptlab_status(on_slurm)["baseline 1337"]["state"] == "requeued", "the requeue")
    subprocess.run(["scontrol", "update", f"JobId={job}", "StartTime=now"], check=True)  # skip SLURM's 2-minute hold
    again = study(*common, "--out", str(on_slurm), "--launcher", "slurm", "--slurm", "cpus_per_task=1", "max_parallel=2")
    assert "nothing to submit" in again.stdout, again.stdout  # complete, queued and running runs are not submitted twice
    wait_until(lambda: not alive(on_slurm), "the job array to finish", timeout=900)
    states = gptlab_status(on_slurm)
    assert all(r["state"] == "complete" for r in states.values()), states
    assert states["baseline 1337"]["preemptions"] == 1
    assert "resumed from" in log.read_text()
    assert study(*common, "--out", str(local)).returncode == 0
    assert finals(on_slurm) == finals(local) and len(finals(local)) == 4


@pytest.mark.slurm
def test_a_run_that_fails_for_its_own_reasons_is_reported_and_not_requeued(cluster, tmp_path):
    result = study("--experiments", "baseline", "--out", str(tmp_path), *TINY, "train.max_lr=1e9",
                   "train.max_bad_steps=2", "--launcher", "slurm", "--slurm", "failure_retries=3")
    assert result.returncode == 0, result.stderr
    wait_until(lambda: not alive(tmp_path), "the task to end")
    run = gptlab_status(tmp_path)["baseline 1337"]
    assert run["state"] == "failed" and run["failures"] == 1 and run["preemptions"] == 0  # diverged: no retry
    assert run["why"].startswith("diverged; the end of its console.txt:\n")  # what it said as it stopped
    assert "consecutive steps had a non-finite loss" in run["why"]
    state = json.loads((tmp_path / "baseline" / "seed1337" / "slurm.json").read_text())
    assert "consecutive steps had a non-finite loss" in state["tail"]


def array_jobs(root) -> list[str]:
    manifest = json.loads((Path(root) / "slurm" / "manifest.json").read_text())
    return [s["job"] for s in manifest["submissions"]]


def at_step(log: Path, step: int) -> bool:
    return log.is_file() and f"\n{step} train" in log.read_text()


@pytest.mark.slurm
def test_scancel_stops_a_running_study_saved_and_nothing_is_requeued(cluster, tmp_path):
    """scancel's SIGTERM was taken for a preemption: the task requeued itself and the study went on. A cancel
    now saves the run and stops; submitting again continues it from that checkpoint."""
    common = ["--experiments", "baseline", "--seeds", "2", *TINY, "train.max_steps=40", "train.eval_interval=4",
              "--out", str(tmp_path), "--launcher", "slurm", "--slurm", "cpus_per_task=1", "max_parallel=1"]
    assert study(*common).returncode == 0
    log = tmp_path / "baseline" / "seed1337" / "log.txt"
    wait_until(lambda: at_step(log, 5), "baseline seed1337 at step 5")
    subprocess.run(["scancel", array_jobs(tmp_path)[0]], check=True)
    wait_until(lambda: not alive(tmp_path), "the cancelled array to leave the queue", timeout=180)
    time.sleep(3)
    assert not alive(tmp_path)  # nothing came back
    states = gptlab_status(tmp_path)
    run = states["baseline 1337"]
    assert run["state"] == "cancelled" and run["preemptions"] == 0, run
    assert "not requeued" in run["why"] and "submitting the study again continues it" in run["why"]
    from gptlab.training.checkpoint import list_checkpoints
    saved = list_checkpoints(tmp_path / "baseline" / "seed1337")
    assert saved and int(saved[0].stem.split("_")[1]) == run["step"] > 5  # saved where it stopped
    assert states["baseline 1338"]["state"] == "not started"  # cancelled while pending: it never ran
    again = study(*common)
    assert "submitted job array" in again.stdout and "with 2 task(s)" in again.stdout, again.stdout + again.stderr
    wait_until(lambda: not alive(tmp_path), "the resubmitted array")
    assert f"resumed from {saved[0]}" in log.read_text()
    assert all(r["state"] == "complete" for r in gptlab_status(tmp_path).values())


@pytest.mark.slurm
def test_a_reordered_resubmission_leaves_every_task_training_the_run_it_was_submitted_for(cluster, tmp_path):
    """Tasks found their run by position in a manifest that a resubmission rewrote: with the experiments given in
    another order, a task submitted for rope seed1338 trained baseline seed1338. Each submission's file is its own."""
    tiny = [*TINY, "train.max_steps=4", "--out", str(tmp_path), "--launcher", "slurm", "--slurm", "cpus_per_task=1",
            "max_parallel=1"]
    first = study("--experiments", "baseline", "rope", "--seeds", "2", *tiny)
    assert "submitted job array" in first.stdout, first.stdout + first.stderr
    again = study("--experiments", "rope", "baseline", "alibi", "--seeds", "2", *tiny)  # reordered, and one added
    assert "submitted job array" in again.stdout and "with 2 task(s)" in again.stdout, again.stdout + again.stderr
    wait_until(lambda: not alive(tmp_path), "both arrays", timeout=900)
    states = gptlab_status(tmp_path)
    assert len(states) == 6 and all(r["state"] == "complete" for r in states.values()), states
    for key, r in states.items():
        experiment, seed = key.split()
        task = json.loads((Path(r["log_dir"]) / "slurm.json").read_text())
        assert task["label"] == f"{experiment} seed{seed}", task
        assert json.loads((Path(r["log_dir"]) / "run.json").read_text())["experiment"] == experiment


@pytest.mark.slurm
def test_killing_a_tasks_wrapper_leaves_no_trainer_behind(cluster, tmp_path):
    """The trainer was started in a session of its own: after kill -9 of the task it trained on outside SLURM."""
    assert study("--experiments", "baseline", *TINY, "train.max_steps=400", "--out", str(tmp_path), "--launcher",
                 "slurm", "--slurm", "cpus_per_task=1").returncode == 0
    log = tmp_path / "baseline" / "seed1337" / "log.txt"
    wait_until(lambda: at_step(log, 3), "step 3")
    wrapper = subprocess.run(["pgrep", "-f", f"gptlab.study.slurm task {tmp_path}"], capture_output=True,
                             text=True).stdout.split()
    assert len(wrapper) == 1, wrapper
    subprocess.run(["kill", "-9", wrapper[0]], check=True)
    trainer = f"--log-dir {tmp_path / 'baseline' / 'seed1337'}"
    wait_until(lambda: subprocess.run(["pgrep", "-f", trainer], capture_output=True).returncode != 0,
               "the trainer to end with its task", timeout=120)
    wait_until(lambda: not alive(tmp_path), "the job to end", timeout=120)
    assert gptlab_status(tmp_path)["baseline 1337"]["state"] != "running"
    from gptlab.training.record import read_record
    why = read_record(tmp_path / "baseline" / "seed1337")["status_why"]
    assert why.startswith("preempted: stopped by SIGTERM") and "checkpoint" in why, why  # its parent's death: saved
    header = [line for line in log.read_text().splitlines() if line.startswith("# environment ")][0]
    assert json.loads(header[len("# environment "):])["threads"] == 1  # its allocation: 1 CPU, 1 thread


@pytest.mark.slurm
def test_a_task_that_dies_before_its_run_starts_says_why(cluster, tmp_path):
    assert study("--experiments", "baseline", *TINY, "--out", str(tmp_path), "--launcher", "slurm", "--slurm",
                 "python=/nonexistent/python").returncode == 0
    wait_until(lambda: not alive(tmp_path), "the task to end", timeout=120)
    run = gptlab_status(tmp_path)["baseline 1337"]
    assert run["state"] == "failed" and "before the run started" in run["why"] and "/nonexistent/python" in run["why"]
