"""Live watching of the music folders: watchdog events, debounced, handed to the library.

Events are hints (the periodic scan stays the truth). Each path waits for a quiet period after
its last event, and a file is handed over only once its mtime is older than that quiet period,
so a file being copied is looked at when complete; a maximum wait bounds how long a path that
keeps changing can be held back. Many paths in one folder collapse into that folder.

inotify cannot serve network file systems and silently drops sub-folder watches beyond
``fs.inotify.max_user_watches`` (see shared/platform-notes.md), so each folder is watched by
inotify only when its file system is local and the folder count fits the limit; otherwise it is
polled, and ``modes`` says why.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from watchdog.events import (
    DirCreatedEvent,
    DirDeletedEvent,
    DirMovedEvent,
    FileClosedEvent,
    FileCreatedEvent,
    FileDeletedEvent,
    FileModifiedEvent,
    FileMovedEvent,
    FileSystemEvent,
    FileSystemEventHandler,
)
from watchdog.observers.inotify import InotifyObserver
from watchdog.observers.polling import PollingObserver

log = logging.getLogger(__name__)

# Opened/closed-without-writing events are left out: our own reads would wake us up.
_EVENTS = [
    FileCreatedEvent,
    FileDeletedEvent,
    FileModifiedEvent,
    FileMovedEvent,
    FileClosedEvent,
    DirCreatedEvent,
    DirDeletedEvent,
    DirMovedEvent,
]
NETWORK_FILE_SYSTEMS = ("nfs", "nfs4", "cifs", "smb3", "smbfs", "9p", "afs", "ceph", "glusterfs", "davfs", "sshfs")
WATCH_HEADROOM = 1024  # watches left for the rest of the desktop
COLLAPSE_AT = 64  # this many pending paths in one folder become one folder rescan
MAX_USER_WATCHES = Path("/proc/sys/fs/inotify/max_user_watches")


@dataclass(frozen=True, slots=True)
class WatchMode:
    mode: str  # "inotify" or "polling"
    reason: str = ""


def file_system_type(folder: str, mountinfo: str) -> str:
    """The file system type of the mount holding ``folder``, from /proc/self/mountinfo text."""
    best, best_type = "", ""
    for line in mountinfo.splitlines():
        fields, _, tail = line.partition(" - ")
        parts = fields.split()
        if len(parts) < 5 or not tail:
            continue
        mount_point = parts[4].replace("\\040", " ")
        inside = folder == mount_point or folder.startswith(mount_point.rstrip("/") + "/")
        if inside and len(mount_point) >= len(best):
            best, best_type = mount_point, tail.split()[0]
    return best_type


def choose_modes(
    folders: list[str], configured: str, fs_types: dict[str, str], folder_count: int, watch_limit: int | None
) -> dict[str, WatchMode]:
    """Pure: how each folder is watched, and why when it is polled."""
    modes = {}
    for folder in folders:
        fs_type = fs_types.get(folder, "")
        if configured == "polling":
            modes[folder] = WatchMode("polling", "library.watch = polling in the config")
        elif fs_type in NETWORK_FILE_SYSTEMS or fs_type.startswith("fuse"):
            modes[folder] = WatchMode("polling", f"{fs_type} is a network or FUSE file system inotify cannot watch")
        else:
            modes[folder] = WatchMode("inotify")
    live = [folder for folder, mode in modes.items() if mode.mode == "inotify"]
    if live and watch_limit is not None and folder_count > watch_limit - WATCH_HEADROOM:
        wanted = max(524288, 2 * (folder_count + WATCH_HEADROOM))
        reason = (
            f"the library has {folder_count} folders but fs.inotify.max_user_watches is {watch_limit}; "
            f"raise it: sudo sysctl fs.inotify.max_user_watches={wanted} (and add the line "
            f"fs.inotify.max_user_watches={wanted} to /etc/sysctl.d/90-cratesense.conf)"
        )
        for folder in live:
            modes[folder] = WatchMode("polling", reason)
    return modes


def count_folders(folders: Iterable[str]) -> int:
    """Folders an inotify watch of ``folders`` would need (hidden ones included, as watchdog does)."""
    total = 0
    pending = list(folders)
    while pending:
        folder = pending.pop()
        total += 1
        try:
            with os.scandir(folder) as entries:
                pending.extend(e.path for e in entries if e.is_dir(follow_symlinks=False))
        except OSError:
            continue
    return total


class _Handler(FileSystemEventHandler):
    """Runs on watchdog's thread: hands paths to the loop, never blocks."""

    def __init__(self, loop: asyncio.AbstractEventLoop, note: Callable[[list[bytes]], None]) -> None:
        self._loop = loop
        self._note = note

    def on_any_event(self, event: FileSystemEvent) -> None:
        paths = [event.src_path] + ([event.dest_path] if getattr(event, "dest_path", "") else [])
        try:
            self._loop.call_soon_threadsafe(self._note, [os.fsencode(path) for path in paths])
        except RuntimeError:  # the loop is closed: we are shutting down
            pass


class _OverflowAlarm(logging.Handler):
    """The kernel's inotify queue (fs.inotify.max_queued_events) overflowed: events were lost.
    watchdog rebuilds its watches but tells handlers nothing; it only logs a warning, so that
    warning is what we listen for (tests/test_daemon_watcher.py overflows a real queue, so a
    watchdog that words it differently fails there, not silently here)."""

    LOGGER = "watchdog.observers.inotify_c"

    def __init__(self, loop: asyncio.AbstractEventLoop, on_overflow: Callable[[], None]) -> None:
        super().__init__(logging.WARNING)
        self._loop, self._on_overflow = loop, on_overflow

    def emit(self, record: logging.LogRecord) -> None:
        if "overflow" in record.getMessage().lower():
            try:
                self._loop.call_soon_threadsafe(self._on_overflow)
            except RuntimeError:  # the loop is closed: we are shutting down
                pass


class Watcher:
    """Watches ``folders`` and calls ``on_paths`` with settled batches of changed paths."""

    def __init__(
        self,
        folders: Iterable[str | bytes],
        on_paths: Callable[[set[bytes]], Awaitable[None]],
        *,
        configured: str = "auto",
        quiet_seconds: float = 2.0,
        max_wait_seconds: float = 60.0,
        poll_interval_seconds: float = 60.0,
    ) -> None:
        self.folders = [os.fsdecode(folder) for folder in folders]
        self._on_paths = on_paths
        self._configured = configured
        self._quiet = quiet_seconds
        self._max_wait = max_wait_seconds
        self._poll_interval = poll_interval_seconds
        self._pending: dict[bytes, tuple[float, float, float]] = {}  # path -> (first, last, origin)
        self._has_pending = asyncio.Event()
        self._observers: list = []
        self._flusher: asyncio.Task | None = None
        self.modes: dict[str, WatchMode] = {}
        self.events_seen = 0
        self.overflows = 0
        self._alarm: _OverflowAlarm | None = None

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        existing = [folder for folder in self.folders if os.path.isdir(folder)]
        try:
            mountinfo = Path("/proc/self/mountinfo").read_text()
        except OSError:
            mountinfo = ""
        fs_types = {folder: file_system_type(os.path.realpath(folder), mountinfo) for folder in existing}
        try:
            limit = int(MAX_USER_WATCHES.read_text())
        except (OSError, ValueError):
            limit = None
        folder_count = await asyncio.to_thread(count_folders, existing) if limit is not None else 0
        self.modes = choose_modes(existing, self._configured, fs_types, folder_count, limit)
        handler = _Handler(loop, self._note)
        self._alarm = _OverflowAlarm(loop, self._overflowed)
        logging.getLogger(_OverflowAlarm.LOGGER).addHandler(self._alarm)
        for mode in ("inotify", "polling"):
            folders = [folder for folder in existing if self.modes[folder].mode == mode]
            if folders:
                await asyncio.to_thread(self._observe, mode, folders, handler)
        for folder in self.folders:
            if folder not in self.modes:
                self.modes[folder] = WatchMode("none", "the folder does not exist; the periodic scan looks again")
        for folder, mode in self.modes.items():
            log.info("watching %s: %s%s", folder, mode.mode, f" ({mode.reason})" if mode.reason else "")
        self._flusher = asyncio.create_task(self._flush_loop(), name="watcher-flush")

    def _observe(self, mode: str, folders: list[str], handler: _Handler) -> None:
        observer = InotifyObserver() if mode == "inotify" else PollingObserver(timeout=self._poll_interval)
        try:
            for folder in folders:
                observer.schedule(handler, folder, recursive=True, event_filter=_EVENTS)
            observer.start()
        except OSError as exc:  # ENOSPC/EMFILE: out of inotify watches or instances
            observer.stop()
            if mode != "inotify":
                raise
            reason = f"inotify failed ({exc.strerror or exc}); raise fs.inotify.max_user_watches / max_user_instances"
            for folder in folders:
                self.modes[folder] = WatchMode("polling", reason)
            self._observe("polling", folders, handler)
            return
        self._observers.append(observer)

    async def stop(self) -> None:
        if self._flusher:
            self._flusher.cancel()
            try:
                await self._flusher
            except asyncio.CancelledError:
                pass
        if self._alarm is not None:
            logging.getLogger(_OverflowAlarm.LOGGER).removeHandler(self._alarm)
            self._alarm = None
        for observer in self._observers:
            observer.stop()
        await asyncio.to_thread(lambda: [observer.join(timeout=2) for observer in self._observers])
        self._observers = []

    def _overflowed(self) -> None:
        """Events were lost: every folder inotify watches is reconciled as a whole."""
        self.overflows += 1
        live = [folder for folder, mode in self.modes.items() if mode.mode == "inotify"]
        log.warning("the inotify event queue overflowed (a burst of changes): rescanning %s", ", ".join(live))
        self._note([os.fsencode(folder) for folder in live])

    def _note(self, paths: list[bytes]) -> None:
        now = time.monotonic()
        self.events_seen += 1
        for path in paths:
            first, _, origin = self._pending.get(path, (now, now, now))
            self._pending[path] = (first, now, origin)
        self._has_pending.set()

    def _due(self, first: float, last: float) -> float:
        return min(last + self._quiet, first + self._max_wait)

    async def _flush_loop(self) -> None:
        while True:
            await self._has_pending.wait()
            now = time.monotonic()
            next_due = min(self._due(first, last) for first, last, _ in self._pending.values())
            if next_due > now:
                await asyncio.sleep(next_due - now)
                continue
            batch = set()
            grace = now + self._quiet / 2  # events a moment apart (mkdir, then mv into it) go together
            for path, (first, last, origin) in list(self._pending.items()):
                if self._due(first, last) > grace:
                    continue
                if self._still_written(path) and now - origin < 10 * self._max_wait:
                    self._pending[path] = (now, now, origin)  # look again after another quiet period
                    continue
                del self._pending[path]
                batch.add(path)
            if not self._pending:
                self._has_pending.clear()
            if batch:
                try:
                    await self._on_paths(collapse(batch))
                except Exception:  # a failure here must not stop watching; the scan catches up
                    log.exception("could not reconcile %d changed path(s)", len(batch))

    def _still_written(self, path: bytes) -> bool:
        """Modified within the quiet period (a copy that paused is still a copy in progress)."""
        try:
            age = time.time() - os.stat(path).st_mtime
        except OSError:
            return False
        return 0 <= age < self._quiet


def collapse(paths: set[bytes]) -> set[bytes]:
    """Many changed paths in one folder become that folder (one walk instead of many stats)."""
    by_parent: dict[bytes, list[bytes]] = {}
    for path in paths:
        by_parent.setdefault(os.path.dirname(path), []).append(path)
    result = set()
    for parent, children in by_parent.items():
        if len(children) >= COLLAPSE_AT:
            result.add(parent)
        else:
            result.update(children)
    return result
