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


CPUS_PER_GPU = 4  # CPUs asked for each GPU when cpus_per_task is not set: the data loader and the rank's own work
MEM_PER_CPU = "8G"  # memory asked for each CPU when mem is not set


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
    cpus_per_task: int = 0  # per node; 0: CPUS_PER_GPU for each GPU, 1 for a CPU run
    mem: str = ""  # per node, e.g. "64G"; "" = MEM_PER_CPU for each CPU (--mem-per-cpu)
    max_parallel: int = 0  # tasks running at once (the array's %N); 0 = as many as SLURM allows
    signal_seconds: int = 300  # how long before the time limit SLURM asks the run to save and requeue
    preemption_retries: int = 100  # requeues after a preemption or a time limit
    failure_retries: int = 1  # requeues after a failure of the run's own (a crash); a refused config: none
    sbatch: list[str] = field(default_factory=list)  # extra "#SBATCH" lines, e.g. ["--constraint=a100"]
    setup: list[str] = field(default_factory=list)  # shell lines run before training: module load, source venv
    python: str = ""  # the interpreter on the nodes; "" = `python` after setup lines, else the one that submitted
    port: int = 29500  # the c10d rendezvous port's base on a run's first node (several nodes): + job id mod 10000

    @property
    def cpus(self) -> int:
        """The CPUs each node's task asks for: cpus_per_task, or gptlab's default."""
        return self.cpus_per_task or (CPUS_PER_GPU * self.gpus_per_node if self.gpus_per_node else 1)

    def warnings(self) -> list[str]:
        """Settings that work but waste the allocation: a time limit that leaves little time to train."""
        limit = time_limit_seconds(self.time)
        if limit is not None and self.signal_seconds > limit / 2:
            return [f"time={self.time} with signal_seconds={self.signal_seconds}: each task is asked to save "
                    f"{self.signal_seconds} s before its limit, so it trains at most {limit - self.signal_seconds} s "
                    f"({(limit - self.signal_seconds) / limit:.0%} of the allocation) and then requeues, starting "
                    f"again (imports, data, the model) each time: give a longer time, or a smaller signal_seconds "
                    f"that still leaves time to save a checkpoint"]
        return []

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
        if not 1024 <= self.port <= 65535 - 9999:
            problems.append(f"port={self.port}: each run's rendezvous uses port + (its job id mod 10000), so the "
                            f"base must be from 1024 to {65535 - 9999}")
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
                    "--mem": "mem", "--mem-per-cpu": "mem", "--cpus-per-task": "cpus_per_task", "-c": "cpus_per_task",
                    "-o": "--output"}


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
    from gptlab.training.run import code_digest, git_commit
    experiments = {}
    for p in experiment_paths:
        path = Path(p)
        experiments[str(path)] = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else None
    return {"commit": git_commit(), "gptlab_sha256": code_digest(), "experiments": experiments}


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
    """The train.py command of a task. One process: train.py itself. Several GPUs on one node: torchrun,
    which forwards the task's signals to its processes. Several nodes: a torchrun on each node, started by
    srun with the task's CPUs (srun 22.05-23.02 does not inherit --cpus-per-task), meeting in a c10d
    rendezvous on the first node at a port of the run's own (two runs on one node never share one)."""
    script, train_args = cmd[1], cmd[2:]  # python, train.py, its arguments
    if options.nodes == 1 and options.gpus_per_node <= 1:
        return [*cmd, "--no-launch"]
    if options.nodes == 1:
        return [cmd[0], "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={options.gpus_per_node}",
                script, *train_args]
    # --kill-on-bad-exit: a node that crashed takes the others down at once instead of leaving them in a
    # collective until its timeout; a preempted run saves as one collective that ends in a barrier, so no
    # node exits (3) before every node's part of the checkpoint is written
    return ["srun", "--kill-on-bad-exit=1", f"--nodes={options.nodes}", "--ntasks-per-node=1",
            "--cpus-per-task=${SLURM_CPUS_PER_TASK}", cmd[0], "-m", "torch.distributed.run",
            f"--nnodes={options.nodes}",
            f"--nproc_per_node={max(1, options.gpus_per_node)}", "--rdzv_backend=c10d",
            "--rdzv_endpoint=${MASTER_ADDR}:${MASTER_PORT}", "--rdzv_id=${SLURM_JOB_ID}", script, *train_args]


def sbatch_script(root: Path, name: str, options: SlurmOptions, tasks: int, python: str, submission: Path) -> str:
    """The script one submission hands to sbatch: its #SBATCH lines, the setup lines, then the task, which
    trains run number $SLURM_ARRAY_TASK_ID of this submission's own file (fixed when it was submitted)."""
    array = f"0-{tasks - 1}" + (f"%{options.max_parallel}" if options.max_parallel else "")
    lines = ["#!/bin/bash", f"#SBATCH --job-name=gptlab-{name}", f"#SBATCH --array={array}",
             f"#SBATCH --nodes={options.nodes}", "#SBATCH --ntasks-per-node=1", f"#SBATCH --cpus-per-task={options.cpus}"]
    if options.gpus_per_node:
        lines.append(f"#SBATCH --gpus-per-node={options.gpus_per_node}")
    lines.append(f"#SBATCH --mem={options.mem}" if options.mem else f"#SBATCH --mem-per-cpu={MEM_PER_CPU}")
    for flag, value in (("partition", options.partition), ("account", options.account), ("qos", options.qos),
                        ("time", options.time)):
        if value:
            lines.append(f"#SBATCH --{flag}={value}")
    lines += ["#SBATCH --requeue", "#SBATCH --open-mode=append",
              f"#SBATCH --signal=B:USR1@{options.signal_seconds}",
              f"#SBATCH --output={root / 'slurm' / '%A_%a.out'}"]
    lines += [f"#SBATCH {line.removeprefix('#SBATCH').strip()}" for line in options.sbatch]
    lines += ["", "# setup (--slurm setup=...)"] + options.setup if options.setup else [""]
    if options.nodes > 1:
        lines += ["# the run's first node and port: torchrun's rendezvous, a port of this job's own",
                  'export MASTER_ADDR="$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)"',
                  f"export MASTER_PORT=$(( {options.port} + SLURM_JOB_ID % 10000 ))"]
    lines += [f"cd {shlex.quote(str(REPO_ROOT))}",
              "# exec: the task is the batch step's own process, the one SLURM signals (USR1 before the time limit,",
              "# TERM on scancel or a preemption)",
              f"exec {shlex.quote(python)} -m gptlab.study.slurm task {shlex.quote(str(submission))} "
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
    """Submit as one job array the runs that are neither complete nor queued or running already; returns what
    was done, in words. What each task trains is fixed when it is submitted: the submission's own file
    (slurm/submission_<n>.json) lists its runs, and task i trains the i-th, whatever later submissions do.
    The study's manifest (each run's job, for `gptlab status` and for not submitting a run twice) is written
    only once sbatch has taken the array: a refused submission changes nothing."""
    from gptlab.study.runner import command
    root = study.root
    python = options.python or ("python" if options.setup else sys.executable)  # setup lines choose the environment
    old = read_manifest(root) or {}
    jobs = {r["log_dir"]: str(r["job"]) if r.get("job") is not None else None for r in old.get("runs", [])}
    states = squeue_states([j for j in jobs.values() if j]) if jobs and not dry_run else {}
    entries, todo, skipped = [], [], {"complete": 0, "queued or running": 0}
    for planned in runs:
        log_dir = str(planned.log_dir)
        job = jobs.get(log_dir)
        record = read_record(planned.log_dir)
        entry = {"label": planned.label, "experiment": planned.experiment, "seed": planned.seed,
                 "lr_multiplier": planned.lr_multiplier, "log_dir": log_dir,
                 "command": task_command(options, [python, *command(study, planned, device=None)[1:]]),
                 "study": planned.record(study), "job": job}
        if record and record.get("status") == "complete":
            skipped["complete"] += 1
        elif job and states.get(job) in ALIVE:
            skipped["queued or running"] += 1
        else:
            todo.append(entry)
        entries.append(entry)
    # runs an earlier submission listed that this plan does not (another order, fewer experiments): kept
    entries += [r for r in old.get("runs", []) if r["log_dir"] not in {e["log_dir"] for e in entries}]
    experiment_files = sorted({str(p.run.experiment.path) for p in runs})
    code = code_fingerprint(experiment_files)
    number = len(old.get("submissions", [])) + 1
    submission_path = root / "slurm" / f"submission_{number}.json"
    script = sbatch_script(root, study.name, options, len(todo), python, submission_path) if todo else ""
    said = ", ".join(f"{n} {why}" for why, n in skipped.items() if n)
    notes = "".join(f"# warning: {w}\n" for w in options.warnings())
    if dry_run:
        shown = "\n".join(f"#   task {i} ({e['label']}): {shlex.join(e['command'])}" for i, e in enumerate(todo[:2]))
        return ((script or "# nothing to submit\n") + notes + (f"# not submitted again: {said}\n" if said else "") +
                (f"# each task trains its run, for example:\n{shown}\n" if todo else "") +
                f"# --dry-run: nothing was submitted; {len(todo)} task(s) would be\n")
    if not todo:
        return f"nothing to submit: every run is {said}"
    (root / "slurm").mkdir(parents=True, exist_ok=True)
    atomic_write_text(submission_path, json.dumps({"study": study.definition(), "root": str(root), "python": python,
                                                   "slurm": dataclasses.asdict(options), "code": code, "runs": todo},
                                                  indent=1) + "\n")  # before any task can start
    script_path = submission_path.with_suffix(".sbatch")
    atomic_write_text(script_path, script)
    result = subprocess.run(["sbatch", "--parsable", str(script_path)], capture_output=True, text=True, timeout=120)
    if result.returncode != 0:
        submission_path.unlink(missing_ok=True)
        script_path.unlink(missing_ok=True)
        raise SlurmError(f"sbatch refused the study's job array: {result.stderr.strip() or result.stdout.strip()}. "
                         f"Nothing was submitted, and the study's manifest is as it was")
    array_job = result.stdout.strip().split(";")[0]
    for i, entry in enumerate(todo):
        entry["job"] = f"{array_job}_{i}"
    manifest = {"study": study.definition(), "root": str(root), "python": python, "slurm": dataclasses.asdict(options),
                "code": code, "runs": entries,
                "submissions": old.get("submissions", []) + [{"job": array_job, "tasks": len(todo),
                                                               "file": str(submission_path), "script": str(script_path),
                                                               "time": time.strftime("%Y-%m-%dT%H:%M:%S%z")}]}
    atomic_write_text(manifest_path(root), json.dumps(manifest, indent=1) + "\n")
    warned = "".join(f"\nwarning: {w}" for w in options.warnings())
    return (f"submitted job array {array_job} with {len(todo)} task(s) ({script_path})"
            + (f"; not submitted again: {said}" if said else "") +
            f". `gptlab status {root}` shows every run; the same command submits what is missing" + warned)


# ---- a task, on the cluster

def task_state(log_dir: Path) -> dict:
    path = Path(log_dir) / TASK_STATE
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {"preemptions": 0, "failures": 0}
    return state if isinstance(state, dict) else {"preemptions": 0, "failures": 0}


def _save_state(log_dir: Path, state: dict) -> None:
    atomic_write_text(Path(log_dir) / TASK_STATE, json.dumps(state, indent=1) + "\n")


def _requeue(job: str) -> bool:
    """Put this task back in the queue, unless it is no longer running: `Incomplete` requeues only a job
    that is still RUNNING (or suspended), so a task the user cancelled meanwhile stays cancelled."""
    result = subprocess.run(["scontrol", "requeue", "Incomplete", job], capture_output=True, text=True, timeout=60)
    return result.returncode == 0


def why_terminated(job_id: str) -> str:
    """Why SLURM sent this job SIGTERM: "preempted" (its PreemptTime is set, or SLURM has requeued it already,
    which counts a restart: with PreemptMode=REQUEUE, or `scontrol requeue`, SLURM requeues it itself), "time limit" (Reason=TimeLimit: the USR1 asked for did not come in time), or
    "cancelled" (scancel, or anything else: never requeued). From `scontrol show job`, which shows every one
    of them as COMPLETING."""
    try:
        out = subprocess.run(["scontrol", "show", "job", "-o", job_id], capture_output=True, text=True,
                             timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return "cancelled"
    fields = dict(part.split("=", 1) for part in out.split() if "=" in part)
    if fields.get("PreemptTime", "None") not in ("None", "Unknown", ""):
        return "preempted"
    restarts = fields.get("Restarts", "0")
    if restarts.isdigit() and int(restarts) > int(os.environ.get("SLURM_RESTART_COUNT") or 0):
        return "preempted"  # requeued by SLURM already (a preemption, or an administrator's scontrol requeue)
    if fields.get("Reason") == "TimeLimit" or fields.get("JobState", "").startswith("TIMEOUT"):
        return "time limit"
    return "cancelled"


def _steps(job_id: str) -> list[str]:
    """The job's numbered steps (srun's), as 123.0: where a multi-node run's torchruns are."""
    out = subprocess.run(["squeue", "-h", "-s", "-j", job_id, "-o", "%i"], capture_output=True, text=True,
                         timeout=30).stdout
    return [s.strip() for s in out.split() if re.fullmatch(r"\d+(_\d+)?\.\d+", s.strip())]


def run_task(submission_file: Path, index: int) -> int:
    """One array task: the index-th run of its submission, trained (or resumed) to the end, saved and
    requeued at the time limit, saved at a cancel or a preemption, or failed.

    Signals, as SLURM sends them to the batch step's process (this one): USR1, `signal_seconds` before the
    time limit (--signal=B:USR1): the run saves and the task requeues itself (`scontrol requeue Incomplete`,
    counted against preemption_retries). TERM, from scancel or a preemption: the run saves and the task
    exits without requeueing; a preemption under PreemptMode=REQUEUE is requeued by SLURM itself, a cancel
    stays cancelled. The trainer is this process's child in its process group, so SLURM's own signals and
    kill reach it too, and it gets SIGTERM should this process die (Linux's parent-death signal)."""
    from gptlab.study.runner import die_with_parent
    manifest = json.loads(Path(submission_file).read_text(encoding="utf-8"))
    entry = manifest["runs"][index]
    options = SlurmOptions(**manifest["slurm"])
    log_dir = Path(entry["log_dir"])
    log_dir.mkdir(parents=True, exist_ok=True)
    array_job = os.environ.get("SLURM_ARRAY_JOB_ID")
    job = f"{array_job}_{os.environ['SLURM_ARRAY_TASK_ID']}" if array_job else os.environ.get("SLURM_JOB_ID", "?")
    state = task_state(log_dir)
    if state.get("submission") != (array_job or job):  # a new submission: its budgets start afresh
        history = state.get("history", []) + ([{k: state.get(k) for k in ("job", "state", "why", "preemptions",
                                                                            "failures")}] if "job" in state else [])
        state = {"preemptions": 0, "failures": 0, "history": history[-20:]}
    state.update({"job": job, "submission": array_job or job, "label": entry["label"]})
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
    if state["preemptions"] > options.preemption_retries:  # SLURM requeued it once more than the budget allows
        _save_state(log_dir, {**state, "state": "failed", "why": f"preempted {state['preemptions']} times, more than "
                              f"preemption_retries={options.preemption_retries}"})
        return 1
    status_file = log_dir / ".exit_status"
    status_file.unlink(missing_ok=True)
    env = {**os.environ, "GPTLAB_STATUS_FILE": str(status_file), STUDY_ENV: json.dumps(entry["study"])}
    command = [os.path.expandvars(part) for part in entry["command"]]
    _save_state(log_dir, {**state, "state": "running", "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")})
    stopping = []
    under_srun = command[0] == "srun"

    with open(log_dir / "console.txt", "a", encoding="utf-8") as console:
        process = subprocess.Popen(command, env=env, stdout=console, stderr=subprocess.STDOUT,
                                   preexec_fn=die_with_parent)

        def stop(signum, frame):
            name = signal.Signals(signum).name
            stopping.append(name)
            print(f"{name}: asking the run to save a checkpoint and stop"
                  + (" (then requeueing it: the time limit is near)" if signum == signal.SIGUSR1 else ""), flush=True)
            if under_srun:  # srun turns a TERM it gets into a KILL of its step: signal the step's torchruns instead
                if signum == signal.SIGUSR1:
                    for step in _steps(os.environ.get("SLURM_JOB_ID", "")):
                        subprocess.run(["scancel", "--signal=TERM", step], capture_output=True, timeout=30)
                return  # a TERM: SLURM signals the steps itself
            try:
                process.send_signal(signal.SIGTERM)  # train.py or torchrun, which passes it to its processes
            except ProcessLookupError:
                pass

        for sig in (signal.SIGUSR1, signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(sig, stop)
        code = process.wait()
    outcome = status_file.read_text().strip() if status_file.is_file() else f"failed (exit status {code})"
    step = (read_record(log_dir) or {}).get("step")
    at = f" at step {step}" if step is not None else ""
    if outcome in ("complete", "stopped"):
        _save_state(log_dir, {**state, "state": "complete", "outcome": outcome})
        print(f"run {outcome}", flush=True)
        return 0
    saved = outcome in ("preempted", "interrupted") or (stopping and code in DIED_OF_SIGNAL)
    if saved and stopping:
        reason = "time limit" if "SIGUSR1" in stopping else why_terminated(os.environ.get("SLURM_JOB_ID", job))
        if reason == "cancelled":
            _save_state(log_dir, {**state, "state": "cancelled", "why": f"cancelled ({', '.join(stopping)}): saved"
                                  f"{at}, not requeued; submitting the study again continues it"})
            print(f"cancelled: saved{at}, not requeued", flush=True)
            return 0
        state["preemptions"] = state.get("preemptions", 0) + 1
        if reason == "preempted":  # PreemptMode=REQUEUE: SLURM requeues it; CANCEL: submit again
            _save_state(log_dir, {**state, "state": "preempted", "why": f"preempted ({', '.join(stopping)}): saved"
                                  f"{at}; SLURM requeues it where the cluster preempts by requeueing "
                                  f"({state['preemptions']} of {options.preemption_retries})"})
            print(f"preempted: saved{at}", flush=True)
            return 0
        if state["preemptions"] > options.preemption_retries:
            _save_state(log_dir, {**state, "state": "failed", "why": f"at its time limit {state['preemptions']} times, "
                                  f"more than preemption_retries={options.preemption_retries}"})
            return 1
        requeued = _requeue(job)
        _save_state(log_dir, {**state, "state": "preempted" if requeued else "cancelled",
                              "why": f"time limit ({', '.join(stopping)}): saved{at}, "
                                     + (f"requeued ({state['preemptions']} of {options.preemption_retries})"
                                        if requeued else "not requeued: the task was no longer running (cancelled?)")})
        print(f"time limit: saved{at}; {'requeued' if requeued else 'not requeued (no longer running)'}", flush=True)
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
        print("usage: python -m gptlab.study.slurm task SUBMISSION INDEX (what an array task runs)", file=sys.stderr)
        return 2
    return run_task(Path(argv[1]), int(argv[2]))


if __name__ == "__main__":
    sys.exit(main())
