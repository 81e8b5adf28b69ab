"""Reconciling the disk with the journal: what is there now, compared with what the journal knows.

A full scan walks every music folder (the source of truth; watcher events are only hints); a
refresh looks at just the paths a watcher batch names. Either way the walk, the journal read
and the comparison run in threads (a stat can hang on a dead mount; 100,000 files are a lot of
Python work), moves are relinked and deletions forgotten through the journal's writer, and the
new and changed files go to the analysis queue. A missing or emptied music folder keeps its
tracks: an unmounted drive is not "every track deleted"; nor is a folder we cannot read.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from cratesense.analysis.constants import ANALYZER_VERSION
from cratesense.daemon.analysis_queue import AnalysisQueue
from cratesense.daemon.journal import FileIdentity, Journal
from cratesense.daemon.journal_read import Identity, JournalReader
from cratesense.daemon.journal_io import JournalIO
from cratesense.daemon.scan import Plan, is_candidate, reconcile, reconcile_walk, walk

log = logging.getLogger(__name__)


@dataclass
class ScanProgress:
    """What a running full scan has seen so far (written by the walking thread, read for status)."""

    seen: int = 0
    known: int = 0


@dataclass
class FullScan:
    plan: Plan
    missing: dict[str, str] = field(default_factory=dict)
    unreadable: list[tuple[bytes, str]] = field(default_factory=list)
    readable_again: list[bytes] = field(default_factory=list)
    stale: list[bytes] = field(default_factory=list)


class Reconciler:
    def __init__(self, io: JournalIO, folders: Iterable[str | bytes], queue: AnalysisQueue, stats: Counter,
                 on_change: Callable[[], None]) -> None:
        self._io = io
        self.folders = [os.fsencode(folder).rstrip(b"/") or b"/" for folder in folders]
        self._queue = queue
        self._stats = stats
        self._on_change = on_change
        self.progress: ScanProgress | None = None  # set while a full scan runs
        self.last_scan_at: float | None = None
        self.scans_completed = 0
        self.missing_folders: dict[str, str] = {}  # folder -> why its tracks are kept
        self.unreadable: list[tuple[bytes, str]] = []  # from the last full scan

    async def full_scan(self) -> None:
        """Every music folder, walked and compared with the journal."""
        progress = self.progress = ScanProgress()
        abandon = threading.Event()  # a thread cannot be cancelled: it is asked to stop
        try:
            known = await self._io.read(self._known_files)
            progress.known = len(known)
            work = asyncio.ensure_future(asyncio.to_thread(compare_with_disk, self.folders, known, progress, abandon))
            try:
                result = await asyncio.shield(work)
            except asyncio.CancelledError:
                abandon.set()
                raise
            await self._apply(result.plan)
            self._queue.add(result.stale)  # an upgraded analyzer looks at these again
            self._queue.add(result.readable_again)
        finally:
            self.progress = None
        self.missing_folders, self.unreadable = result.missing, result.unreadable
        self.last_scan_at = time.time()
        self.scans_completed += 1
        for folder, why in result.missing.items():
            log.warning("music folder %s: %s", os.fsdecode(folder), why)

    def _known_files(self, journal: JournalReader) -> tuple[dict[bytes, Identity], list[bytes], list[bytes]]:
        return (journal.files_under(self.folders), journal.stale_files(ANALYZER_VERSION),
                journal.failed_paths("permission"))

    async def refresh(self, changed: Iterable[bytes]) -> None:
        """Reconcile just ``changed`` (files or folders a watcher saw change)."""
        stripped = [path.rstrip(b"/") for path in changed]
        paths = await asyncio.to_thread(lambda: [path for path in stripped if self._inside(path)])
        if not paths:
            return
        known = await self._io.read(lambda journal: journal.files_under(paths))
        disk = await asyncio.to_thread(_list_paths, paths)
        await self._apply(await asyncio.to_thread(reconcile, known, disk))

    def _inside(self, path: bytes) -> bool:
        """Below a music folder that is there (a vanished music folder is never reconciled)."""
        return any(_under(path, folder) and path != folder for folder in self.folders) or any(
            path == folder and os.path.isdir(folder) for folder in self.folders
        )

    async def _apply(self, plan: Plan) -> None:
        moved, deleted = plan.moved, plan.deleted
        if moved or deleted:

            def write(journal: Journal) -> None:
                if moved:
                    journal.move_files(moved)
                if deleted:
                    journal.forget_files(deleted)

            await self._io.write(write)
            if moved:
                log.info("%d file(s) moved or renamed: relinked", len(moved))
            if deleted:
                log.info("%d file(s) deleted", len(deleted))
        self._queue.discard(deleted)
        self._queue.add(plan.new + plan.changed)
        self._stats["moved"] += len(moved)
        self._stats["deleted"] += len(deleted)
        if moved or deleted:
            self._on_change()


def compare_with_disk(folders: list[bytes], known_rows: tuple[dict[bytes, Identity], list[bytes], list[bytes]],
                      progress: ScanProgress, abandon: threading.Event) -> FullScan:
    """Walk ``folders`` past the journal's view (its known files, the stale ones and those that
    failed for lack of permission) and plan what changed (on a thread: it reads the disk). A
    missing folder, an emptied one and one that cannot be read keep their tracks."""
    known, stale, permission_failures = known_rows
    present, missing = [], {}
    for folder in folders:
        if os.path.isdir(folder):
            present.append(folder)
        else:
            missing[os.fsdecode(folder)] = "the folder is missing (an unmounted drive?); its tracks are kept"
    held = [folder for folder in present if _has_prefix(known, folder)]
    errors: list[tuple[bytes, str]] = []  # folders and files that could not be read
    emptied: list[bytes] = []  # present but empty although they held tracks: an unmounted drive?
    stale_wanted, stale_seen = set(stale), []

    def walked():
        for folder in present:
            count = 0
            for path, identity in walk([folder], errors):
                count += 1
                progress.seen += 1
                if path in stale_wanted:
                    stale_seen.append(path)
                if count % 1000 == 0 and abandon.is_set():
                    return
                yield path, identity
            if count == 0 and folder in held:
                emptied.append(folder)

    def kept(path: bytes) -> bool:
        """Known, not seen, and yet not deleted (asked after the walk)."""
        return (not any(_under(path, folder) for folder in present)
                or any(_under(path, folder) for folder in emptied)
                or any(_under(path, bad) for bad, _ in errors))  # below a folder we cannot read

    plan = reconcile_walk(known, walked(), kept)
    for folder in emptied:
        missing[os.fsdecode(folder)] = "the folder is empty but held tracks (an unmounted drive?); they are kept"
    # permissions fixed (a chmod changes no size or mtime): tried again, once per scan
    deleted = set(plan.deleted)
    readable_again = [path for path in permission_failures if path not in deleted and os.access(path, os.R_OK)]
    return FullScan(plan, missing, errors, readable_again, stale_seen)


def _under(path: bytes, folder: bytes) -> bool:
    return path == folder or path.startswith(folder + b"/") or folder == b"/"


def _has_prefix(paths: dict[bytes, Identity], folder: bytes) -> bool:
    return any(_under(path, folder) for path in paths)


def _list_paths(paths: list[bytes]) -> dict[bytes, Identity]:
    """The disk's view of ``paths``: folders walked, files stat'ed (if they are audio files)."""
    disk: dict[bytes, Identity] = {}
    for path in paths:
        try:
            if os.path.isdir(path) and not os.path.islink(path):
                disk.update(walk([path]))
            elif is_candidate(os.path.basename(path)) and os.path.isfile(path):
                disk[path] = FileIdentity.of(os.stat(path))
        except OSError:
            continue
    return disk
