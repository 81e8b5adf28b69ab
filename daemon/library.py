"""The library loop: the one place scans and watcher batches are carried out (syncthing's
folder ``Serve``).

Timers, the watcher, the folder checks and the user all only *ask*: ``request_scan()`` for a
full reconciliation, ``paths_changed(paths)`` for a watcher batch. Requests are coalesced and
never dropped: a scan asked for while one runs runs once more after it; paths that change
during a scan are refreshed right after it; nobody who asks waits for a scan. Analysis goes on
beside all this in the analysis queue, so a long scan does not hold up files already queued.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Callable, Iterable

from cratesense.daemon.analysis_queue import AnalysisQueue
from cratesense.daemon.journal_io import JournalIO
from cratesense.daemon.known_tracks import Catalog, KnownTracks
from cratesense.daemon.pause import Pause
from cratesense.daemon.pool import AnalysisPool
from cratesense.daemon.reconciler import Reconciler
from cratesense.daemon.recorder import Recorder
from cratesense.errors import JournalError

log = logging.getLogger(__name__)

JOURNAL_RETRY_SECONDS = 10.0
# what this session did, as the status reports it
SESSION_COUNTS = ("analyzed", "linked", "failed", "moved", "deleted", "requeued", "described_by_catalog")


class Library:
    """Run ``run()`` as a task: the loop and the analysis queue beside it."""

    def __init__(self, reconciler: Reconciler, queue: AnalysisQueue, pause: Pause, stats: Counter) -> None:
        self.reconciler = reconciler
        self.queue = queue
        self.pause = pause
        self.stats = stats  # this session's tally: analyzed, linked, failed, moved, deleted, ...
        self._scan_wanted = False
        self._paths: set[bytes] = set()
        self._wake = asyncio.Event()
        self._busy = False  # carrying out a scan or a refresh now
        self._scan_error: str | None = None

    @classmethod
    async def assemble(cls, io: JournalIO, pool: AnalysisPool, folders: Iterable[str | bytes], *, secret: bytes,
                       catalog: Catalog | None = None, skip_known_min_contributors: int | None = None,
                       bpm_range: tuple[float, float] | None = None,
                       on_change: Callable[[], None] = lambda: None) -> Library:
        """The library's parts, wired: with ``catalog`` and ``skip_known_min_contributors``,
        tracks the catalog knows from that many contributors are fingerprinted, not described."""
        stats = Counter(dict.fromkeys(SESSION_COUNTS, 0))
        pause = Pause(io)
        await pause.load()
        known = KnownTracks(catalog, skip_known_min_contributors)
        recorder = Recorder(io, secret, stats, on_change)
        queue = AnalysisQueue(io, pool, recorder, known, pause, stats, bpm_range=bpm_range)
        pause.on_resume = queue.wake
        return cls(Reconciler(io, folders, queue, stats, on_change), queue, pause, stats)

    # --- asking -------------------------------------------------------------------------------

    def request_scan(self) -> None:
        """A full reconciliation as soon as possible (once, however often it is asked for)."""
        self._scan_wanted = True
        self._wake.set()

    def paths_changed(self, paths: Iterable[bytes]) -> None:
        """Files or folders a watcher saw change: reconciled soon, in one go."""
        self._paths.update(paths)
        self._wake.set()

    # --- state ---------------------------------------------------------------------------------

    @property
    def scanning(self) -> bool:
        return self.reconciler.progress is not None

    @property
    def idle(self) -> bool:
        """Nothing will happen until something changes: no scan or refresh running or asked
        for, nothing in a worker's hands, and nothing queued (or analysis paused). The one
        definition the status, ``cratesense scan`` and the tests use."""
        if self._busy or self._scan_wanted or self._paths or self.queue.in_flight:
            return False
        return self.queue.empty or self.pause.active

    @property
    def journal_error(self) -> str | None:
        return self.queue.journal_error or self._scan_error

    async def wait_idle(self) -> None:
        """Until ``idle`` (``cratesense scan``)."""
        while not self.idle:
            await asyncio.sleep(0.1)

    # --- the loop --------------------------------------------------------------------------------

    async def run(self) -> None:
        """The library loop and the analysis queue, until cancelled."""
        await asyncio.gather(self._serve(), self.queue.run())

    async def _serve(self) -> None:
        while True:
            if not self._scan_wanted and not self._paths:
                self._wake.clear()
                await self._wake.wait()
            self._busy = True
            try:
                if self._scan_wanted:
                    self._scan_wanted = False
                    await self._carry_out(self.reconciler.full_scan(), retry=self.request_scan)
                if self._paths:
                    paths, self._paths = self._paths, set()
                    await self._carry_out(self.reconciler.refresh(paths), retry=lambda: self.paths_changed(paths))
            finally:
                self._busy = False

    async def _carry_out(self, work, retry) -> None:
        try:
            await work
            self._scan_error = None
        except JournalError as exc:  # the journal cannot take it now: the same work, later
            if self._scan_error != str(exc):
                log.error("%s", exc)
            self._scan_error = str(exc)
            asyncio.get_running_loop().call_later(JOURNAL_RETRY_SECONDS, retry)
        except Exception:  # a bug of ours: a status, not a dead agent; the next scan tries again
            log.exception("reconciling the library failed")
