"""`cratesense catalog serve`: one process, or N worker processes on one port.

One worker serves in this process. Several (PostgreSQL only: a SQLite file has one writer) run
as child processes under a small supervisor that restarts one that dies and stops them all on
SIGTERM/SIGINT. They share the port the way the OS balances best: on Linux each binds it with
SO_REUSEPORT and the kernel spreads new connections across them; elsewhere (macOS and the BSDs
accept SO_REUSEPORT without balancing) the supervisor binds one listening socket and every
worker accepts from it.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import multiprocessing.connection
import signal
import socket
import sys
import time

from cratesense.catalog.backends import BackendError, is_postgres_url

log = logging.getLogger(__name__)

STOP_SECONDS = 10.0  # a worker gets this long to finish its requests before it is killed
RESTARTS = 5  # a worker that dies this many times ...
RESTART_WINDOW = 60.0  # ... within this many seconds stops the service: something is wrong


def serve(db: str, host: str, port: int, workers: int = 1, *, socket_sharing: str | None = None,
          store_options: dict | None = None) -> int:
    """Serve the catalog over ``db`` (a SQLite file or a postgresql:// URL) until SIGTERM or
    SIGINT; returns the exit status. ``socket_sharing``: "reuse_port" or "inherited" (default:
    the one this OS balances)."""
    if workers < 1:
        raise BackendError("--workers must be at least 1")
    if workers > 1 and not is_postgres_url(db):
        raise BackendError(f"--workers {workers} needs a PostgreSQL database (--db postgresql://...): "
                           "a SQLite file has one writer, so one process serves it")
    from cratesense.catalog.store import Store

    # open (and migrate) once here: a database that cannot be used is one clear line, before any worker starts
    Store(db, **(store_options or {})).close()
    if workers == 1:
        asyncio.run(_serve_here(db, host, port, None, False, store_options or {}))
        return 0
    sharing = socket_sharing or ("reuse_port" if sys.platform.startswith("linux") else "inherited")
    return Supervisor(db, host, port, workers, sharing, store_options or {}).run()


async def _serve_here(db: str, host: str, port: int, sock: socket.socket | None, reuse_port: bool,
                      store_options: dict) -> None:
    from cratesense.catalog.server import start
    from cratesense.catalog.store import Store

    store = Store(db, **store_options)
    try:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        runner, _ = await start(store, host, port, sock=sock, reuse_port=reuse_port)
        try:
            await stop.wait()
        finally:
            await runner.cleanup()
    finally:
        store.close()


def _worker(number: int, db: str, host: str, port: int, sock: socket.socket | None, level: int,
            store_options: dict) -> None:
    """A worker process's entry point (spawned: nothing inherited but these arguments)."""
    logging.basicConfig(level=logging.WARNING,
                        format=f"%(asctime)s %(levelname)s worker {number} %(name)s: %(message)s")
    logging.getLogger("cratesense").setLevel(level)
    try:
        asyncio.run(_serve_here(db, host, port, sock, sock is None, store_options))
    except KeyboardInterrupt:
        pass


class Supervisor:
    """Starts ``workers`` processes, restarts one that dies, stops all on SIGTERM/SIGINT."""

    def __init__(self, db: str, host: str, port: int, workers: int, sharing: str, store_options: dict) -> None:
        self.db, self.host, self.workers, self.sharing = db, host, workers, sharing
        self.store_options = store_options
        self._context = multiprocessing.get_context("spawn")  # no threads or pool connections carried over
        self._stop = False
        self._deaths: list[float] = []
        self.socket: socket.socket | None
        self._reserved: socket.socket | None = None
        if sharing == "inherited":  # one listening socket, accepted from by every worker
            self.socket = socket.create_server((host, port), backlog=1024)
            self.port = self.socket.getsockname()[1]
        else:
            self.socket = None
            if port == 0:  # every worker must bind the same port: pick one and hold it (bound, not
                # listening: the kernel gives connections only to the workers' listening sockets)
                self._reserved = socket.socket()
                self._reserved.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
                self._reserved.bind((host, 0))
                port = self._reserved.getsockname()[1]
            self.port = port

    def _spawn(self, number: int):
        process = self._context.Process(
            target=_worker, name=f"catalog-worker-{number}", daemon=False,
            args=(number, self.db, self.host, self.port, self.socket,
                  logging.getLogger("cratesense").getEffectiveLevel(), self.store_options))
        process.start()
        log.info("worker %d started (pid %d)", number, process.pid)
        return process

    def run(self) -> int:
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, self._request_stop)
        processes = {number: self._spawn(number) for number in range(1, self.workers + 1)}
        log.info("catalog serving http://%s:%d with %d workers (%s)", self.host, self.port, self.workers,
                 "SO_REUSEPORT" if self.sharing == "reuse_port" else "one shared socket")
        status = 0
        try:
            while not self._stop:
                ended = multiprocessing.connection.wait([p.sentinel for p in processes.values()], timeout=1.0)
                for number, process in list(processes.items()):
                    if process.sentinel in ended and not self._stop:
                        process.join()
                        log.warning("worker %d (pid %d) exited with status %s; starting it again",
                                    number, process.pid, process.exitcode)
                        now = time.monotonic()
                        self._deaths = [t for t in self._deaths if now - t < RESTART_WINDOW] + [now]
                        if len(self._deaths) >= RESTARTS:
                            log.error("workers died %d times within %.0f s; stopping the catalog", RESTARTS,
                                      RESTART_WINDOW)
                            self._stop, status = True, 1
                            break
                        processes[number] = self._spawn(number)
        finally:
            self._stop_all(processes)
            for held in (self.socket, getattr(self, "_reserved", None)):
                if held is not None:
                    held.close()
        return status

    def _request_stop(self, signum, frame) -> None:
        self._stop = True

    @staticmethod
    def _stop_all(processes: dict) -> None:
        for process in processes.values():
            if process.is_alive():
                process.terminate()  # SIGTERM: the worker finishes its requests and closes the store
        deadline = time.monotonic() + STOP_SECONDS
        for number, process in processes.items():
            process.join(max(0.0, deadline - time.monotonic()))
            if process.is_alive():
                log.warning("worker %d did not stop within %.0f s; killing it", number, STOP_SECONDS)
                process.kill()
                process.join()
