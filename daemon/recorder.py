"""Recording: what the analysis of a file becomes in the journal.

Every write goes through the journal's writer thread. An analysis, its track, its observation
and the links of its copies are one transaction; the observation is built from the allow-list
the worker returned and passed through the catalog's own guard there (a field that fails is
dropped and logged locally, never queued). A file that changed while it was read is not
recorded: the caller queues it again.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
from collections import Counter
from collections.abc import Callable

import msgspec

from cratesense.analysis.constants import ANALYZER_VERSION, wire_version
from cratesense.analysis.model import Consensus, observation_fields
from cratesense.daemon.filejob import FileJob
from cratesense.daemon.journal import FileIdentity, Journal, Observation, display_path
from cratesense.daemon.journal_io import JournalIO
from cratesense.daemon.pool import Outcome

log = logging.getLogger(__name__)


def observation_id(secret: bytes, key: str, analyzer_version: str) -> str:
    """Stable per (install, content, the analyzer version on the wire): every re-send of the same
    observation is the same upsert at the catalog, and nothing in it can be traced back to a file."""
    return hashlib.blake2b(f"{key}:{analyzer_version}".encode(), key=secret, digest_size=16).hexdigest()


def guarded(observation_id: str, fields: dict | None, path: bytes) -> Observation | None:
    """The observation as the catalog's own contract and guard accept it: a field that fails is
    dropped (and logged here, locally), never queued."""
    if fields is None:
        return None
    from cratesense.catalog.contract import sanitize_observation

    payload, dropped = sanitize_observation({"id": observation_id, **fields})
    for reason in dropped:
        log.warning("%s: not sending %s", display_path(path), reason)
    if payload is None:
        return None
    del payload["id"]
    return Observation(observation_id, payload)


def stat_identity(path: bytes) -> FileIdentity | None:
    try:
        return FileIdentity.of(os.stat(path))
    except OSError:
        return None


class Recorder:
    def __init__(self, io: JournalIO, secret: bytes, stats: Counter, on_change: Callable[[], None]) -> None:
        self._io = io
        self._secret = secret
        self._stats = stats
        self._on_change = on_change

    async def unchanged(self, job: FileJob) -> bool:
        """The file is still what was read (a stat, in a thread: it may hang on a dead mount)."""
        return await asyncio.to_thread(stat_identity, job.path) == job.identity

    async def analysis(self, job: FileJob, outcome: Outcome, consensus: Consensus | None = None) -> bool:
        """Record ``outcome`` for ``job`` and its copies; False (nothing written) when the file
        changed or vanished since it was read."""
        if not await self.unchanged(job):
            self._stats["requeued"] += 1
            return False
        identity, key = job.identified()
        copies = [(copy.path, copy.identified()[0]) for copy in job.copies]
        if outcome.analysis is not None:
            secret, path = self._secret, job.path
            # which descriptors are ours: "local", or "catalog" when skipped for its consensus
            analysis = msgspec.structs.replace(outcome.analysis, descriptors_from="local" if consensus is None else "catalog")

            def write(journal: Journal) -> None:
                earlier = journal.track(key)
                if earlier is not None and observation_fields(earlier) == outcome.observation:
                    observation = None  # a re-analysis that changed nothing on the wire sends nothing again
                else:
                    observation = guarded(observation_id(secret, key, wire_version(analysis.analyzer_version)),
                                          outcome.observation, path)
                journal.record_analysis(path, identity, key, analysis, observation, consensus, links=copies)

            await self._io.write(write)
            self._stats["analyzed"] += 1
            self._stats["linked"] += len(copies)
            self._stats["described_by_catalog"] += consensus is not None
            log.info("analyzed %s", display_path(job.path))
        else:
            failed = [(job.path, identity), *copies]
            kind, message = outcome.error_kind or "internal", outcome.error or "no analysis and no error"
            await self._io.write(lambda journal: journal.record_failures(failed, kind, message, ANALYZER_VERSION))
            self._stats["failed"] += len(failed)
            log.warning("cannot analyze %s: %s: %s", display_path(job.path), outcome.error_kind, outcome.error)
        self._on_change()
        return True

    async def link(self, job: FileJob) -> None:
        """A file whose content is already analyzed (a copy, a hard link, a file moved back)."""
        path, (identity, key) = job.path, job.identified()
        await self._io.write(lambda journal: journal.record_link(path, identity, key, ANALYZER_VERSION))
        self._stats["linked"] += 1
        self._on_change()

    async def unreadable(self, path: bytes, error: OSError) -> None:
        identity = await asyncio.to_thread(stat_identity, path)
        if identity is None:
            return
        kind = "permission" if isinstance(error, PermissionError) else "unreadable"
        message = error.strerror or str(error)
        await self._io.write(lambda journal: journal.record_failure(path, identity, kind, message, ANALYZER_VERSION))
        self._stats["failed"] += 1
        self._on_change()

    async def forget(self, path: bytes) -> None:
        """A queued file that is gone: forget it if the journal knew it."""

        def forget(journal: Journal) -> None:
            if journal.identity(path) is not None:
                journal.forget_files([path])

        await self._io.write(forget)
