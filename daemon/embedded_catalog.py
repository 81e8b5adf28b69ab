"""The embedded catalog: the catalog server inside the agent's process, on its own thread and
its own event loop.

With no ``catalog_url`` configured, the agent syncs to a catalog of its own (its database in
the data folder) through the same HTTP code path as to a shared one, over a private Unix
socket. It runs beside the agent's loop, not on it: a catalog busy guarding and matching a big
first sync (seconds of work per thousand observations) never stalls the watcher, the control
socket or the feeding of the analysis pool.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import threading
from pathlib import Path

from cratesense.errors import DataFolderError

log = logging.getLogger(__name__)

START_TIMEOUT = 30.0


class EmbeddedCatalog:
    def __init__(self, database: Path, socket: Path) -> None:
        self.database = database
        self.socket = socket
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._ready = threading.Event()
        self._failure: BaseException | None = None

    def start(self) -> None:
        """Start serving; returns once the socket answers (or raises why it could not)."""
        self.socket.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._thread = threading.Thread(target=self._serve, name="embedded-catalog", daemon=True)
        self._thread.start()
        if not self._ready.wait(START_TIMEOUT):
            raise RuntimeError("the embedded catalog did not start")
        if self._failure is not None:
            if isinstance(self._failure, (OSError, sqlite3.Error)):  # a folder we cannot write, a full disk
                raise DataFolderError(f"cannot open the embedded catalog's database {self.database}: "
                                      f"{self._failure}") from self._failure
            raise self._failure

    def stop(self, timeout: float = 5.0) -> None:
        if self._loop is not None and self._stop is not None and not self._loop.is_closed():
            try:
                self._loop.call_soon_threadsafe(self._stop.set)
            except RuntimeError:  # its loop already ended
                pass
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                log.warning("the embedded catalog did not stop within %.0f s", timeout)

    def _serve(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as exc:  # reported to start(), or logged when it dies later
            if not self._ready.is_set():
                self._failure = exc
                self._ready.set()
            else:
                log.exception("the embedded catalog stopped")

    async def _main(self) -> None:
        from cratesense.catalog.server import start_unix
        from cratesense.catalog.store import Store

        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        store = Store(self.database)
        try:
            runner = await start_unix(store, self.socket)
            self._ready.set()
            try:
                await self._stop.wait()
            finally:
                await runner.cleanup()
        finally:
            store.close()
