"""A study on a SLURM cluster: the same runs as `gptlab study`, submitted with SLURM's own `sbatch`
as one job array (a task per run), each task requeued after a preemption or at its time limit and
resumed exactly from the run's newest checkpoint. SLURM is the scheduler; gptlab writes the
manifest of the runs and the sbatch script, and each task is this module's `task` command.

    gptlab study quick --launcher slurm --slurm partition=gpu gpus_per_node=8 time=24:00:00
    gptlab study quick --launcher slurm --dry-run     # print the sbatch script, submit nothing

Files, in the study's directory: `slurm/manifest.json` (the runs, their commands, the code they
were submitted with, the SLURM settings and each run's job id), `slurm/submit_<n>.sbatch` (each
script submitted), `slurm/<job>_<task>.out` (SLURM's output of a task); and in each run's
directory `slurm.json`: its task's preemptions and failures, and why it last stopped.

A task:
- refuses to start when the code changed since submission (gptlab's sources, the experiment
  files, the commit): the numbers would not be the study's; it says how to resubmit;
- runs the run's train.py command (`torchrun` under `srun` with a c10d rendezvous on the first
  node for several GPUs or nodes), its output appended to the run's console.txt;
- on the signal SLURM sends before the time limit (USR1, asked for with --signal) or on a
  preemption (TERM), has the run save a checkpoint at its next step boundary (every rank agrees)
  and requeues itself (`scontrol requeue`) while its preemption budget lasts;
- after a failure of the run's own (a crash, a divergence, a refused config), requeues itself
  only while its separate failure budget lasts (a refusal: never), then stays failed with the end
  of its console output in slurm.json.
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from gptlab.files import atomic_write_text
from gptlab.paths import REPO_ROOT
from gptlab.training.record import STUDY_ENV, read_record

MANIFEST = "manifest.json"
TASK_STATE = "slurm.json"
ALIVE = {"PENDING", "RUNNING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "CONFIGURING", "COMPLETING", "SUSPENDED",
         "RESIZING", "SIGNALING", "STAGE_OUT", "RESV_DEL_HOLD"}
DIED_OF_SIGNAL = (-signal.SIGTERM, -signal.SIGKILL, -signal.SIGINT, -signal.SIGHUP, 128 + signal.SIGTERM,
                  128 + signal.SIGKILL)


class SlurmError(ValueError):
    """The study cannot be submitted as asked; the message says why and what to do."""


@dataclass
class SlurmOptions:
    """What a cluster user sets for every task of the study (`--slurm KEY=VALUE ...`, or `SLURM = {...}`
    in a study file)."""
    partition: str = ""
    account: str = ""
    qos: str = ""
    time: str = ""  # the time limit of one task: "HH:MM:SS" or "D-HH:MM:SS"; "" = the partition's
    nodes: int = 1  # per run
    gpus_per_node: int = 0  # 0: no GPU (a CPU run)
    cpus_per_task: int = 0  # 0: SLURM's default
    mem: str = ""  # per node, e.g. "64G"; "" = SLURM's default
    max_parallel: int = 0  # tasks running at once (the array's %N); 0 = as many as SLURM allows
    signal_seconds: int = 300  # how long before the time limit SLURM asks the run to save and requeue
    preemption_retries: int = 100  # requeues after a preemption or a time limit
    failure_retries: int = 1  # requeues after a failure of the run's own (a crash); a refused config: none
    sbatch: list[str] = field(default_factory=list)  # extra "#SBATCH" lines, e.g. ["--constraint=a100"]
    setup: list[str] = field(default_factory=list)  # shell lines run before training: module load, source venv
    python: str = ""  # the interpreter on the nodes; "" = `python` after setup lines, else the one that submitted
    port: int = 29500  # the c10d rendezvous port on a run's first node (several GPUs or nodes)

    def __post_init__(self) -> None:
        if isinstance(self.time, int) and not isinstance(self.time, bool):  # SLURM = {"time": 90}: minutes, as sbatch
            self.time = str(self.time)
        problems = []
        for f in dataclasses.fields(self):
            value, kind = getattr(self, f.name), _kind(f)
            if kind is int and (not isinstance(value, int) or isinstance(value, bool)):
                problems.append(f"{f.name}={value!r} must be a whole number")
            elif kind is str and not isinstance(value, str):
                problems.append(f"{f.name}={value!r} must be a string")
            elif kind is str and "\n" in value:
                problems.append(f"{f.name}={value!r} must be one line")
            elif kind is list:
                value = [value] if isinstance(value, str) else value
                if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
                    problems.append(f"{f.name} must be a list of lines, got {value!r}")
                else:
                    setattr(self, f.name, [v for v in value if v.strip()])  # an empty line sets nothing
        if problems:
            raise SlurmError("the SLURM settings are invalid:\n  - " + "\n  - ".join(problems))
        if self.nodes < 1:
            problems.append(f"nodes={self.nodes} must be 1 or more")
        for name in ("gpus_per_node", "cpus_per_task", "max_parallel", "preemption_retries", "failure_retries"):
            if getattr(self, name) < 0:
                problems.append(f"{name}={getattr(self, name)} must be 0 or more")
        if not 1 <= self.port <= 65535:
            problems.append(f"port={self.port} is not a TCP port (1 to 65535)")
        if not 1 <= self.signal_seconds <= 65535:  # sbatch --signal's range; 0 would leave no time to save
            problems.append(f"signal_seconds={self.signal_seconds} must be 1 to 65535 (seconds before the time limit "
                            "at which the run saves and requeues)")
        try:
            limit = time_limit_seconds(self.time)
        except ValueError as e:
            problems.append(str(e))
        else:
            if limit is not None and self.signal_seconds >= limit:
                problems.append(f"signal_seconds={self.signal_seconds} is not shorter than the time limit "
                                f"time={self.time} ({limit} s): the run would be told to save before it started; "
                                "give a longer time or a smaller signal_seconds")
        for line in self.sbatch:
            if "\n" in line:
                problems.append(f"sbatch line {line!r} must be one line")
            body = line.strip().removeprefix("#SBATCH").strip()
            flag = re.split(r"[=\s]", body, maxsplit=1)[0]
            flag = flag[:2] if re.fullmatch(r"-[A-Za-z].+", flag) else flag  # -N2: the short flag -N
            if flag in OWN_SBATCH_FLAGS:
                problems.append(f"sbatch line {line!r}: gptlab sets {flag} itself ({OWN_SBATCH_FLAGS[flag]})")
        if problems:
            raise SlurmError("the SLURM settings are invalid:\n  - " + "\n  - ".join(problems))

    @classmethod
    def values(cls, items: list[str] | dict) -> dict:
        """The settings given, typed: from `KEY=VALUE` words (the command line) or a dict (a study
        file's SLURM), each key a field; a list field given twice on the command line collects both."""
        names = [f.name for f in dataclasses.fields(cls)]
        where = "SLURM setting {}" if isinstance(items, dict) else "--slurm {}"
        if isinstance(items, dict):
            pairs = list(items.items())
        else:
            pairs = []
            for item in items:
                key, equals, value = item.partition("=")
                if not equals:
                    raise SlurmError(f"--slurm {item}: give KEY=VALUE, e.g. --slurm partition=gpu time=24:00:00")
                pairs.append((key, value))
        values = {}
        for key, value in pairs:
            if key not in names:
                close = difflib.get_close_matches(str(key), names, n=1)
                raise SlurmError(f"{where.format(repr(key) if isinstance(items, dict) else key)}: not a SLURM "
                                 f"setting; {f'did you mean {close[0]}? ' if close else ''}the settings are "
                                 f"{', '.join(names)}")
            kind = _kind(next(f for f in dataclasses.fields(cls) if f.name == key))
            if isinstance(value, str) and kind is int and not isinstance(items, dict):
                try:
                    value = int(value)
                except ValueError:
                    raise SlurmError(f"--slurm {key}={value}: give a whole number") from None
            elif isinstance(value, str) and kind is list and not isinstance(items, dict):
                value = values.get(key, []) + [value]
            values[key] = value
        return values

    @classmethod
    def parse(cls, items: list[str] | dict) -> SlurmOptions:
        """From `KEY=VALUE` words (the command line) or a dict (a study file)."""
        return cls(**cls.values(items))


def _kind(f: dataclasses.Field) -> type:
    """A setting's type: int, str, or list (of lines)."""
    return list if f.default is dataclasses.MISSING else type(f.default)


OWN_SBATCH_FLAGS = {"--array": "a task per run", "--job-name": "gptlab-<study>", "--output": "slurm/%A_%a.out",
                    "--requeue": "always", "--no-requeue": "tasks requeue themselves", "--open-mode": "append",
                    "--signal": "signal_seconds", "--nodes": "nodes", "-N": "nodes", "-a": "a task per run",
                    "--ntasks-per-node": "one task per node: torchrun starts the processes",
                    "--gpus-per-node": "gpus_per_node", "--partition": "partition", "-p": "partition",
                    "--time": "time", "-t": "time", "--account": "account", "-A": "account", "--qos": "qos",
                    "--mem": "mem", "--cpus-per-task": "cpus_per_task", "-c": "cpus_per_task", "-o": "--output"}


def time_limit_seconds(text: str) -> int | None:
    """SLURM's time limit in seconds (None: no limit): "" (the partition's), "UNLIMITED", minutes,
    minutes:seconds, hours:minutes:seconds, days-hours, days-hours:minutes, days-hours:minutes:seconds."""
    if text in ("", "UNLIMITED", "INFINITE", "infinite", "unlimited"):
        return None
    days, dash, clock = text.rpartition("-") if "-" in text else ("0", "", text)
    parts = clock.split(":")
    if not (days.isdigit() and all(p.isdigit() for p in parts) and len(parts) <= 3 and (not dash or parts[0])):
        raise ValueError(f"time={text!r} is not a SLURM time limit such as 24:00:00, 1-12:00:00 or 90 (minutes)")
    numbers = [int(p) for p in parts]
    if dash:  # days-hours[:minutes[:seconds]]
        h, m, sec = (numbers + [0, 0])[:3]
    elif len(numbers) == 3:
        h, m, sec = numbers
    elif len(numbers) == 2:  # minutes:seconds
        h, m, sec = 0, *numbers
    else:
        h, m, sec = 0, numbers[0], 0
    total = ((int(days) * 24 + h) * 60 + m) * 60 + sec
    if total == 0:
        raise ValueError(f"time={text!r} is no time at all; give a limit such as 24:00:00, or leave it out for the "
                         "partition's")
    return total


# ---- the code a study was submitted with

def code_fingerprint(experiment_paths: list[str]) -> dict:
    """What must not change between submission and a task's start: gptlab's sources, the
    experiment files and the commit they were submitted at."""
    digest = hashlib.sha256()
    for path in sorted((REPO_ROOT / "gptlab").rglob("*.py")):
        digest.update(str(path.relative_to(REPO_ROOT)).encode())
        digest.update(path.read_bytes())
    experiments = {}
    for p in experiment_paths:
        path = Path(p)
        experiments[str(path)] = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else None
    from gptlab.training.run import git_commit
    return {"commit": git_commit(), "gptlab_sha256": digest.hexdigest(), "experiments": experiments}


def code_changes(submitted: dict) -> list[str]:
    """What changed since submission, in words (empty when nothing did)."""
    now = code_fingerprint(list(submitted["experiments"]))
    changes = []
    if now["gptlab_sha256"] != submitted["gptlab_sha256"]:
        changes.append(f"gptlab's sources (edited since, on commit {now['commit']})" if now["commit"] == submitted["commit"]
                       else f"gptlab's sources (commit {submitted['commit']} then, {now['commit']} now)")
    changes += [f"{path} (edited or removed)" for path, digest in submitted["experiments"].items()
                if now["experiments"].get(path) != digest]
    return changes


# ---- submission

def manifest_path(root: Path) -> Path:
    return root / "slurm" / MANIFEST


def read_manifest(root: Path) -> dict | None:
    path = manifest_path(root)
    if not path.is_file():
        return None
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:  # ValueError: not JSON, or not UTF-8
        raise SlurmError(f"{path} cannot be read ({e}); move it away to submit the study afresh") from None
    if manifest is None:
        return None
    runs = manifest.get("runs") if isinstance(manifest, dict) else None
    if not isinstance(runs, list) or not all(isinstance(r, dict) and isinstance(r.get("log_dir"), str) for r in runs):
        raise SlurmError(f"{path} is not a study's manifest (a JSON object whose \"runs\" lists each run with its "
                         "log_dir); move it away to submit the study afresh")
    return manifest


def task_command(options: SlurmOptions, cmd: list[str]) -> list[str]:
    """The train.py command of a task: as it is for one process; under torchrun, started on every
    node by srun, with a c10d rendezvous on the allocation's first node, for several GPUs or nodes."""
    train_args = cmd[cmd.index("train") + 1:]
    if options.nodes == 1 and options.gpus_per_node <= 1:
        return [*cmd, "--no-launch"]
    return ["srun", "--kill-on-bad-exit=1", f"--nodes={options.nodes}", "--ntasks-per-node=1",
            cmd[0], "-m", "torch.distributed.run", f"--nnodes={options.nodes}",
            f"--nproc_per_node={max(1, options.gpus_per_node)}", "--rdzv_backend=c10d",
            f"--rdzv_endpoint=${{MASTER_ADDR}}:{options.port}", "--rdzv_id=${SLURM_JOB_ID}",
            "-m", "gptlab", "train", *train_args]


def sbatch_script(root: Path, name: str, options: SlurmOptions, indices: list[int], python: str) -> str:
    """The script one submission hands to sbatch: its #SBATCH lines, the setup lines, then the task."""
    array = ranges(indices) + (f"%{options.max_parallel}" if options.max_parallel else "")
    lines = ["#!/bin/bash", f"#SBATCH --job-name=gptlab-{name}", f"#SBATCH --array={array}",
             f"#SBATCH --nodes={options.nodes}", "#SBATCH --ntasks-per-node=1"]
    if options.gpus_per_node:
        lines.append(f"#SBATCH --gpus-per-node={options.gpus_per_node}")
    for flag, value in (("partition", options.partition), ("account", options.account), ("qos", options.qos),
                        ("time", options.time), ("mem", options.mem),
                        ("cpus-per-task", options.cpus_per_task or "")):
        if value:
            lines.append(f"#SBATCH --{flag}={value}")
    lines += ["#SBATCH --requeue", "#SBATCH --open-mode=append",
              f"#SBATCH --signal=B:USR1@{options.signal_seconds}",
              f"#SBATCH --output={root / 'slurm' / '%A_%a.out'}"]
    lines += [f"#SBATCH {line.removeprefix('#SBATCH').strip()}" for line in options.sbatch]
    lines += ["", "# setup (--slurm setup=...)"] + options.setup if options.setup else [""]
    lines += ["# the run's first node: torchrun's rendezvous for a run of several GPUs or nodes",
              'export MASTER_ADDR="$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)"',
              f"cd {shlex.quote(str(REPO_ROOT))}",
              f"exec {shlex.quote(python)} -m gptlab.study.slurm task {shlex.quote(str(manifest_path(root)))} "
              f"\"$SLURM_ARRAY_TASK_ID\""]
    return "\n".join(lines) + "\n"


def ranges(indices: list[int]) -> str:
    """[0, 1, 2, 5, 7, 8] -> "0-2,5,7-8", as sbatch --array takes them."""
    parts, start = [], None
    for i, n in enumerate(indices):
        start = n if start is None else start
        if i + 1 == len(indices) or indices[i + 1] != n + 1:
            parts.append(str(n) if n == start else f"{start}-{n}")
            start = None
    return ",".join(parts)


def squeue_states(job_ids: list[str]) -> dict[str, str]:
    """{job id (array tasks as 123_4): state} of the given jobs SLURM still knows (squeue; no sacct)."""
    arrays = sorted({j.split("_")[0] for j in job_ids if j})
    if not arrays:
        return {}
    result = subprocess.run(["squeue", "-h", "-r", "-o", "%i|%T", "-j", ",".join(arrays)], capture_output=True,
                            text=True, timeout=60)
    if result.returncode != 0 and "Invalid job id" not in result.stderr:
        raise SlurmError(f"squeue failed ({result.stderr.strip() or result.returncode}); is SLURM reachable here?")
    states = {}
    for line in result.stdout.splitlines():
        job, _, state = line.strip().partition("|")
        states[job] = state
    return states


def submit(study, runs: list, options: SlurmOptions, dry_run: bool = False) -> str:
    """Write the manifest, and submit as one job array the runs that are neither complete nor
    queued or running already; returns what was done, in words."""
    from gptlab.study.runner import command
    root = study.root
    python = options.python or ("python" if options.setup else sys.executable)  # setup lines choose the environment
    old = read_manifest(root) or {}
    jobs = {r["log_dir"]: r.get("job") for r in old.get("runs", [])}
    states = squeue_states([j for j in jobs.values() if j]) if jobs and not dry_run else {}
    entries, todo, skipped = [], [], {"complete": 0, "queued or running": 0}
    for i, planned in enumerate(runs):
        log_dir = str(planned.log_dir)
        job = jobs.get(log_dir)
        record = read_record(planned.log_dir)
        entry = {"index": i, "label": planned.label, "experiment": planned.experiment, "seed": planned.seed,
                 "lr_multiplier": planned.lr_multiplier, "log_dir": log_dir,
                 "command": task_command(options, [python, *command(study, planned, device=None)[1:]]),
                 "study": planned.record(study), "job": job}
        if record and record.get("status") == "complete":
            skipped["complete"] += 1
        elif job and states.get(job) in ALIVE:
            skipped["queued or running"] += 1
        else:
            todo.append(i)
        entries.append(entry)
    experiment_files = sorted({str(p.run.experiment.path) for p in runs})
    manifest = {"study": study.definition(), "root": str(root), "python": python, "slurm": dataclasses.asdict(options),
                "code": code_fingerprint(experiment_files), "runs": entries,
                "submissions": old.get("submissions", [])}
    script = sbatch_script(root, study.name, options, todo, python) if todo else ""
    said = ", ".join(f"{n} {why}" for why, n in skipped.items() if n)
    if dry_run:
        shown = "\n".join(f"#   task {i} ({entries[i]['label']}): {shlex.join(entries[i]['command'])}" for i in todo[:2])
        return ((script or "# nothing to submit\n") + (f"# not submitted again: {said}\n" if said else "") +
                (f"# each task trains its run, for example:\n{shown}\n" if todo else "") +
                f"# --dry-run: nothing was submitted; {len(todo)} task(s) would be\n")
    if not todo:
        atomic_write_text(manifest_path(root), json.dumps(manifest, indent=1) + "\n")
        return f"nothing to submit: every run is {said}"
    (root / "slurm").mkdir(parents=True, exist_ok=True)
    script_path = root / "slurm" / f"submit_{len(manifest['submissions']) + 1}.sbatch"
    atomic_write_text(script_path, script)
    atomic_write_text(manifest_path(root), json.dumps(manifest, indent=1) + "\n")  # before a task can read it
    result = subprocess.run(["sbatch", "--parsable", str(script_path)], capture_output=True, text=True, timeout=120)
    if result.returncode != 0:
        raise SlurmError(f"sbatch refused the study's job array: {result.stderr.strip() or result.stdout.strip()}; "
                         f"the script is {script_path}. Nothing was submitted")
    array_job = result.stdout.strip().split(";")[0]
    for i in todo:
        entries[i]["job"] = f"{array_job}_{i}"
    manifest["submissions"].append({"job": array_job, "tasks": todo, "script": str(script_path),
                                    "time": time.strftime("%Y-%m-%dT%H:%M:%S%z")})
    atomic_write_text(manifest_path(root), json.dumps(manifest, indent=1) + "\n")
    return (f"submitted job array {array_job} with {len(todo)} task(s) ({script_path})"
            + (f"; not submitted again: {said}" if said else "") +
            f". `gptlab status {root}` shows every run; the same command submits what is missing")


# ---- a task, on the cluster

def task_state(log_dir: Path) -> dict:
    path = Path(log_dir) / TASK_STATE
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return {"preemptions": 0, "failures": 0}


def _save_state(log_dir: Path, state: dict) -> None:
    atomic_write_text(Path(log_dir) / TASK_STATE, json.dumps(state, indent=1) + "\n")


def _requeue(job: str) -> bool:
    result = subprocess.run(["scontrol", "requeue", job], capture_output=True, text=True, timeout=60)
    return result.returncode == 0


def run_task(manifest_file: Path, index: int) -> int:
    """One array task: its run, trained (or resumed) to the end, a preemption, or a failure."""
    manifest = json.loads(Path(manifest_file).read_text(encoding="utf-8"))
    entry = manifest["runs"][index]
    options = SlurmOptions(**manifest["slurm"])
    log_dir = Path(entry["log_dir"])
    log_dir.mkdir(parents=True, exist_ok=True)
    job = (f"{os.environ['SLURM_ARRAY_JOB_ID']}_{os.environ['SLURM_ARRAY_TASK_ID']}"
           if os.environ.get("SLURM_ARRAY_JOB_ID") else os.environ.get("SLURM_JOB_ID", "?"))
    state = {**task_state(log_dir), "job": job, "label": entry["label"]}
    print(f"gptlab task {entry['label']} ({job}, restart {os.environ.get('SLURM_RESTART_COUNT', '0')}): "
          f"{log_dir}", flush=True)
    changed = code_changes(manifest["code"])
    if changed:
        why = ("the code changed since the study was submitted: " + "; ".join(changed) + ". This task would not "
               "compute what was submitted; resubmit the study with the same command (its complete runs are kept)")
        _save_state(log_dir, {**state, "state": "failed", "why": why})
        print(f"error: {why}", file=sys.stderr, flush=True)
        return 1
    record = read_record(log_dir)
    if record and record.get("status") == "complete":
        _save_state(log_dir, {**state, "state": "complete"})
        print("already complete", flush=True)
        return 0
    status_file = log_dir / ".exit_status"
    status_file.unlink(missing_ok=True)
    env = {**os.environ, "GPTLAB_STATUS_FILE": str(status_file), STUDY_ENV: json.dumps(entry["study"])}
    command = [os.path.expandvars(part) for part in entry["command"]]
    _save_state(log_dir, {**state, "state": "running", "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")})
    stopping = []

    with open(log_dir / "console.txt", "a", encoding="utf-8") as console:
        process = subprocess.Popen(command, env=env, stdout=console, stderr=subprocess.STDOUT, start_new_session=True)

        def stop(signum, frame):  # the time limit is near (USR1) or SLURM preempts (TERM): save and requeue
            stopping.append(signal.Signals(signum).name)
            print(f"{signal.Signals(signum).name}: asking the run to save a checkpoint and stop", flush=True)
            try:
                os.killpg(process.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass

        for sig in (signal.SIGUSR1, signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(sig, stop)
        code = process.wait()
    outcome = status_file.read_text().strip() if status_file.is_file() else f"failed (exit status {code})"
    if outcome in ("complete", "stopped"):
        _save_state(log_dir, {**state, "state": "complete", "outcome": outcome})
        print(f"run {outcome}", flush=True)
        return 0
    if outcome in ("preempted", "interrupted") or (stopping and code in DIED_OF_SIGNAL):
        state["preemptions"] = state.get("preemptions", 0) + 1
        if state["preemptions"] > options.preemption_retries:
            _save_state(log_dir, {**state, "state": "failed", "why": f"preempted {state['preemptions']} times, more "
                                  f"than preemption_retries={options.preemption_retries}"})
            return 1
        _save_state(log_dir, {**state, "state": "preempted", "why": f"{', '.join(stopping) or 'a signal'}: saved and "
                              f"requeued ({state['preemptions']} of {options.preemption_retries})"})
        requeued = _requeue(job)  # SLURM requeues a preempted job itself; this asks for the time limit's
        print(f"preempted ({', '.join(stopping) or outcome}); {'requeued' if requeued else 'SLURM requeues it'}",
              flush=True)
        return 0
    tail = _tail(log_dir / "console.txt")
    retryable = outcome.startswith("failed") and outcome != "failed: disk full"
    state["failures"] = state.get("failures", 0) + 1
    if retryable and state["failures"] <= options.failure_retries:
        _save_state(log_dir, {**state, "state": "failed, requeued", "why": outcome, "tail": tail})
        print(f"the run failed ({outcome}); requeued ({state['failures']} of {options.failure_retries} retries)",
              flush=True)
        _requeue(job)
        return 1
    _save_state(log_dir, {**state, "state": "failed", "why": outcome, "tail": tail})
    print(f"the run failed ({outcome}), not requeued; the end of its console.txt:\n{tail}", file=sys.stderr, flush=True)
    return 1


def _tail(console: Path, lines: int = 15) -> str:
    try:
        return "\n".join(console.read_text(encoding="utf-8", errors="replace").strip().splitlines()[-lines:])
    except OSError:
        return ""


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 3 or argv[0] != "task":
        print("usage: python -m gptlab.study.slurm task MANIFEST INDEX (what an array task runs)", file=sys.stderr)
        return 2
    return run_task(Path(argv[1]), int(argv[2]))


if __name__ == "__main__":
    sys.exit(main())
