"""`gptlab status DIR`: every run of a study at a glance, local or on SLURM.

    gptlab status log_train/quick

One line per run: experiment, seed (and learning-rate multiplier), state, its SLURM job, step of
max, last validation loss, tokens/s, and how long ago its log last moved; then a summary line.
It reads the runs' own files (run.json, log.txt, slurm.json, the study's manifest) and asks
`squeue` about the jobs the manifest names; it never needs SLURM's accounting (sacct).

States: complete; running (its process holds the run's lock, or SLURM runs its task); pending
(queued, not started); requeued (preempted or at its time limit, checkpointed and queued again);
cancelled (scancel: checkpointed, not queued; submitting the study again continues it); stopped
(interrupted, not queued: the same study command continues it); failed (with why: the end of its
console, or of SLURM's output where the task died before the run started); diverged; missing (its
job was submitted, its directory is gone); not started.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter
from pathlib import Path

from gptlab.files import DirectoryLock
from gptlab.paths import missing
from gptlab.study.slurm import SlurmError, read_manifest, squeue_states, task_state
from gptlab.training.metrics import duration
from gptlab.training.record import read_record


def study_runs(root: Path) -> list[dict]:
    """The study's runs as study.json lists them ({experiment, seed, lr_multiplier, log_dir}), or
    every run found under root."""
    definition = root / "study.json"
    if definition.is_file():
        try:
            runs = json.loads(definition.read_text(encoding="utf-8"))["runs"]
            return [{**r, "log_dir": str(root / r["log_dir"])} for r in runs]
        except (OSError, ValueError, KeyError, TypeError):
            pass
    found = sorted({p.parent for pattern in ("run.json", "log.txt") for p in root.rglob(pattern)})
    return [{"experiment": None, "seed": None, "log_dir": str(d)} for d in found]


def run_status(run: dict, jobs: dict[str, str], states: dict[str, str], now: float, root: Path | None = None) -> dict:
    log_dir = Path(run["log_dir"])
    record = read_record(log_dir) if log_dir.is_dir() else None
    task = task_state(log_dir) if (log_dir / "slurm.json").is_file() else {}
    job = jobs.get(str(log_dir))
    queued = states.get(job) if job else None
    held = log_dir.is_dir() and DirectoryLock(log_dir).held()
    status = (record or {}).get("status")
    why = None
    if status == "complete":
        state = "complete"
    elif held or queued == "RUNNING":
        state = "running"
    elif queued in ("PENDING", "REQUEUED", "REQUEUE_HOLD") and task.get("state") == "preempted":
        state = "requeued"
    elif queued and queued != "COMPLETING":
        state = "pending" if not record else "requeued" if queued.startswith("REQUEUE") else queued.lower()
    elif task.get("state") == "cancelled":
        state = "cancelled"
    elif task.get("state", "").startswith("failed") or status == "failed":
        state = "failed"
    elif status == "diverged":
        state = "diverged"
    elif record:
        state = "stopped"
    elif job and root is not None and _slurm_output(root, job, lines=10 ** 6):
        output = _slurm_output(root, job, lines=10 ** 6)
        if "gptlab task " in output and not log_dir.exists():  # the task started (and made the directory)
            state, why = "missing", f"its task (job {job}) ran, but its directory {log_dir} is gone (deleted?)"
        else:  # the task's job ran and left no run: it died before gptlab started (the setup, the python)
            state, why = "failed", ("failed before the run started; the end of its SLURM output:\n" +
                                    "\n".join(output.splitlines()[-3:]))
    else:
        state = "not started"
    if why is None:
        why = task.get("why") if state in ("failed", "requeued", "cancelled") else (record or {}).get("status_why") \
            if state in ("failed", "diverged", "stopped") else None
    if state == "failed" and why and "\n" not in why:  # the run's own last words, where it failed
        tail = task.get("tail") or _last_lines(log_dir / "console.txt")
        if tail:
            why += "; the end of its console.txt:\n" + "\n".join(tail.splitlines()[-3:])
    log = log_dir / "log.txt"
    moved = now - log.stat().st_mtime if log.is_file() else None
    return {"experiment": run.get("experiment") or (record or {}).get("experiment") or log_dir.name,
            "seed": run.get("seed") if run.get("seed") is not None else (record or {}).get("seed"),
            "lr_multiplier": run.get("lr_multiplier", 1.0), "state": state, "job": job,
            "step": (record or {}).get("step"), "max_steps": (record or {}).get("max_steps"),
            "val_loss": (record or {}).get("val_loss"), "tok_per_sec": (record or {}).get("tok_per_sec"),
            "log_moved_seconds": moved, "why": why, "log_dir": str(log_dir),
            "preemptions": task.get("preemptions", 0), "failures": task.get("failures", 0),
            "warnings": (record or {}).get("warnings") or []}  # a damaged run.json, rebuilt from log.txt


def _slurm_output(root: Path, job: str, lines: int = 3) -> str:
    """The last lines of SLURM's output file of an array task (slurm/<array>_<task>.out), or ""."""
    return _last_lines(Path(root) / "slurm" / f"{job}.out", lines)


def _last_lines(path: Path, lines: int = 3) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace").strip()
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


def status(root: Path) -> tuple[list[dict], str]:
    """Every run's status, and notes: SLURM's manifest damaged (the runs' own files are shown), or squeue
    unreachable (SLURM states unknown). A ladder's root: every rung's runs, each row naming its rung."""
    try:
        ladder = json.loads((Path(root) / "ladder.json").read_text(encoding="utf-8"))
        rungs = [(r["name"], Path(root) / r["dir"]) for r in ladder["rungs"]]
    except (OSError, ValueError, KeyError, TypeError):
        rungs = None
    if rungs:
        rows, notes = [], []
        for name, where in rungs:
            if where.is_dir():
                found, note = status(where)
                rows += [{**r, "rung": name} for r in found]
                notes += [note] if note else []
            else:
                rows.append({"rung": name, "experiment": "-", "seed": None, "lr_multiplier": 1.0, "state": "not started",
                             "job": None, "step": None, "max_steps": None, "val_loss": None, "tok_per_sec": None,
                             "log_moved_seconds": None, "why": None, "log_dir": str(where), "preemptions": 0,
                             "failures": 0, "warnings": []})
        return rows, "\n".join(dict.fromkeys(notes))
    runs = study_runs(root)
    notes = []
    try:
        manifest = read_manifest(root) or {}
    except SlurmError as e:
        manifest = {}
        notes.append(f"warning: {e} The runs' own files are shown; their SLURM jobs are unknown.")
    listed = manifest.get("runs") if isinstance(manifest.get("runs"), list) else []
    jobs = {r["log_dir"]: str(r["job"]) if r.get("job") is not None else None for r in listed}
    known = {r["log_dir"] for r in runs}
    runs += [{"experiment": r.get("experiment"), "seed": r.get("seed"), "lr_multiplier": r.get("lr_multiplier", 1.0),
              "log_dir": r["log_dir"]} for r in listed if r["log_dir"] not in known]
    try:
        states = squeue_states([j for j in jobs.values() if j]) if jobs else {}
    except (SlurmError, OSError) as e:
        states = {}
        notes.append(f"squeue could not be asked ({e}): SLURM states unknown")
    now = time.time()
    return [run_status(r, jobs, states, now, root) for r in runs], "\n".join(notes)


def format_status(rows: list[dict], note: str = "") -> str:
    head = ["experiment", "seed", "state", "job", "step", "val loss", "tok/s", "log moved"]
    table = [head]
    for r in rows:
        label = (f"{r['rung']} " if r.get("rung") else "") + r["experiment"] + (
            f" x{r['lr_multiplier']:g}" if r.get("lr_multiplier", 1.0) != 1.0 else "")
        state = r["state"] + (f" ({r['preemptions']} preemption(s))" if r["preemptions"] and r["state"] != "failed"
                              else "")
        table.append([label, str(r["seed"] if r["seed"] is not None else "-"), state, r["job"] or "-",
                      f"{r['step']}/{r['max_steps']}" if r["step"] is not None else "-",
                      f"{r['val_loss']:.4f}" if isinstance(r["val_loss"], (int, float)) else "-",
                      f"{r['tok_per_sec']:,.0f}" if r["tok_per_sec"] else "-",
                      f"{duration(r['log_moved_seconds'])} ago" if r["log_moved_seconds"] is not None else "-"])
    widths = [max(len(row[i]) for row in table) for i in range(len(head))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in table]
    for r in rows:
        if r["why"]:
            lines.append(f"  {r['experiment']} seed {r['seed']}: " + r["why"].replace("\n", "\n      "))
        lines += [f"  warning: {w}" for w in r.get("warnings", [])]
    counts = Counter(r["state"] for r in rows)
    lines.append(f"{len(rows)} runs: " + ", ".join(f"{n} {s}" for s, n in counts.most_common()))
    if note:
        lines.append(note)
    return "\n".join(lines)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="gptlab status", description="Every run of a study (local or SLURM) at a glance.",
                                allow_abbrev=False)
    p.add_argument("dir", type=Path, help="the study's directory (its --out)")
    p.add_argument("--json", action="store_true", help="the runs as JSON instead of a table")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(sys.argv[1:] if argv is None else argv)
    if not args.dir.is_dir():
        print(f"error: {missing(args.dir)}; give a study's directory (its --out)", file=sys.stderr)
        return 2
    try:
        rows, note = status(args.dir)
    except SlurmError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if not rows:
        print(f"error: no runs under {args.dir.resolve()}; start one with gptlab study ..." + (f"\n{note}" if note else ""),
              file=sys.stderr)
        return 2
    print(json.dumps(rows, indent=1) if args.json else format_status(rows, note))
    return 0


if __name__ == "__main__":
    sys.exit(main())
