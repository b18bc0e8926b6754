"""A run's fixed cost: the seconds from a fresh process's start to its first training step (Python, imports, the
tokenizer and corpus, building and checking the model, the first evaluation) and to the end of a 1-step run, for
the smoke preset. A ladder trains dozens of small runs, where this can be a large share of each.

The child logs `startup` at its first step (gptlab.training.metrics: its age from /proc at that step's start);
the end is timed here, around the whole process. Each figure is the fastest of the repetitions, with the slowest
beside it."""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from pathlib import Path

from gptlab.paths import REPO_ROOT
from gptlab.training.logger import read_log

COMMAND = ["--preset", "smoke", "--max-steps", "1"]  # what is measured: a 1-step smoke run, as a user types it


def measure_once(experiment: str, extra: list[str]) -> dict:
    with tempfile.TemporaryDirectory(prefix="gptlab-startup-") as tmp:
        command = [sys.executable, str(REPO_ROOT / "train.py"), "--experiment", experiment, *COMMAND,
                   "--log-dir", tmp, *extra]
        start = time.perf_counter()
        result = subprocess.run(command, capture_output=True, text=True)
        total = time.perf_counter() - start
        if result.returncode != 0:
            tail = "\n".join((result.stderr or result.stdout).strip().splitlines()[-5:])
            raise RuntimeError(f"{' '.join(command)} failed (exit status {result.returncode}):\n{tail}")
        startup = read_log(Path(tmp) / "log.txt").get("startup")
    return {"first_step": startup[0][1] if startup else None, "total": total}


def measure(experiment: str = "baseline", repeats: int = 3, extra: list[str] = ()) -> dict:
    """The fixed cost of `repeats` fresh 1-step smoke runs of the experiment: each figure's fastest and slowest."""
    runs = [measure_once(experiment, list(extra)) for _ in range(repeats)]
    out = {"experiment": experiment, "command": ["train.py", "--experiment", experiment, *COMMAND, *extra],
           "repeats": repeats, "runs": runs}
    for key in ("first_step", "total"):
        values = [r[key] for r in runs if r[key] is not None]
        out[key] = {"fastest": min(values), "slowest": max(values)} if values else None
    return out


def format_startup(result: dict) -> str:
    def seconds(figure: dict | None) -> str:
        return f"{figure['fastest']:.2f} s (slowest {figure['slowest']:.2f} s)" if figure else "not logged"
    return (f"fixed cost of `python {' '.join(result['command'])}`, fastest of {result['repeats']} fresh processes:\n"
            f"  process start to the first training step: {seconds(result['first_step'])}\n"
            f"  process start to the end of the run:      {seconds(result['total'])}")
