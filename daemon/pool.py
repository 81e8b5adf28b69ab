"""Worker processes that run ``analyze_file``, each file under a hard time limit.

A decoder can hang or crash inside FFmpeg, where no Python timeout reaches; so analysis runs in
separate processes: a worker that exceeds the limit is killed, one that dies is noticed, and
either way the file gets an error and a fresh worker takes the next file. Workers run at low
CPU and I/O priority with one BLAS thread each, so a laptop stays usable during a big import.
"""

from __future__ import annotations

import logging
import multiprocessing
import multiprocessing.connection
import os
import signal
import sys
import time
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

log = logging.getLogger(__name__)

_BLAS_THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
_IOPRIO_CLASS_IDLE = 3
_IOPRIO_CLASS_SHIFT = 13
_IOPRIO_WHO_PROCESS = 1


@dataclass(frozen=True, slots=True)
class Task:
    path: str
    descriptors: bool = True
    bpm_range: tuple[float, float] | None = None  # None: the analysis default


@dataclass(frozen=True, slots=True)
class Outcome:
    """What became of one file: an analysis, or an error kind and message."""

    path: str
    analysis: dict | None = None  # TrackAnalysis.to_dict(): plain data, so the daemon never loads numpy
    observation: dict | None = None  # the allow-listed wire fields, when there is a fingerprint
    error_kind: str | None = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.analysis is not None


def _lower_priority(nice: int) -> None:
    if nice:
        try:
            os.nice(nice)
        except OSError:
            pass
    if sys.platform.startswith("linux"):  # idle I/O class through ioprio_set(2)
        try:
            import ctypes

            libc = ctypes.CDLL(None, use_errno=True)
            syscall_number = {"x86_64": 251, "aarch64": 30}.get(os.uname().machine)
            if syscall_number is not None:
                libc.syscall(syscall_number, _IOPRIO_WHO_PROCESS, 0, _IOPRIO_CLASS_IDLE << _IOPRIO_CLASS_SHIFT)
        except OSError:
            pass


def _worker_main(connection: multiprocessing.connection.Connection, nice: int) -> None:
    """A worker's loop: analyze each task it is sent, answer with an ``Outcome``."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when workers stop
    for variable in _BLAS_THREAD_VARIABLES:
        os.environ[variable] = "1"
    _lower_priority(nice)
    from cratesense.analysis.model import observation_fields
    from cratesense.analysis.pipeline import analyze_file  # after the BLAS limits are set
    from cratesense.errors import AnalysisError

    while True:
        try:
            task = connection.recv()
        except (EOFError, OSError):
            return
        if task is None:
            return
        try:
            options = {"bpm_range": task.bpm_range} if task.bpm_range else {}
            track = analyze_file(task.path, descriptors=task.descriptors, **options)
            observation = observation_fields(track) if track.fingerprint.chromaprint else None
            outcome = Outcome(task.path, analysis=track.to_dict(), observation=observation)
        except AnalysisError as exc:
            outcome = Outcome(task.path, error_kind=exc.kind, error=str(exc))
        except Exception as exc:  # a bug of ours on this file: record it, keep the worker
            outcome = Outcome(task.path, error_kind="internal", error=f"{type(exc).__name__}: {exc}")
        connection.send(outcome)


class _Worker:
    def __init__(self, context, nice: int) -> None:
        self.connection, child = context.Pipe()
        self.process = context.Process(target=_worker_main, args=(child, nice), daemon=True)
        self.process.start()
        child.close()
        self.task: Task | None = None
        self.deadline = 0.0

    def stop(self, kill: bool = False) -> None:
        if kill:
            self.process.kill()
        else:
            try:
                self.connection.send(None)
            except OSError:
                pass
        self.process.join(timeout=5)
        if self.process.is_alive():
            self.process.kill()
            self.process.join()
        self.connection.close()


class AnalysisPool:
    """A fixed number of analysis worker processes; use as a context manager."""

    def __init__(self, workers: int = 1, timeout: float = 300.0, nice: int = 10) -> None:
        self.timeout = timeout
        self._nice = nice
        self._context = multiprocessing.get_context("spawn")  # no fork of a threaded daemon
        self._workers = [_Worker(self._context, nice) for _ in range(max(1, workers))]

    def __enter__(self) -> AnalysisPool:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def close(self) -> None:
        for worker in self._workers:
            worker.stop(kill=worker.task is not None)
        self._workers = []

    def busy_pids(self) -> dict[str, int]:
        """Path -> pid of the worker analyzing it now (for status and diagnostics)."""
        return {w.task.path: w.process.pid for w in self._workers if w.task is not None}

    @property
    def idle(self) -> int:
        """How many workers could take a task now (the pool's queue is its workers: bounded)."""
        return sum(1 for worker in self._workers if worker.task is None)

    @property
    def busy(self) -> int:
        return len(self._workers) - self.idle

    def submit(self, task: Task) -> None:
        """Hand ``task`` to an idle worker (call only when ``idle`` > 0)."""
        worker = next(worker for worker in self._workers if worker.task is None)
        worker.task = task
        worker.deadline = time.monotonic() + self.timeout
        worker.connection.send(task)

    def run(self, tasks: Iterable[Task]) -> Iterator[Outcome]:
        """Analyze every task, yielding outcomes as they finish (not in task order)."""
        pending = deque(tasks)
        while pending or self.busy:
            while pending and self.idle:
                self.submit(pending.popleft())
            yield from self.collect()

    def collect(self, timeout: float | None = None) -> list[Outcome]:
        """Outcomes that are ready within ``timeout`` seconds (None: until the first one, or
        until a worker's deadline passes). Workers that died or overran are replaced."""
        busy = [worker for worker in self._workers if worker.task is not None]
        if not busy:
            return []
        wait_for = min(worker.deadline for worker in busy) - time.monotonic()
        if timeout is not None:
            wait_for = min(wait_for, timeout)
        waitables = [w.connection for w in busy] + [w.process.sentinel for w in busy]
        ready = set(multiprocessing.connection.wait(waitables, timeout=max(0.0, wait_for)))
        now = time.monotonic()
        outcomes = []
        for index, worker in enumerate(self._workers):
            if worker.task is None:
                continue
            if worker.connection in ready:
                try:
                    outcome = worker.connection.recv()
                except (EOFError, OSError):
                    outcome = None
                if outcome is not None:
                    worker.task = None
                    outcomes.append(outcome)
                    continue
            if worker.process.sentinel in ready or not worker.process.is_alive():
                worker.process.join(timeout=1)
                outcomes.append(self._replace(index, "crash", _death_message(worker.process.exitcode)))
            elif now >= worker.deadline:
                outcomes.append(
                    self._replace(index, "timeout", f"analysis took longer than the {self.timeout:.0f} s limit")
                )
        return outcomes

    def _replace(self, index: int, kind: str, message: str) -> Outcome:
        worker = self._workers[index]
        task = worker.task
        log.warning("analysis worker for %s replaced: %s", task.path, message)
        worker.task = None
        worker.stop(kill=True)
        self._workers[index] = _Worker(self._context, self._nice)
        return Outcome(task.path, error_kind=kind, error=message)


def _death_message(exitcode: int | None) -> str:
    if exitcode is not None and exitcode < 0:
        try:
            name = signal.Signals(-exitcode).name
        except ValueError:
            name = f"signal {-exitcode}"
        return f"the analysis process was killed by {name} while reading this file"
    return f"the analysis process exited unexpectedly (status {exitcode}) while reading this file"
