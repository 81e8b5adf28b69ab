"""The agent's access to its journal, off the event loop (datasette's write-thread pattern).

One thread owns the journal's only write connection: coroutines hand it work with
``await io.write(fn)``, where ``fn(journal)`` runs on that thread, in order, one at a time.
Reads go to read-only connections on a small pool of reader threads (``await io.read(fn)``):
in WAL mode they never wait for the writer, so a slow write (a full disk retrying, a long
transaction) never delays a status request. The event loop itself never runs SQLite.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

from cratesense.daemon.journal import Journal
from cratesense.daemon.journal_read import JournalReader

log = logging.getLogger(__name__)

T = TypeVar("T")


class JournalIO:
    """Owns the journal's writer thread and reader threads; ``open()`` before use."""

    def __init__(self, path: Path, *, readers: int = 2, write_delay: float = 0.0) -> None:
        """``write_delay`` (seconds) slows every write down, on the writer thread only: a
        diagnostic knob (CRATESENSE_DEBUG_WRITE_DELAY) that shows nothing else waits for it."""
        self.path = path
        self._write_delay = write_delay
        self._writer = ThreadPoolExecutor(1, thread_name_prefix="journal-writer")
        self._readers = ThreadPoolExecutor(readers, thread_name_prefix="journal-reader")
        self._local = threading.local()
        self._reader_connections: list[JournalReader] = []
        self._lock = threading.Lock()
        self._journal: Journal | None = None
        self.writes = 0  # writes done so far: what was read before the last one may be stale

    async def open(self) -> Path | None:
        """Open (creating, verifying and migrating) the journal on the writer thread. Returns
        where a damaged journal was moved, if it was."""
        self._journal, damaged = await self._on_writer(Journal.open_or_rebuild, self.path)
        return damaged

    async def write(self, fn: Callable[[Journal], T]) -> T:
        """``fn(journal)`` on the writer thread; its result (or its exception) here."""
        return await self._on_writer(self._run_write, fn)

    async def read(self, fn: Callable[[JournalReader], T]) -> T:
        """``fn(reader)`` on a reader thread, over a read-only connection (the read model)."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._readers, self._run_read, fn)

    async def close(self) -> None:
        """Readers first: the writer must be the last connection to close, because only a
        connection that can write checkpoints the WAL and removes it (a clean stop leaves just
        the database file)."""
        await asyncio.get_running_loop().run_in_executor(None, self._readers.shutdown, True)
        with self._lock:
            for reader in self._reader_connections:
                reader.close()
            self._reader_connections = []

        def close_writer() -> None:
            if self._journal is not None:
                self._journal.close()
                self._journal = None

        await self._on_writer(close_writer)
        self._writer.shutdown(wait=True)

    async def _on_writer(self, fn, *args):
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._writer, fn, *args)

    def _run_write(self, fn: Callable[[Journal], T]) -> T:
        if self._journal is None:
            raise RuntimeError("the journal is not open")
        if self._write_delay:
            time.sleep(self._write_delay)
        try:
            return fn(self._journal)
        finally:
            self.writes += 1

    def _run_read(self, fn: Callable[[JournalReader], T]) -> T:
        reader = getattr(self._local, "journal", None)
        if reader is None:
            reader = JournalReader(self.path, check_same_thread=False)
            self._local.journal = reader
            with self._lock:
                self._reader_connections.append(reader)
        return fn(reader)
