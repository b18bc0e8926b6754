"""Running a study's plan: every run is a `train.py --resume auto` process of its own, so a
run that is complete is skipped, an interrupted one continues exactly from its newest
checkpoint, and killing the study and starting the same command again continues it.

Placement. By default runs go one at a time, and each run takes every GPU of the machine
(train.py relaunches itself under torchrun): results arrive in order, a stopped study
loses at most one run's progress since its last checkpoint, and a run's numbers do not
depend on how many GPUs it had (the data stream is a function of the step). With
`parallel=True` runs go side by side, one per GPU (CUDA_VISIBLE_DEVICES): faster for small
models, whose DDP communication would cost more than it saves.

A run's console output goes to `console.txt` in its log directory (or to the terminal with
`verbose`). SIGTERM or Ctrl-C stops the study: each live run is asked to stop and saves a
checkpoint at its next step, and the study exits with status 3 once they have.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import deque
from pathlib import Path

from gptlab.files import DirectoryLock, atomic_write_text
from gptlab.paths import REPO_ROOT
from gptlab.study.plan import PlannedRun, Study
from gptlab.training.metrics import duration
from gptlab.training.preemption import PREEMPTED_EXIT
from gptlab.training.checkpoint import list_checkpoints
from gptlab.training.record import STUDY_ENV, read_record


FULL_DISK = "a full disk"  # why the study stopped launching runs, when a run ran out of space


def write_definition(study: Study, runs: list[PlannedRun]) -> None:
    """study.json in the study's directory: what the study is and where its runs live."""
    study.root.mkdir(parents=True, exist_ok=True)
    path = study.root / "study.json"
    record = {**study.definition(), "runs": [{"experiment": r.experiment, "seed": r.seed,
                                              "lr_multiplier": r.lr_multiplier,
                                              "log_dir": str(r.log_dir.relative_to(study.root))} for r in runs]}
    atomic_write_text(path, json.dumps(record, indent=1) + "\n")


def command(study: Study, planned: PlannedRun, device: int | None) -> list[str]:
    # the checkout's train.py by its path, not `-m gptlab`: run from the directory that holds a checkout named
    # gptlab, `-m` would take the checkout's root for the package (a namespace package, once data/ is in it)
    cmd = [sys.executable, str(REPO_ROOT / "train.py"), "--experiment", str(planned.run.experiment.path),
           "--preset", study.preset, "--seed", str(planned.seed), "--log-dir", str(planned.log_dir),
           "--resume", "auto", *planned.overrides]
    return cmd + ["--no-launch"] if device is not None else cmd


class StudyRunner:
    def __init__(self, study: Study, runs: list[PlannedRun], devices: list[int | None], verbose: bool = False):
        self.study, self.runs, self.devices, self.verbose = study, runs, devices, verbose
        self.live: dict[int | None, tuple[int, PlannedRun, subprocess.Popen, float]] = {}
        self.stopping: str | None = None
        self.failed: list[str] = []
        self.todo: deque = deque()
        self.took: list[float] = []  # seconds of each run this process trained to the end, for the time left

    def run(self) -> int:
        """Train what is not complete; 0 when every run is, 3 when stopped, 1 when a run failed."""
        todo = self.todo
        for i, planned in enumerate(self.runs, start=1):
            record = read_record(planned.log_dir)
            if record and record.get("status") == "complete":
                print(f"[{i}/{len(self.runs)}] {planned.label}: complete, skipped ({_scores(record)})")
            else:
                todo.append((i, planned, record))
        # a closed terminal (SIGHUP) stops the study as SIGTERM does: each run saves a checkpoint first
        previous = {sig: signal.signal(sig, self._stop) for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)}
        try:
            while (todo and not self.stopping) or self.live:
                for device in self.devices:
                    if device not in self.live and todo and not self.stopping:
                        index, planned, record = todo.popleft()
                        if self._wait_for_survivor(index, planned):
                            record = read_record(planned.log_dir)
                            if record and record.get("status") == "complete":
                                print(f"[{index}/{len(self.runs)}] {planned.label}: complete ({_scores(record)})")
                                continue
                        if not self.stopping:
                            self._launch(device, index, planned, record)
                self._reap()
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        if self.stopping and self.stopping != FULL_DISK:
            root = self.study.ladder_record.get("root", self.study.root)  # a ladder's rung: the whole ladder's
            print(f"study stopped by {self.stopping}; the same command continues it from each run's newest checkpoint. "
                  f"The results so far: gptlab report {root} (complete runs compared, the others listed); "
                  f"every run's state: gptlab status {root}")
            return PREEMPTED_EXIT
        if self.failed:
            print(f"{len(self.failed)} run(s) did not complete: {', '.join(self.failed)}; see each console.txt. "
                  f"The same command retries them and skips the complete ones")
            return 1
        return 0

    def _wait_for_survivor(self, index: int, planned: PlannedRun) -> bool:
        """A run of this study still training in its directory (a study killed before its runs could
        stop: they end on their own once they have saved): wait for it to end instead of calling the
        run failed. Returns whether there was one."""
        lock = DirectoryLock(planned.log_dir)
        if not lock.held():
            return False
        print(f"[{index}/{len(self.runs)}] {planned.label}: still training in {planned.log_dir} (pid {lock.holder()}, "
              f"left by an earlier study process); waiting for it to end", flush=True)
        while lock.held() and not self.stopping:
            time.sleep(0.5)
        return True

    def _launch(self, device: int | None, index: int, planned: PlannedRun, record: dict | None) -> None:
        planned.log_dir.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "GPTLAB_STATUS_FILE": str(planned.log_dir / ".exit_status"),
               STUDY_ENV: json.dumps(planned.record(self.study))}
        if device is not None:
            env["CUDA_VISIBLE_DEVICES"] = str(device)
        where = "" if device is None else f" on GPU {device}"
        checkpoints = list_checkpoints(planned.log_dir)
        resume = f", resuming from {checkpoints[0].name} (the newest checkpoint)" if checkpoints else (
            ", from step 0 (no checkpoint)" if record else "")
        print(f"[{index}/{len(self.runs)}] {planned.label}: training{where}{resume} ({planned.log_dir})", flush=True)
        (planned.log_dir / ".exit_status").unlink(missing_ok=True)
        out = None if self.verbose else open(planned.log_dir / "console.txt", "a", encoding="utf-8")
        try:  # its own session: a Ctrl-C reaches the study alone, which asks each run to stop once
            process = subprocess.Popen(command(self.study, planned, device), env=env, stdout=out,
                                       stderr=subprocess.STDOUT if out else None, start_new_session=True,
                                       preexec_fn=die_with_parent)
        finally:
            if out:
                out.close()
        self.live[device] = (index, planned, process, time.perf_counter())
        if self.stopping:  # the stop came while it was being launched: it gets it too
            process.send_signal(signal.SIGTERM)

    def _reap(self) -> None:
        time.sleep(0.2)
        for device, (index, planned, process, started) in list(self.live.items()):
            code = process.poll()
            if code is None:
                continue
            del self.live[device]
            status_file = planned.log_dir / ".exit_status"
            outcome = status_file.read_text().strip() if status_file.is_file() else f"failed (exit status {code})"
            head = f"[{index}/{len(self.runs)}] {planned.label}: {outcome}"
            took = duration(time.perf_counter() - started)
            if outcome == "complete":
                self.took.append(time.perf_counter() - started)
                print(f"{head} in {took} ({_scores(read_record(planned.log_dir) or {})}){self._time_left()}",
                      flush=True)
            elif outcome in ("preempted", "interrupted") and self.stopping:
                print(f"{head} after {took}", flush=True)
            elif outcome == "diverged" and planned.lr_multiplier != 1 and planned.seed == planned.first_seed:
                print(f"{head} after {took}: a point of the learning-rate sweep, left out of its fit", flush=True)
            elif self.stopping and code in (-signal.SIGTERM, -signal.SIGINT, -signal.SIGHUP):
                # killed by the study's own stop before its handler was in place: stopped, nothing lost
                print(f"[{index}/{len(self.runs)}] {planned.label}: stopped as it started", flush=True)
            else:
                self.failed.append(planned.label)
                print(f"{head} after {took}{_tail(planned.log_dir / 'console.txt')}", flush=True)
                if outcome == "failed: disk full" and not self.stopping:
                    self.stopping = FULL_DISK
                    print("the disk is full: no further run starts (each would fail the same way); free space, "
                          "then run the same command to continue", flush=True)

    def _time_left(self) -> str:
        """'; about 4m left for 8 runs': the runs still to train at the mean time of those trained so far."""
        left = len(self.todo) + len(self.live)
        if not left or not self.took or self.stopping:
            return ""
        seconds = sum(self.took) / len(self.took) * left / max(1, len(self.devices))
        return f"; about {duration(seconds)} left for {left} run{'s' if left > 1 else ''}"

    def _stop(self, signum, frame) -> None:
        if signum == signal.SIGHUP:  # the terminal is gone: say what happens in the study's directory instead
            sys.stdout = sys.stderr = open(self.study.root / "study.out", "a", encoding="utf-8")
        if self.stopping is None:
            print(f"\n{signal.Signals(signum).name}: asking each run to save a checkpoint and stop; no new run "
                  f"starts", flush=True)
        self.stopping = signal.Signals(signum).name
        for _, _, process, _ in self.live.values():
            process.send_signal(signum)  # a second Ctrl-C stops a run at once, as in train.py


def die_with_parent() -> None:
    """In a run's process before it starts: Linux sends it SIGTERM (a checkpoint, then exit) when the
    study's process dies, however it dies (SIGKILL, the OOM killer), so no run trains on as an orphan."""
    if sys.platform.startswith("linux"):
        import ctypes
        PR_SET_PDEATHSIG = 1
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def _scores(record: dict) -> str:
    parts = [f"val {record['val_loss']:.4f}" if record.get("val_loss") is not None else "no val loss"]
    if record.get("hellaswag_acc_norm") is not None:
        parts.append(f"HellaSwag acc_norm {record['hellaswag_acc_norm']:.4f}")
    return ", ".join(parts)


def _tail(console: Path, lines: int = 6) -> str:
    if not console.is_file():
        return ""
    text = console.read_text(encoding="utf-8", errors="replace").strip().splitlines()[-lines:]
    return "; its last lines:\n    " + "\n    ".join(text) if text else ""
