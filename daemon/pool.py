"""Worker processes that run ``analyze_file``, each file under a hard time limit.

A decoder can hang or crash inside FFmpeg, where no Python timeout reaches; so analysis runs in
separate processes: a worker that exceeds the limit is killed, one that dies is noticed, and
either way the file gets an error and the next file gets a worker. Workers run at low CPU and
I/O priority with one BLAS thread each, so a laptop stays usable during a big import.

Workers are started when there is work and leave after ``idle_seconds`` without any, so an
idle agent holds no ~100 MB analysis process. They die with the agent however it dies (a
``kill -9`` included): the parent-death signal on Linux, a watch on the parent elsewhere.

One thread owns the workers (``_serve``): it starts them, hands out tasks, waits for answers,
deadlines and deaths, and reaps idle workers. Callers only ``submit`` a task and get a future
(``await pool.analyze(task)`` in the agent, ``pool.run(tasks)`` for the CLI).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import multiprocessing
import multiprocessing.connection
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

from cratesense.analysis.model import TrackAnalysis

if TYPE_CHECKING:
    from cratesense.dj.tagging import Wanted

log = logging.getLogger(__name__)

IDLE_SECONDS = 60.0
BOOT_SECONDS = 120.0  # a worker's imports (numpy, PyAV) take ~1 s; a busy machine, much more
READY = "ready"  # a new worker's first message: its clock for a file starts after its imports


@dataclass(frozen=True, slots=True)
class Task:
    path: str
    descriptors: bool = True
    bpm_range: tuple[float, float] | None = None  # None: the analysis default
    native_results: dict | None = None  # loudness and embedding kept from an earlier analysis


@dataclass(frozen=True, slots=True)
class TagTask:
    """Write tags into one file (``dj/tagging.py``): in a worker, so the agent never loads mutagen."""

    path: str
    wanted: Wanted
    fields: tuple[str, ...]
    notation: str
    dry_run: bool = False


@dataclass(frozen=True, slots=True)
class Outcome:
    """What became of one file: an analysis, or an error kind and message."""

    path: str
    analysis: TrackAnalysis | None = None  # the typed track (msgspec only: the daemon never loads numpy)
    observation: dict | None = None  # the allow-listed wire fields, when there is a fingerprint
    error_kind: str | None = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.analysis is not None


class _Worker:
    """One analysis process (``python -m cratesense.daemon.worker``), talking over a socket pair.
    A plain subprocess, not multiprocessing's: that would leave its resource-tracker process
    running beside an idle agent for good."""

    def __init__(self, nice: int) -> None:
        ours, theirs = socket.socketpair()
        try:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "cratesense.daemon.worker", str(theirs.fileno()), str(nice), str(os.getpid())],
                pass_fds=(theirs.fileno(),), stdin=subprocess.DEVNULL)
        finally:
            theirs.close()
        self.connection = multiprocessing.connection.Connection(ours.detach())
        self.task: Task | TagTask | None = None
        self.future: concurrent.futures.Future | None = None
        self.ready = False  # its imports are done
        self.deadline = time.monotonic() + BOOT_SECONDS
        self.idle_since = time.monotonic()

    @property
    def pid(self) -> int:
        return self.process.pid

    def alive(self) -> bool:
        return self.process.poll() is None

    def stop(self, kill: bool = False) -> None:
        if kill:
            self.process.kill()
        else:
            try:
                self.connection.send(None)
            except OSError:
                pass
        try:
            self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.connection.close()


class AnalysisPool:
    """Up to ``workers`` analysis processes, started on demand; use as a context manager."""

    def __init__(self, workers: int = 1, timeout: float = 300.0, nice: int = 10,
                 idle_seconds: float = IDLE_SECONDS) -> None:
        self.max_workers = max(1, workers)
        self.timeout = timeout
        self._nice = nice
        self._idle_seconds = idle_seconds
        self._workers: list[_Worker] = []  # only the owner thread touches these
        self._pending: deque[tuple[Task | TagTask, concurrent.futures.Future]] = deque()
        self._lock = threading.Lock()  # guards _pending and _closing
        self._closing = False
        self._wake_read, self._wake_write = os.pipe()
        os.set_blocking(self._wake_write, False)
        self._started = 0  # workers started so far (status, tests)
        self._alive = 0
        self._busy_pids: dict[str, int] = {}
        self._owner = threading.Thread(target=self._serve, name="analysis-pool", daemon=True)
        self._owner.start()

    def __enter__(self) -> AnalysisPool:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    # --- callers (any thread) -----------------------------------------------------------------

    def submit(self, task: Task | TagTask) -> concurrent.futures.Future:
        future: concurrent.futures.Future = concurrent.futures.Future()
        with self._lock:
            if self._closing:
                raise RuntimeError("the analysis pool is closed")
            self._pending.append((task, future))
        self._wake()
        return future

    async def analyze(self, task: Task) -> Outcome:
        return await asyncio.wrap_future(self.submit(task))

    async def retag(self, task: TagTask):
        """A ``dj.tagging.Retagged``; or an ``Outcome`` with the error when its worker died."""
        return await asyncio.wrap_future(self.submit(task))

    def run(self, tasks: Iterable[Task]) -> Iterator[Outcome]:
        """Analyze every task, yielding outcomes as they finish (not in task order); at most
        as many tasks are handed over at a time as there are workers."""
        tasks = iter(tasks)
        running: set[concurrent.futures.Future] = set()
        while True:
            while len(running) < self.max_workers:
                task = next(tasks, None)
                if task is None:
                    break
                running.add(self.submit(task))
            if not running:
                return
            done, running = concurrent.futures.wait(running, return_when=concurrent.futures.FIRST_COMPLETED)
            for future in done:
                yield future.result()

    def busy_pids(self) -> dict[str, int]:
        """Path -> pid of the worker analyzing it now (for diagnostics and tests)."""
        return dict(self._busy_pids)

    @property
    def alive(self) -> int:
        """Worker processes running now (busy or waiting for work)."""
        return self._alive

    @property
    def started(self) -> int:
        return self._started

    def close(self) -> None:
        with self._lock:
            if self._closing:
                return
            self._closing = True
        self._wake()
        self._owner.join(timeout=15)
        os.close(self._wake_read)
        os.close(self._wake_write)

    def _wake(self) -> None:
        try:
            os.write(self._wake_write, b"x")
        except BlockingIOError:  # the pipe is full: the owner is awake anyway
            pass

    # --- the owner thread ---------------------------------------------------------------------

    def _serve(self) -> None:
        try:
            while True:
                with self._lock:
                    closing = self._closing
                if closing:
                    break
                self._hand_out()
                self._wait_and_collect()
                self._reap_idle()
        finally:
            self._shut_down()

    def _hand_out(self) -> None:
        while True:
            with self._lock:
                if not self._pending:
                    return
                worker = next((w for w in self._workers if w.task is None), None)
                if worker is None and len(self._workers) >= self.max_workers:
                    return
                task, future = self._pending.popleft()
            if not future.set_running_or_notify_cancel():
                continue  # its caller gave up (the agent is stopping)
            if worker is None:
                worker = self._start_worker()
            worker.task, worker.future = task, future
            if worker.ready:
                worker.deadline = time.monotonic() + self.timeout
            try:
                worker.connection.send(task)
            except OSError:
                pass  # a worker that died before its task: seen as a death below
            self._busy_pids[task.path] = worker.pid

    def _start_worker(self) -> _Worker:
        worker = _Worker(self._nice)
        self._workers.append(worker)
        self._started += 1
        self._alive = len(self._workers)
        return worker

    def _wait_and_collect(self) -> None:
        now = time.monotonic()
        busy = [w for w in self._workers if w.task is not None or not w.ready]
        waits = [w.deadline - now for w in busy]
        idle = [w for w in self._workers if w.task is None and w.ready]
        waits += [w.idle_since + self._idle_seconds - now for w in idle]
        timeout = max(0.0, min(waits)) if waits else None
        # a worker that dies closes its end of the socket: its connection turns readable (EOF)
        waitables = [self._wake_read] + [w.connection for w in self._workers]
        ready = set(multiprocessing.connection.wait(waitables, timeout=timeout))
        if self._wake_read in ready:
            os.read(self._wake_read, 4096)
        now = time.monotonic()
        for worker in list(self._workers):
            dead = False
            if worker.connection in ready:
                try:
                    outcome = worker.connection.recv()
                except (EOFError, OSError):
                    outcome, dead = None, True
                if outcome == READY:
                    worker.ready, worker.idle_since = True, now
                    worker.deadline = now + self.timeout  # the file's clock starts now
                    continue
                if outcome is not None and worker.task is not None:
                    self._finish(worker, outcome)
                    continue
            if dead or not worker.alive():
                try:
                    exitcode = worker.process.wait(timeout=1)
                except subprocess.TimeoutExpired:
                    exitcode = None
                if worker.task is not None:
                    self._fail(worker, "crash", _death_message(exitcode))
                self._remove(worker, kill=True)
            elif worker.task is not None and now >= worker.deadline:
                if worker.ready:
                    self._fail(worker, "timeout", f"analysis took longer than the {self.timeout:.0f} s limit")
                else:
                    self._fail(worker, "crash", f"the analysis process did not start within {BOOT_SECONDS:.0f} s")
                self._remove(worker, kill=True)
            elif not worker.ready and now >= worker.deadline:
                log.warning("an analysis process did not start within %.0f s", BOOT_SECONDS)
                self._remove(worker, kill=True)

    def _finish(self, worker: _Worker, outcome: object) -> None:
        task, future = worker.task, worker.future
        assert task is not None and future is not None, "only a busy worker finishes"
        self._busy_pids.pop(task.path, None)
        worker.task, worker.future = None, None
        worker.idle_since = time.monotonic()
        future.set_result(outcome)

    def _fail(self, worker: _Worker, kind: str, message: str) -> None:
        assert worker.task is not None, "only a busy worker fails"
        path = worker.task.path
        log.warning("analysis worker for %s replaced: %s", path, message)
        self._finish(worker, Outcome(path, error_kind=kind, error=message))

    def _remove(self, worker: _Worker, kill: bool = False) -> None:
        worker.stop(kill=kill)
        self._workers.remove(worker)
        self._alive = len(self._workers)

    def _reap_idle(self) -> None:
        now = time.monotonic()
        with self._lock:
            waiting = bool(self._pending)
        for worker in list(self._workers):
            if worker.task is None and worker.ready and not waiting and now - worker.idle_since >= self._idle_seconds:
                log.debug("analysis worker %d idle for %.0f s: stopping it", worker.pid, self._idle_seconds)
                self._remove(worker)

    def _shut_down(self) -> None:
        for worker in list(self._workers):
            if worker.future is not None:  # running: it can no longer be cancelled, only failed
                worker.future.set_exception(RuntimeError("the analysis pool closed"))
            self._remove(worker, kill=worker.task is not None)
        with self._lock:
            pending, self._pending = list(self._pending), deque()
        for _, future in pending:
            future.cancel()


def _death_message(exitcode: int | None) -> str:
    if exitcode is not None and exitcode < 0:
        try:
            name = signal.Signals(-exitcode).name
        except ValueError:
            name = f"signal {-exitcode}"
        return f"the analysis process was killed by {name} while reading this file"
    return f"the analysis process exited unexpectedly (status {exitcode}) while reading this file"
