"""Preemption: SIGTERM (what a cluster scheduler sends before it takes the machine), SIGHUP
(the terminal closed) or SIGINT (Ctrl-C) asks the run to stop. The loop notices at the next step boundary, saves a
checkpoint there and exits with PREEMPTED_EXIT; `--resume auto` continues exactly. A second
Ctrl-C stops at once. Every rank stops at the same step: the request is shared by all."""

from __future__ import annotations

import os
import signal
import sys
import threading

from gptlab.training.distributed import Dist, any_rank

PREEMPTED_EXIT = 3  # train.py's exit status after a preemption checkpoint


class Preempted(Exception):
    """The run stopped on request with a checkpoint; the message says where."""


class Preemption:
    """A context that turns SIGTERM and SIGINT into a request the loop polls."""

    SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)  # SIGHUP: the terminal closed

    def __init__(self):
        self.signal: int | None = None
        self._previous = {}

    def __enter__(self) -> Preemption:
        if threading.current_thread() is threading.main_thread():  # only the main thread may set handlers
            for sig in self.SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

    def _handle(self, signum, frame) -> None:
        if self.signal == signal.SIGINT and signum == signal.SIGINT:
            raise KeyboardInterrupt  # the second Ctrl-C: stop now
        if signum == signal.SIGHUP:  # the terminal is gone: what the run prints goes nowhere (log.txt has it all)
            sys.stdout = sys.stderr = open(os.devnull, "w")
        self.signal = signum

    def requested(self, ctx: Dist) -> bool:
        """True on every rank once any rank was asked to stop (a collective: call it on all ranks)."""
        return any_rank(self.signal is not None, ctx)

    @property
    def name(self) -> str:
        return signal.Signals(self.signal).name if self.signal else "another rank's signal"
