"""The library: what the agent knows about the music folders, kept true to the disk.

``Library`` is the one owner of the journal's files and tracks. It turns a reconciliation (a
full scan, or the paths a watcher batch names) into journal updates (moves relinked, deletions
forgotten) and an analysis queue, and feeds that queue to the worker pool: a file whose content
key is already analyzed (a copy, a hard link, a file moved back in) is linked without decoding;
everything else is analyzed once, and re-checked afterwards so a file that changed while it was
read is analyzed again instead of being recorded half-written.

Known tracks are cheap: when the catalog can be asked, a file is first only fingerprinted (the
head of the file, no descriptors); if the catalog already knows that recording from enough
contributors, its consensus is kept beside our analysis and the expensive descriptors are
skipped; otherwise the file is analyzed in full.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Protocol

from cratesense.analysis.constants import ANALYZER_VERSION
from cratesense.catalog.contract import sanitize_observation
from cratesense.daemon.journal import FileIdentity, Journal, JournalError, Observation, display_path
from cratesense.daemon.pool import AnalysisPool, Outcome, Task
from cratesense.daemon.scan import content_key, is_candidate, reconcile, walk

log = logging.getLogger(__name__)

JOURNAL_RETRY_SECONDS = 10.0
LOOKUP_TIMEOUT = 15.0  # then the file is analyzed in full: a slow catalog never stalls the queue


class Catalog(Protocol):
    """What the library asks the catalog (the ``Syncer`` answers)."""

    def can_look_up(self) -> bool: ...

    async def look_up(self, fingerprints: list[tuple[str, float]]) -> list[dict | None]: ...


@dataclass(slots=True)
class _InFlight:
    path: bytes
    identity: FileIdentity
    key: str
    descriptors: bool = True  # False: only the fingerprinted head is being read


@dataclass(slots=True)
class _Head:
    """A file whose head is fingerprinted, waiting for the catalog's verdict."""

    flight: _InFlight
    outcome: Outcome
    copies: list[tuple[bytes, FileIdentity]] = field(default_factory=list)


def known_well(consensus: dict | None, min_contributors: int) -> bool:
    """Does the catalog know this recording well enough to skip our own descriptors?"""
    if not consensus or consensus.get("contributors", 0) < min_contributors:
        return False
    analysis = consensus.get("analysis") or {}
    return all(analysis.get(name) is not None for name in ("bpm", "key", "loudness_lufs"))


def observation_id(secret: bytes, key: str, analyzer_version: str) -> str:
    """Stable per (install, content, analyzer): every re-send of the same observation is the same
    upsert at the catalog, and nothing in it can be traced back to a file."""
    return hashlib.blake2b(f"{key}:{analyzer_version}".encode(), key=secret, digest_size=16).hexdigest()


class Library:
    """Reconciles ``folders`` with the journal and analyzes what is new; run ``run()`` as a task."""

    def __init__(
        self,
        journal: Journal,
        pool: AnalysisPool,
        folders: Iterable[str | bytes],
        *,
        secret: bytes,
        bpm_range: tuple[float, float] | None = None,
        on_change: Callable[[], None] | None = None,
        catalog: Catalog | None = None,
        skip_known_min_contributors: int | None = None,
    ) -> None:
        """With ``catalog`` and ``skip_known_min_contributors``, tracks the catalog knows from at
        least that many contributors are fingerprinted but not described."""
        self._journal = journal
        self._pool = pool
        self.folders = [os.fsencode(folder).rstrip(b"/") or b"/" for folder in folders]
        self._secret = secret
        self._bpm_range = bpm_range
        self._on_change = on_change or (lambda: None)
        self._catalog = catalog
        self._skip_min = skip_known_min_contributors
        self._queue: dict[bytes, None] = {}  # an ordered set of paths waiting for analysis
        self._descriptors_next: dict[bytes, None] = {}  # fingerprinted, unknown: described in full first
        self._starting: bytes | None = None  # taken off the queue, not yet in flight (being read)
        self._judging = 0  # fingerprinted heads waiting for the catalog's answer
        self._in_flight: dict[str, _InFlight] = {}  # by the path string the worker reports
        self._waiting_for_key: dict[str, list[tuple[bytes, FileIdentity]]] = {}  # copies of an in-flight file
        self._wake = asyncio.Event()
        self._scan_lock = asyncio.Lock()
        self._resume_timer: asyncio.TimerHandle | None = None
        self.scanning: tuple[int, int] | None = None  # (files seen, files known) during a full scan
        self.last_scan_at: float | None = None
        self.missing_folders: dict[str, str] = {}  # folder -> why its tracks are kept
        self.unreadable: list[tuple[bytes, str]] = []  # from the last scan
        self.journal_error: str | None = None  # why the journal cannot be written now, if so
        self.stats = {"analyzed": 0, "linked": 0, "failed": 0, "moved": 0, "deleted": 0, "requeued": 0,
                      "described_by_catalog": 0}
        paused_until = journal.setting("paused_until")
        self.paused = bool(journal.setting("paused", False))
        if self.paused and paused_until is not None:
            self._schedule_resume(paused_until)

    # --- state for status ----------------------------------------------------------------

    @property
    def queued(self) -> int:
        return len(self._queue) + len(self._descriptors_next) + sum(len(w) for w in self._waiting_for_key.values())

    @property
    def analyzing(self) -> int:
        """Files being read now: in a worker, being identified, or waiting for the catalog."""
        return len(self._in_flight) + (self._starting is not None) + self._judging

    @property
    def idle(self) -> bool:
        return not self._queue and not self._descriptors_next and not self.analyzing and self.scanning is None

    # --- pause ---------------------------------------------------------------------------

    def pause(self, until: float | None = None) -> None:
        """Stop starting analyses now (files in flight finish); remembered across restarts.
        Watching and scanning go on, so nothing is missed while paused."""
        self.paused = True
        self._journal.set_setting("paused", True)
        self._journal.set_setting("paused_until", until)
        self._cancel_resume_timer()
        if until is not None:
            self._schedule_resume(until)

    def resume(self) -> None:
        self.paused = False
        self._journal.set_setting("paused", False)
        self._journal.set_setting("paused_until", None)
        self._cancel_resume_timer()
        self._wake.set()

    @property
    def paused_until(self) -> float | None:
        return self._journal.setting("paused_until") if self.paused else None

    def _cancel_resume_timer(self) -> None:
        if self._resume_timer:
            self._resume_timer.cancel()
            self._resume_timer = None

    def _schedule_resume(self, until: float) -> None:
        loop = asyncio.get_running_loop()
        self._resume_timer = loop.call_later(max(0.0, until - time.time()), self.resume)

    # --- reconciliation ------------------------------------------------------------------

    async def scan(self) -> None:
        """A full reconciliation of every music folder with the journal (the source of truth;
        watcher events are only hints). A missing or emptied folder keeps its tracks: an
        unmounted drive is not "every track deleted"."""
        async with self._scan_lock:
            present, missing = [], {}
            for folder in self.folders:
                if not os.path.isdir(folder):
                    missing[os.fsdecode(folder)] = "the folder is missing (an unmounted drive?); its tracks are kept"
                else:
                    present.append(folder)
            self.scanning = (0, 0)
            errors: list[tuple[bytes, str]] = []
            abandon = threading.Event()  # a thread cannot be cancelled: it is asked to stop

            def list_disk() -> dict[bytes, FileIdentity]:
                disk = {}
                for path, identity in walk(present, errors):
                    disk[path] = identity
                    if len(disk) % 1000 == 0:
                        self.scanning = (len(disk), self.scanning[1])
                        if abandon.is_set():
                            break
                return disk

            try:
                listing = asyncio.ensure_future(asyncio.to_thread(list_disk))
                try:
                    known = self._journal.files_under(present)  # meanwhile (the walk waits on syscalls)
                    self.scanning = (self.scanning[0], len(known))
                    disk = await asyncio.shield(listing)
                except asyncio.CancelledError:
                    abandon.set()
                    raise
                for folder in present:
                    if not _has_prefix(disk, folder) and _has_prefix(known, folder):
                        missing[os.fsdecode(folder)] = "the folder is empty but held tracks (an unmounted drive?); they are kept"
                        known = {path: identity for path, identity in known.items() if not _under(path, folder)}
                # a file below an unreadable folder is unknown, not deleted
                unreadable_folders = [path for path, _ in errors]
                known = {p: i for p, i in known.items() if not any(_under(p, f) for f in unreadable_folders)}
                self._apply(known, disk)
                for path in self._journal.stale_files(ANALYZER_VERSION):  # an upgraded analyzer
                    self._queue.setdefault(path)
                # permissions fixed (chmod changes no size or mtime): try again, once per scan
                for path in self._journal.failed_paths("permission"):
                    if path in disk and os.access(path, os.R_OK):
                        self._queue.setdefault(path)
            finally:
                self.scanning = None
            self.missing_folders = missing
            self.unreadable = errors
            self.last_scan_at = time.time()
            for folder, why in missing.items():
                log.warning("music folder %s: %s", folder, why)
            self._wake.set()

    async def refresh(self, paths: Iterable[bytes]) -> None:
        """Reconcile just ``paths`` (files or folders a watcher saw change)."""
        async with self._scan_lock:
            paths = [path.rstrip(b"/") for path in paths if self._inside(path)]
            known = self._journal.files_under(paths)
            disk = await asyncio.to_thread(_list_paths, paths)
            self._apply(known, disk)
            self._wake.set()

    def _inside(self, path: bytes) -> bool:
        """Below a music folder that is there (a vanished music folder is never reconciled)."""
        return any(_under(path, folder) and path != folder for folder in self.folders) or any(
            path == folder and os.path.isdir(folder) for folder in self.folders
        )

    def _apply(self, known: dict[bytes, FileIdentity], disk: dict[bytes, FileIdentity]) -> None:
        plan = reconcile(known, disk)
        if plan.moved:
            self._journal.move_files(plan.moved)
            log.info("%d file(s) moved or renamed: relinked", len(plan.moved))
        if plan.deleted:
            self._journal.forget_files(plan.deleted)
            for path in plan.deleted:
                self._queue.pop(path, None)
                self._descriptors_next.pop(path, None)
            log.info("%d file(s) deleted", len(plan.deleted))
        for path in plan.new + plan.changed:
            self._queue.setdefault(path)
        self.stats["moved"] += len(plan.moved)
        self.stats["deleted"] += len(plan.deleted)
        if plan.moved or plan.deleted:
            self._on_change()

    # --- analysis ------------------------------------------------------------------------

    async def run(self) -> None:
        """Feed the queue to the pool until cancelled. Only this coroutine touches the pool."""
        while True:
            try:
                while not self.paused and (self._queue or self._descriptors_next) and self._pool.idle:
                    # a file changed again while it is being read waits for that read to end
                    path, source = next(
                        ((p, q) for q in (self._descriptors_next, self._queue) for p in q
                         if os.fsdecode(p) not in self._in_flight),
                        (None, None),
                    )
                    if path is None:
                        break
                    del source[path]
                    self._starting = path
                    try:
                        await self._start(path, describe=source is self._descriptors_next)
                    except JournalError:
                        source.setdefault(path)
                        raise
                    finally:
                        self._starting = None
                if self._pool.busy:
                    collecting = asyncio.ensure_future(asyncio.to_thread(self._pool.collect, 0.25))
                    try:
                        outcomes = await asyncio.shield(collecting)
                    except asyncio.CancelledError:
                        await collecting  # at most 0.25 s: the pool must be left alone before it closes
                        raise
                    failures, heads = [], []
                    for outcome in outcomes:  # every outcome is settled, even after a failed write
                        try:
                            head = self._finish(outcome)
                        except JournalError as exc:
                            failures.append(exc)
                        else:
                            if head is not None:
                                heads.append(head)
                    if heads:
                        failures += await self._judge(heads)
                    if failures:
                        raise failures[0]
                self.journal_error = None
            except JournalError as exc:
                # disk full, read-only...: nothing is lost (the file is queued again); say so and
                # try again in a while rather than spin or die
                if self.journal_error != str(exc):
                    log.error("%s", exc)
                self.journal_error = str(exc)
                await asyncio.sleep(JOURNAL_RETRY_SECONDS)
                continue
            if not self._pool.busy:
                self._wake.clear()
                if self.paused or not (self._queue or self._descriptors_next):
                    await self._wake.wait()

    async def drain(self) -> None:
        """Wait until nothing is queued or being analyzed (``cratesense scan``, tests)."""
        while not self.idle and not (self.paused and not self._in_flight):
            await asyncio.sleep(0.1)

    async def _start(self, path: bytes, describe: bool = False) -> None:
        try:
            identity, key = await asyncio.to_thread(_identify, path)
        except FileNotFoundError:
            if self._journal.identity(path) is not None:
                self._journal.forget_files([path])
            return
        except OSError as exc:
            identity = _stat_identity(path)
            if identity is not None:
                kind = "permission" if isinstance(exc, PermissionError) else "unreadable"
                self._journal.record_failure(path, identity, kind, exc.strerror or str(exc), ANALYZER_VERSION)
                self.stats["failed"] += 1
            return
        if self._journal.track_version(key) == ANALYZER_VERSION:
            self._journal.record_link(path, identity, key, ANALYZER_VERSION)
            self.stats["linked"] += 1
            return
        if key in self._waiting_for_key:  # a copy of a file being analyzed now: wait for it
            self._waiting_for_key[key].append((path, identity))
            return
        describe = describe or not self._may_skip_descriptors()
        task = Task(os.fsdecode(path), descriptors=describe, bpm_range=self._bpm_range)
        self._in_flight[task.path] = _InFlight(path, identity, key, describe)
        self._waiting_for_key[key] = []
        self._pool.submit(task)

    def _may_skip_descriptors(self) -> bool:
        return bool(self._skip_min) and self._catalog is not None and self._catalog.can_look_up()

    def _finish(self, outcome: Outcome) -> _Head | None:
        """Record ``outcome``; or, for a fingerprinted head, return it to be judged."""
        flight = self._in_flight.pop(outcome.path, None)
        if flight is None:  # not ours (cannot happen while only run() submits); never crash on it
            log.error("an analysis outcome for %s nobody asked for", outcome.path)
            return None
        copies = self._waiting_for_key.pop(flight.key, [])
        if not flight.descriptors and outcome.ok and _stat_identity(flight.path) == flight.identity:
            if outcome.observation is not None:
                return _Head(flight, outcome, copies)
            self._describe_next(flight, copies)  # no fingerprint to ask about
            return None
        try:
            self._record(outcome, flight, copies)
        except JournalError:
            self._requeue(flight, copies)
            raise
        return None

    def _requeue(self, flight: _InFlight, copies: list[tuple[bytes, FileIdentity]]) -> None:
        for path in [flight.path, *(path for path, _ in copies)]:
            self._queue.setdefault(path)  # analyzed again once the journal can be written

    def _describe_next(self, flight: _InFlight, copies: list[tuple[bytes, FileIdentity]]) -> None:
        """The catalog does not know this track well: analyze it in full, before other files."""
        self._descriptors_next.setdefault(flight.path)
        for path, _ in copies:
            self._queue.setdefault(path)

    async def _judge(self, heads: list[_Head]) -> list[JournalError]:
        """Ask the catalog about fingerprinted heads: record those it knows well (with its
        consensus), send the others to a full analysis. No answer means a full analysis."""
        fingerprints = [(h.outcome.observation["fingerprint"]["chromaprint"],
                         h.outcome.observation["fingerprint"]["duration"]) for h in heads]
        self._judging = len(heads)
        try:
            verdicts = await asyncio.wait_for(self._catalog.look_up(fingerprints), LOOKUP_TIMEOUT)
        except Exception as exc:  # offline, refused, too slow: our own analysis, as without a catalog
            log.info("no catalog look-up (%s): analyzing %d file(s) in full", exc, len(heads))
            verdicts = [None] * len(heads)
        finally:
            self._judging = 0
        failures = []
        for head, consensus in zip(heads, verdicts):
            if not known_well(consensus, self._skip_min or 0):
                self._describe_next(head.flight, head.copies)
                continue
            try:
                self._record(head.outcome, head.flight, head.copies, consensus)
            except JournalError as exc:
                self._requeue(head.flight, head.copies)
                failures.append(exc)
        self._wake.set()
        return failures

    def _record(
        self,
        outcome: Outcome,
        flight: _InFlight,
        copies: list[tuple[bytes, FileIdentity]],
        consensus: dict | None = None,
    ) -> None:
        if _stat_identity(flight.path) != flight.identity:
            # changed (still being copied?) or gone while it was read: look again
            if os.path.lexists(flight.path):
                self._queue.setdefault(flight.path)
                self.stats["requeued"] += 1
            for path, _ in copies:
                self._queue.setdefault(path)
            self._wake.set()
            return
        if outcome.ok:
            version = outcome.analysis["analyzer_version"]
            observation = _guarded(observation_id(self._secret, flight.key, version), outcome.observation, flight.path)
            # which descriptors are ours: "local", or "catalog" when they were skipped for its consensus
            analysis = {**outcome.analysis, "descriptors_from": "local" if consensus is None else "catalog"}
            self._journal.record_analysis(flight.path, flight.identity, flight.key, analysis, version, observation,
                                          consensus)
            if consensus is not None:
                self.stats["described_by_catalog"] += 1
            self.stats["analyzed"] += 1
            for path, identity in copies:
                self._journal.record_link(path, identity, flight.key, version)
                self.stats["linked"] += 1
            log.info("analyzed %s", display_path(flight.path))
        else:
            for path, identity in [(flight.path, flight.identity), *copies]:
                self._journal.record_failure(path, identity, outcome.error_kind, outcome.error, ANALYZER_VERSION)
                self.stats["failed"] += 1
            log.warning("cannot analyze %s: %s: %s", display_path(flight.path), outcome.error_kind, outcome.error)
        self._on_change()


def _guarded(observation_id: str, fields: dict | None, path: bytes) -> Observation | None:
    """The observation as the catalog's own contract and guard accept it: a field that fails is
    dropped (and logged here, locally), never queued."""
    if fields is None:
        return None
    payload, dropped = sanitize_observation({"id": observation_id, **fields})
    for reason in dropped:
        log.warning("%s: not sending %s", display_path(path), reason)
    if payload is None:
        return None
    del payload["id"]
    return Observation(observation_id, payload)


def _under(path: bytes, folder: bytes) -> bool:
    return path == folder or path.startswith(folder + b"/") or folder == b"/"


def _has_prefix(paths: dict[bytes, FileIdentity], folder: bytes) -> bool:
    return any(_under(path, folder) for path in paths)


def _stat_identity(path: bytes) -> FileIdentity | None:
    try:
        return FileIdentity.of(os.stat(path))
    except OSError:
        return None


def _identify(path: bytes) -> tuple[FileIdentity, str]:
    """The file's identity and content key (the identity is checked again after analysis, so a
    file that changes meanwhile is looked at again)."""
    identity = FileIdentity.of(os.stat(path))
    return identity, content_key(path, identity.size)


def _list_paths(paths: list[bytes]) -> dict[bytes, FileIdentity]:
    """The disk's view of ``paths``: folders walked, files stat'ed (if they are audio files)."""
    disk: dict[bytes, FileIdentity] = {}
    for path in paths:
        try:
            if os.path.isdir(path) and not os.path.islink(path):
                disk.update(walk([path]))
            elif is_candidate(os.path.basename(path)) and os.path.isfile(path):
                disk[path] = FileIdentity.of(os.stat(path))
        except OSError:
            continue
    return disk
