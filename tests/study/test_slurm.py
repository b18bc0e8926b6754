"""Studies on SLURM: the sbatch script and the manifest (default tier), and, on a real one-node
cluster (`eval "$(bash tools/slurm_cluster.sh up)"`, then `pytest -m slurm`), a study submitted as a
job array that ends with the numbers of the same study run locally, through a requeue in the
middle of a run, a run that fails for its own reasons, resubmission and `gptlab status`."""

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


def gptlab_status(root) -> dict[str, str]:
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
    # a run of 2 nodes x 8 GPUs: torchrun on each node under srun, rendezvous on the first node
    assert "srun --kill-on-bad-exit=1 --nodes=2 --ntasks-per-node=1 python -m torch.distributed.run --nnodes=2 " \
           "--nproc_per_node=8 --rdzv_backend=c10d" in script
    assert 'MASTER_ADDR="$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)"' in script
    assert "nothing was submitted" in script and not (tmp_path / "slurm").exists()


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
    (["time=0"], "no time at all"), (["port=99999"], "not a TCP port"), (["signal_seconds=0"], "must be 1 to 65535"),
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
def test_a_damaged_manifest_is_one_clear_error(tmp_path, manifest):
    (tmp_path / "slurm").mkdir()
    (tmp_path / "slurm" / "manifest.json").write_bytes(manifest)
    out = subprocess.run([sys.executable, "-m", "gptlab", "status", str(tmp_path)], capture_output=True, text=True,
                         cwd=REPO_ROOT, timeout=120)
    assert out.returncode == 2 and "Traceback" not in out.stderr, out.stderr
    assert "manifest.json" in out.stderr and "move it away" in out.stderr


def test_slurm_flags_need_the_slurm_launcher(tmp_path):
    result = study("--experiments", "baseline", "--out", str(tmp_path), *TINY, "--dry-run")
    assert result.returncode == 2 and "--dry-run prints the sbatch script of --launcher slurm" in result.stderr
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
    table = subprocess.run([sys.executable, "-m", "gptlab", "status", str(tmp_path)], capture_output=True, text=True,
                           cwd=REPO_ROOT).stdout
    assert "3 runs: 1 complete, 1 stopped, 1 not started" in table and "log moved" in table
    (tmp_path / "baseline" / "seed1337" / "run.json").write_text("[]")  # damaged: rebuilt from log.txt, and said
    assert gptlab_status(tmp_path)["baseline 1337"]["state"] == "complete"
    table = subprocess.run([sys.executable, "-m", "gptlab", "status", str(tmp_path)], capture_output=True, text=True,
                           cwd=REPO_ROOT).stdout
    assert "  warning: " in table and "run.json" in table.split("  warning: ")[1]


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
    assert run["why"] == "diverged"
    state = json.loads((tmp_path / "baseline" / "seed1337" / "slurm.json").read_text())
    assert "consecutive steps had a non-finite loss" in state["tail"]
