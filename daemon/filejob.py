"""A file's life in the agent, from "the disk says it is new or changed" to "recorded".

One ``FileJob`` per path the analysis queue holds; its ``phase`` says where it is, and only the
queue (``daemon/analysis_queue.py``) moves it on::

    QUEUED ──▶ IDENTIFYING ──▶ (content already analyzed: linked, done)
                    │      └──▶ WAITING_FOR_COPY (same content in flight: linked after it)
                    ▼
        FINGERPRINTING ──▶ JUDGING ──▶ (the catalog knows it well: RECORDING, done)
         (head only)          └──────▶ DESCRIBE_NEXT ──▶ ANALYZING ──▶ RECORDING ──▶ done
                    └────────────────────────────────────▲
                          (no shared catalog to ask: the full analysis at once)

A job that fails is recorded as a failure and done; one whose file changed while it was read
goes back to QUEUED; one whose file was deleted is simply done.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from cratesense.daemon.journal import FileIdentity


class Phase(enum.Enum):
    QUEUED = "queued"  # waiting for its turn
    IDENTIFYING = "identifying"  # stat and content key being read
    WAITING_FOR_COPY = "waiting for a copy"  # the same content is being analyzed now
    FINGERPRINTING = "fingerprinting"  # the head only, in a worker, to ask the catalog first
    JUDGING = "judging"  # waiting for the catalog's verdict
    DESCRIBE_NEXT = "describe next"  # unknown to the catalog: analyzed in full before new files
    ANALYZING = "analyzing"  # the full analysis, in a worker
    RECORDING = "recording"  # being written to the journal

    @property
    def waiting(self) -> bool:
        """Not being worked on: counted as "queued" in the status."""
        return self in (Phase.QUEUED, Phase.DESCRIBE_NEXT, Phase.WAITING_FOR_COPY)


@dataclass(slots=True, eq=False)
class FileJob:
    path: bytes
    phase: Phase = Phase.QUEUED
    identity: FileIdentity | None = None
    content_key: str | None = None
    describe: bool = False  # the full analysis, no fingerprint-first (the catalog did not know it)
    again: bool = False  # the file changed while it was being read: queue it again after
    gone: bool = False  # the file was deleted while it was being read
    copies: list[FileJob] = field(default_factory=list)  # other paths with the same content

    def identified(self) -> tuple[FileIdentity, str]:
        """(identity, content key): set once IDENTIFYING is done; asked only after it."""
        if self.identity is None or self.content_key is None:
            raise RuntimeError(f"{self.path!r} is not identified yet")
        return self.identity, self.content_key
