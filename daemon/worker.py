"""An analysis worker process: ``python -m cratesense.daemon.worker FD NICE PARENT_PID``.

Started by the analysis pool (``daemon/pool.py``) with one end of a socket pair as file
descriptor FD. It lowers its own priority, makes sure it dies with the agent, loads the
analysis stack (numpy, PyAV: only workers load it, never the agent), says it is ready, then
analyzes each ``Task`` it receives and answers with an ``Outcome``, until told to stop.
"""

from __future__ import annotations

import multiprocessing.connection
import os
import signal
import sys
import threading
import time

_BLAS_THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
_IOPRIO_CLASS_IDLE = 3
_IOPRIO_CLASS_SHIFT = 13
_IOPRIO_WHO_PROCESS = 1
_PR_SET_PDEATHSIG = 1
_PARENT_WATCH_SECONDS = 0.5


def lower_priority(nice: int) -> None:
    """Nice, and the idle I/O class (ioprio_set(2)) on Linux: a laptop stays usable."""
    if nice:
        try:
            os.nice(nice)
        except OSError:
            pass
    if sys.platform.startswith("linux"):
        try:
            import ctypes

            libc = ctypes.CDLL(None, use_errno=True)
            syscall_number = {"x86_64": 251, "aarch64": 30}.get(os.uname().machine)
            if syscall_number is not None:
                libc.syscall(syscall_number, _IOPRIO_WHO_PROCESS, 0, _IOPRIO_CLASS_IDLE << _IOPRIO_CLASS_SHIFT)
        except OSError:
            pass


def die_with_parent(parent: int) -> None:
    """End this worker when the agent ends, however it ends (a kill -9 included). Linux: the
    kernel sends SIGKILL when the thread that started us exits (the pool's owner thread, which
    lives as long as the pool). Everywhere: a thread that notices the parent is gone (for a
    worker busy in C code that holds the GIL, only the kernel's signal works at once)."""
    if sys.platform.startswith("linux"):
        try:
            import ctypes

            ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
        except (OSError, AttributeError):
            pass
    if os.getppid() != parent:  # the parent died before the signal was armed
        os._exit(1)

    def watch() -> None:
        while True:
            time.sleep(_PARENT_WATCH_SECONDS)
            if os.getppid() != parent:
                os._exit(1)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def main(fd: int, nice: int, parent: int) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when workers stop
    die_with_parent(parent)
    for variable in _BLAS_THREAD_VARIABLES:
        os.environ[variable] = "1"
    lower_priority(nice)
    connection = multiprocessing.connection.Connection(fd)
    from cratesense.analysis.model import observation_fields
    from cratesense.analysis.pipeline import analyze_file  # after the BLAS limits are set
    from cratesense.daemon.pool import READY, Outcome, TagTask
    from cratesense.dj.tagging import retag
    from cratesense.errors import AnalysisError

    _load_sound_model()  # before READY: loading it is part of a worker's start, not of its first file
    connection.send(READY)
    while True:
        try:
            task = connection.recv()
        except (EOFError, OSError):
            return
        if task is None:
            return
        if isinstance(task, TagTask):
            _send(connection, retag(task.path, task.wanted, task.fields, task.notation, dry_run=task.dry_run))
            continue
        try:
            options = {"bpm_range": task.bpm_range} if task.bpm_range else {}
            track = analyze_file(task.path, descriptors=task.descriptors, native_results=task.native_results, **options)
            observation = observation_fields(track) if track.fingerprint.chromaprint else None
            outcome = Outcome(task.path, analysis=track, observation=observation)
        except AnalysisError as exc:
            outcome = Outcome(task.path, error_kind=exc.kind, error=str(exc))
        except Exception as exc:  # a bug of ours on this file: record it, keep the worker
            outcome = Outcome(task.path, error_kind="internal", error=f"{type(exc).__name__}: {exc}")
        if not _send(connection, outcome):
            return


def _load_sound_model() -> None:
    """Load the sound model once; when it cannot be, say so once on the agent's log (every
    analysis also says why its genres, moods and embedding are missing: ``model_error``)."""
    from cratesense.analysis.learned import shipped_model
    from cratesense.errors import ModelError

    model = shipped_model()
    if isinstance(model, ModelError):
        print(f"cratesense worker: the sound model cannot be used, so tracks get no genres, moods or embedding: "
              f"{model}", file=sys.stderr, flush=True)


def _send(connection, answer) -> bool:
    try:
        connection.send(answer)
        return True
    except (BrokenPipeError, ConnectionResetError):  # the agent is gone
        return False


if __name__ == "__main__":
    main(int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]))
