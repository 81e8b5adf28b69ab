"""The analysis queue: every file waiting to be analyzed, and the one place a file's phase moves.

The reconciler adds the paths the disk says are new or changed and discards deleted ones; the
queue turns each into a ``FileJob`` and walks it through its phases (``daemon/filejob.py``),
keeping at most as many jobs in a worker's hands as the pool has workers. A file whose content
key is already analyzed (a copy, a hard link, a file moved back in) is linked without decoding;
a copy of a file being analyzed now waits for it and is linked after; everything else is
analyzed once, and checked again afterwards, so a file that changed while it was read is
analyzed again instead of being recorded half-written. The file being described next (one the
catalog did not know) goes before new files.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable

from cratesense.analysis.constants import ANALYZER_VERSION, WITHOUT_MODEL_VERSION, current_native_stages
from cratesense.analysis.model import TrackAnalysis
from cratesense.daemon.filejob import FileJob, Phase
from cratesense.daemon.journal import FileIdentity
from cratesense.daemon.journal_io import JournalIO
from cratesense.daemon.known_tracks import KnownTracks
from cratesense.daemon.pause import Pause
from cratesense.daemon.pool import AnalysisPool, Task
from cratesense.daemon.recorder import Recorder
from cratesense.daemon.scan import content_key
from cratesense.errors import JournalError

log = logging.getLogger(__name__)

JOURNAL_RETRY_SECONDS = 10.0
_IN_A_WORKERS_HANDS = (Phase.IDENTIFYING, Phase.FINGERPRINTING, Phase.ANALYZING, Phase.RECORDING)


def identify(path: bytes) -> tuple[FileIdentity, str]:
    """The file's identity and content key (the identity is checked again after analysis, so a
    file that changes meanwhile is looked at again)."""
    identity = FileIdentity.of(os.stat(path))
    return identity, content_key(path, identity.size)


class AnalysisQueue:
    """Run ``run()`` as a task; ``add`` and ``discard`` from the reconciler."""

    def __init__(self, io: JournalIO, pool: AnalysisPool, recorder: Recorder, known: KnownTracks, pause: Pause,
                 stats: Counter, *, bpm_range: tuple[float, float] | None = None) -> None:
        self._io = io
        self._pool = pool
        self._recorder = recorder
        self._known = known
        self._pause = pause
        self._stats = stats
        self._bpm_range = bpm_range
        self._jobs: dict[bytes, FileJob] = {}  # every file the queue holds, by path
        self._queued: dict[bytes, None] = {}  # QUEUED paths, oldest first (an ordered set)
        self._first: dict[bytes, None] = {}  # DESCRIBE_NEXT paths: before the others
        self._leaders: dict[str, FileJob] = {}  # content key -> the job analyzing that content
        self._in_hand = 0  # jobs in a worker's hands (identifying, in a worker, recording)
        self._tasks: set[asyncio.Task] = set()
        self._wake = asyncio.Event()
        self.journal_error: str | None = None  # why the journal cannot be written now, if so
        # the last full analysis said the sound model cannot be loaded: tracks analyzed without it
        # are not analyzed again for it until one says it can (a new file, or the next scan)
        self._model_unavailable = False
        self._journal_retry_at = 0.0
        # what follows a file's own analysis being recorded (tags written, when asked for)
        self.after_recorded: Callable[[list[bytes], TrackAnalysis], Awaitable[None]] | None = None
        self.completed = 0  # jobs done this session (for progress)
        self.backlog_started_at: float | None = None
        self.backlog_done = 0

    # --- what the status shows -------------------------------------------------------------

    @property
    def queued(self) -> int:
        return sum(1 for job in self._jobs.values() if job.phase.waiting)

    @property
    def analyzing(self) -> int:
        return len(self._jobs) - self.queued

    @property
    def in_flight(self) -> int:
        return self.analyzing

    @property
    def empty(self) -> bool:
        return not self._jobs

    def phases(self) -> dict[str, int]:
        counts = Counter(job.phase.value for job in self._jobs.values())
        return dict(counts)

    # --- the reconciler's side ---------------------------------------------------------------

    def add(self, paths: Iterable[bytes]) -> None:
        """Files the disk says are new or changed (again: a file being read now is read again
        after)."""
        added = False
        for path in paths:
            job = self._jobs.get(path)
            if job is None:
                if not self._jobs:
                    self.backlog_started_at, self.backlog_done = time.monotonic(), 0
                self._jobs[path] = FileJob(path)
                self._queued[path] = None
                added = True
            elif not job.phase.waiting:
                job.again = True
        if added:
            self._wake.set()

    def discard(self, paths: Iterable[bytes]) -> None:
        """Files that are gone from the disk."""
        for path in paths:
            job = self._jobs.get(path)
            if job is None:
                continue
            if job.phase is Phase.QUEUED or job.phase is Phase.DESCRIBE_NEXT:
                self._drop(job)
            elif job.phase is Phase.WAITING_FOR_COPY:
                for leader in self._leaders.values():
                    if job in leader.copies:
                        leader.copies.remove(job)
                self._drop(job)
            else:
                job.gone = True  # checked when its analysis ends

    def wake(self) -> None:
        self._wake.set()

    # --- the loop ------------------------------------------------------------------------------

    async def run(self) -> None:
        """Start jobs while there are workers for them, until cancelled."""
        try:
            while True:
                self._wake.clear()
                if self.journal_error and time.monotonic() < self._journal_retry_at:
                    await asyncio.sleep(self._journal_retry_at - time.monotonic())
                    continue
                while not self._pause.active and self._in_hand < self._pool.max_workers:
                    job = self._next()
                    if job is None:
                        break
                    self._in_hand += 1
                    job.phase = Phase.IDENTIFYING
                    self._spawn(self._process(job), "file job")
                await self._wake.wait()
        finally:
            for task in list(self._tasks):
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)

    def _spawn(self, coroutine, name: str) -> None:
        task = asyncio.create_task(coroutine, name=name)
        self._tasks.add(task)  # kept until done: a bare task can be garbage-collected mid-run
        task.add_done_callback(self._tasks.discard)

    def _next(self) -> FileJob | None:
        for source in (self._first, self._queued):
            if source:
                path = next(iter(source))
                del source[path]
                return self._jobs[path]
        return None

    async def _process(self, job: FileJob) -> None:
        holding = True

        def release() -> None:
            nonlocal holding
            if holding:
                holding = False
                self._in_hand -= 1
                self._wake.set()

        try:
            await self._walk(job, release)
            if self.journal_error:
                log.info("the journal can be written again")
            self.journal_error = None
        except JournalError as exc:
            # disk full, read-only...: nothing is lost (the file is queued again); say so and
            # try again in a while rather than spin or die
            if self.journal_error != str(exc):
                log.error("%s", exc)
            self.journal_error = str(exc)
            self._journal_retry_at = time.monotonic() + JOURNAL_RETRY_SECONDS
            self._requeue(job)
        except asyncio.CancelledError:
            raise
        except Exception:  # a bug of ours: the file waits for the next scan, the agent goes on
            log.exception("analysis of %s failed", os.fsdecode(job.path))
            self._finish(job)
        finally:
            release()

    async def _walk(self, job: FileJob, release) -> None:
        """One job from IDENTIFYING to done."""
        earlier_key = job.content_key  # a job described next was identified before
        try:
            job.identity, job.content_key = await asyncio.to_thread(identify, job.path)
        except FileNotFoundError:
            await self._recorder.forget(job.path)
            return self._finish(job)
        except OSError as exc:
            await self._recorder.unreadable(job.path, exc)
            return self._finish(job)
        key = job.identified()[1]
        if earlier_key is not None and earlier_key != key:  # edited meanwhile: its copies are not copies
            if self._leaders.get(earlier_key) is job:
                del self._leaders[earlier_key]
            self._requeue_copies(job)
        earlier_version = await self._io.read(lambda journal: journal.track_version(key))
        if earlier_version == ANALYZER_VERSION or (earlier_version == WITHOUT_MODEL_VERSION and self._model_unavailable):
            await self._recorder.link(job)
            return self._finish(job)
        leader = self._leaders.get(key)
        if leader is not None and leader is not job:  # a copy of a file being analyzed now
            job.phase = Phase.WAITING_FOR_COPY
            leader.copies.append(job)
            return
        self._leaders[key] = job
        head_first = not job.describe and self._known.fingerprint_first()
        job.phase = Phase.FINGERPRINTING if head_first else Phase.ANALYZING
        kept = None
        if not head_first and earlier_version is not None and current_native_stages(earlier_version):
            kept = await self._io.read(lambda journal: native_results(journal.track(key)))
        outcome = await self._pool.analyze(Task(os.fsdecode(job.path), descriptors=not head_first,
                                                bpm_range=self._bpm_range, native_results=kept))
        if outcome.analysis is not None and not head_first:
            self._model_unavailable = outcome.analysis.descriptors.model_error is not None
        consensus = None
        if head_first and outcome.analysis is not None:
            if not await self._recorder.unchanged(job):
                self._stats["requeued"] += 1
                return self._requeue(job)
            if outcome.observation is None:  # no fingerprint to ask about
                return self._describe_next(job)
            job.phase = Phase.JUDGING
            release()  # the worker is free while the catalog is asked
            fingerprint = outcome.analysis.fingerprint
            consensus = await self._known.verdict(fingerprint.chromaprint, fingerprint.duration)
            if not self._known.known_well(consensus):
                return self._describe_next(job)
        job.phase = Phase.RECORDING
        if await self._recorder.analysis(job, outcome, consensus):
            if outcome.analysis is not None and consensus is None and self.after_recorded is not None:
                self._spawn(self.after_recorded([job.path, *(copy.path for copy in job.copies)], outcome.analysis),
                            "after recording")
            return self._finish(job)
        self._requeue(job)

    def _describe_next(self, job: FileJob) -> None:
        """The catalog does not know this track well: analyze it in full, before other files
        (it stays the leader of its content: copies found meanwhile wait for it)."""
        job.describe, job.phase = True, Phase.DESCRIBE_NEXT
        self._first[job.path] = None
        self._wake.set()

    def _requeue(self, job: FileJob) -> None:
        """Read it again (it changed, or the journal could not take it): it and its copies."""
        self._release_leader(job)
        self._requeue_copies(job)
        if job.gone:
            return self._drop(job)
        job.phase, job.again = Phase.QUEUED, False
        self._queued[job.path] = None
        self._wake.set()

    def _requeue_copies(self, job: FileJob) -> None:
        for copy in job.copies:
            copy.phase = Phase.QUEUED
            self._queued[copy.path] = None
        job.copies = []

    def _finish(self, job: FileJob) -> None:
        """Done with ``job`` (recorded, linked, failed or gone); its copies were recorded with it."""
        self._release_leader(job)
        for copy in job.copies:
            self._drop(copy)
        job.copies = []
        if job.again and not job.gone:
            job.phase, job.again, job.describe = Phase.QUEUED, False, False
            self._queued[job.path] = None
            self._wake.set()
            return
        self._drop(job)

    def _release_leader(self, job: FileJob) -> None:
        if job.content_key is not None and self._leaders.get(job.content_key) is job:
            del self._leaders[job.content_key]

    def _drop(self, job: FileJob) -> None:
        self._release_leader(job)
        self._requeue_copies(job)  # copies waiting for a job that ends without recording them
        if self._jobs.get(job.path) is job:
            del self._jobs[job.path]
            self._queued.pop(job.path, None)
            self._first.pop(job.path, None)
            self.completed += 1
            self.backlog_done += 1


def native_results(analysis: TrackAnalysis | None) -> dict | None:
    """The fields of an earlier full analysis's native stages an upgrade did not change
    (loudness, the sound model and its embedding): its re-analysis runs only the others, and
    decodes only the analysis view when none is left (about 40 % of a track's cost is the native
    view and its loudness). None when that analysis has none to keep (it was a fingerprint-only
    pass, or the track is too quiet to measure): the file is read in full."""
    if analysis is None or analysis.descriptors.loudness_lufs is None:
        return None
    return analysis.native_results()
