"""Pausing analysis: the one owner of "paused" and "paused until", kept in the journal's settings
so a pause survives restarts. Watching and scanning go on while paused, so nothing is missed."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from cratesense.daemon.journal_io import JournalIO
from cratesense.errors import JournalError

log = logging.getLogger(__name__)


class Pause:
    def __init__(self, io: JournalIO) -> None:
        self._io = io
        self.on_resume: Callable[[], None] = lambda: None  # the analysis queue's wake-up
        self.active = False
        self.until: float | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._resuming: asyncio.Task | None = None

    async def load(self) -> None:
        """The state the agent had when it stopped (a timed pause that ran out meanwhile ends)."""
        self.active, until = await self._io.read(
            lambda journal: (bool(journal.setting("paused", False)), journal.setting("paused_until")))
        self.until = until if self.active else None
        if self.active and until is not None:
            self._arm(until)

    async def pause(self, until: float | None = None) -> None:
        """Stop starting analyses now (files in flight finish); until ``until`` or a resume."""
        await self._store(True, until)
        self.active, self.until = True, until
        self._disarm()
        if until is not None:
            self._arm(until)

    async def resume(self) -> None:
        await self._store(False, None)
        self.active, self.until = False, None
        self._disarm()
        self.on_resume()

    async def _store(self, paused: bool, until: float | None) -> None:
        def store(journal) -> None:
            journal.set_setting("paused", paused)
            journal.set_setting("paused_until", until)

        await self._io.write(store)

    def _arm(self, until: float) -> None:
        loop = asyncio.get_running_loop()

        def fire() -> None:
            self._resuming = loop.create_task(self._timed_resume())  # kept: a bare task can be collected

        self._timer = loop.call_later(max(0.0, until - time.time()), fire)

    async def _timed_resume(self) -> None:
        try:
            await self.resume()
        except JournalError as exc:  # the journal cannot be written now: resume anyway, say why
            log.error("resuming after a timed pause: %s", exc)
            self.active, self.until = False, None
            self.on_resume()

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
