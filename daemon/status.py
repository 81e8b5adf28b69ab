"""The agent's status: one typed document, built by the daemon, decoded by every face.

The CLI, the tray and the web page all decode this same ``Status`` (msgspec), so each state and
each error means the same thing everywhere: a journal error is a journal error in the tray too,
and every problem the user can act on is in ``problems`` with what to do about it. ``state``
is derived in one place (``overall_state``).
"""

from __future__ import annotations

import msgspec

STATES = ("watching", "scanning", "analyzing", "syncing", "paused", "offline", "error")


class WatchMode(msgspec.Struct, frozen=True):
    mode: str  # "inotify", "polling" or "none" (the folder does not exist yet)
    reason: str = ""


class Problem(msgspec.Struct, frozen=True):
    """Something the user can do something about; ``kind`` says which part it comes from."""

    kind: str  # "journal", "sync", "folder", "unreadable", "parked", "failing", "watch"
    message: str


class Progress(msgspec.Struct, frozen=True):
    """The analysis backlog since the queue was last empty: done of total, and when it ends."""

    done: int
    total: int
    files_per_minute: float | None = None
    eta_seconds: float | None = None


class Status(msgspec.Struct, kw_only=True):
    state: str  # one of STATES
    error_kind: str | None = None  # with state "error": "journal" or "sync"
    version: str
    analyzer_version: str
    pid: int
    started_at: float
    paused: bool
    paused_until: float | None = None
    scanning: tuple[int, int] | None = None  # (files seen, files known) while a full scan runs
    last_scan_at: float | None = None
    scans_completed: int = 0
    tracks: int
    files: int
    queued: int
    analyzing: int
    idle: bool = False  # nothing will happen until something changes (no scan running or asked for, no file in hand)
    settling: int = 0  # changed paths the watcher holds until they are quiet
    phases: dict[str, int] = {}
    progress: Progress | None = None
    workers: int = 0  # analysis processes alive now (they leave after an idle minute)
    waiting_to_sync: int
    known_to_catalog: int = 0
    parked: int = 0
    parked_reasons: list[str] = []
    failing_files: int = 0
    folders: list[str] = []
    missing_folders: dict[str, str] = {}
    unreadable: int = 0
    unreadable_paths: list[tuple[str, str]] = []
    watch: dict[str, WatchMode] = {}
    events_seen: int = 0
    session: dict[str, int] = {}
    journal_rebuilt_from: str | None = None
    journal_error: str | None = None
    catalog: str = "-"
    contribute: bool = True
    syncing: bool = False
    last_sync_at: float | None = None
    last_sync_error: str | None = None
    offline: bool = False
    next_retry_at: float | None = None
    deletion: dict | None = None
    sent_this_session: int = 0
    problems: list[Problem] = []


def overall_state(*, journal_error: bool, paused: bool, offline: bool, scanning: bool, busy: bool,
                  syncing: bool, sync_error: bool) -> tuple[str, str | None]:
    """(state, error kind): the most pressing thing the agent is doing or suffering."""
    if journal_error:
        return "error", "journal"
    if paused:
        return "paused", None
    if offline:
        return "offline", None
    if scanning:
        return "scanning", None
    if busy:
        return "analyzing", None
    if syncing:
        return "syncing", None
    if sync_error:
        return "error", "sync"
    return "watching", None


def describe(status: Status) -> list[tuple[str, str]]:
    """The status in a person's words, a row each (the CLI and the web page show these)."""
    import time

    def ago(timestamp):
        if not timestamp:
            return "never"
        seconds = max(0, time.time() - timestamp)
        return f"{seconds:.0f} s ago" if seconds < 120 else f"{seconds / 60:.0f} min ago"

    state = status.state
    if state == "error":
        state = f"{status.error_kind or 'an'} error"
    if status.state == "scanning" and status.scanning:
        state = f"scanning ({status.scanning[0]} files seen)"
    if status.paused_until:
        state += time.strftime(" until %Y-%m-%d %H:%M", time.localtime(status.paused_until))
    queued = f"{status.queued + status.analyzing}"
    if status.progress and status.progress.total > 1:
        queued += f" ({status.progress.done} of {status.progress.total} done"
        if status.progress.eta_seconds is not None:
            queued += f", about {_duration_words(status.progress.eta_seconds)} left"
        queued += ")"
    rows = [
        ("state", state),
        ("tracks known", f"{status.tracks} ({status.files} files)"),
        ("queued for analysis", queued),
        ("waiting to sync", str(status.waiting_to_sync)),
        ("known to the catalog", str(status.known_to_catalog)),
        ("parked (rejected)", str(status.parked)),
        ("failing files", f"{status.failing_files}" + (" (cratesense failures)" if status.failing_files else "")),
        ("last scan", ago(status.last_scan_at)),
        ("catalog", status.catalog),
        ("contribute", "on" if status.contribute else "off"),
        ("last sync", ago(status.last_sync_at) + (f" ({status.last_sync_error})" if status.last_sync_error else "")),
    ]
    if status.journal_error:
        rows.append(("journal", status.journal_error))
    if status.journal_rebuilt_from:
        rows.append(("journal", f"was damaged: moved to {status.journal_rebuilt_from} and rebuilt"))
    for folder, watch in status.watch.items():
        rows.append(("watching", f"{folder} ({watch.mode}" + (f": {watch.reason})" if watch.reason else ")")))
    for folder, why in status.missing_folders.items():
        rows.append(("missing folder", f"{folder}: {why}"))
    for path, why in status.unreadable_paths:
        rows.append(("cannot read", f"{path}: {why} (its tracks are kept)"))
    for reason in status.parked_reasons[:3]:
        rows.append(("refused", reason))
    return rows


def _duration_words(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def decode(data: bytes) -> Status:
    return msgspec.json.decode(data, type=Status)


def encode(status: Status) -> bytes:
    return msgspec.json.encode(status)


def to_dict(status: Status) -> dict:
    return msgspec.to_builtins(status)
