"""Live watching of the music folders: watchdog events, debounced, handed to the library.

Events are hints (the periodic scan stays the truth). Each path waits for a quiet period after
its last event, and a file is handed over only once its mtime is older than that quiet period,
so a file being copied is looked at when complete; a maximum wait bounds how long a path that
keeps changing can be held back. Many paths in one folder collapse into that folder.

inotify cannot serve network file systems and silently drops sub-folder watches beyond
``fs.inotify.max_user_watches`` (see shared/platform-notes.md), so each folder is watched by
inotify only when its file system is local and the folder count fits the limit; otherwise it is
polled, and ``modes`` says why.

A drive unmounted (or mounted) under a music folder sends no event for its files, and the old
watch dies with the mount, so each folder's identity (device, inode) is checked every few
seconds: when it changes, the folder is watched anew and the library reconciled (where a
folder gone empty keeps its tracks).
"""

from __future__ import annotations

import asyncio
import logging
import os
import stat
import time
from collections.abc import Callable, Iterable
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
from watchdog.observers.api import BaseObserver
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
    """Watches ``folders`` and hands settled batches of changed paths to ``on_paths``, and a
    folder that changed under us to ``on_folders_changed``. Both only post the news (to the
    library loop) and return at once: the watcher never waits for a scan."""

    def __init__(
        self,
        folders: Iterable[str | bytes],
        on_paths: Callable[[set[bytes]], None],
        *,
        configured: str = "auto",
        quiet_seconds: float = 2.0,
        max_wait_seconds: float = 60.0,
        poll_interval_seconds: float = 60.0,
        on_folders_changed: Callable[[], None] | None = None,
        folder_check_seconds: float = 5.0,
    ) -> None:
        self.folders = [os.fsdecode(folder) for folder in folders]
        self._roots = {os.fsencode(folder) for folder in self.folders}
        self._on_paths = on_paths
        self._on_folders_changed = on_folders_changed
        self._configured = configured
        self._quiet = quiet_seconds
        self._max_wait = max_wait_seconds
        self._poll_interval = poll_interval_seconds
        self._folder_check = folder_check_seconds
        self._pending: dict[bytes, tuple[float, float, float]] = {}  # path -> (first, last, origin)
        self._has_pending = asyncio.Event()
        self._observers: dict[str, BaseObserver] = {}  # folder -> its own observer (re-watched on its own)
        self._identities: dict[str, tuple[int, int] | None] = {}  # folder -> (device, inode) when watched
        self._recheck: set[str] = set()  # folders an event says were deleted or replaced
        self._folder_count = 0
        self._watch_limit: int | None = None
        self._tasks: list[asyncio.Task] = []
        self._handler: _Handler | None = None
        self.modes: dict[str, WatchMode] = {}
        self.events_seen = 0
        self.overflows = 0
        self._alarm: _OverflowAlarm | None = None

    @property
    def pending(self) -> int:
        """Changed paths held until they are quiet (not yet handed to the library)."""
        return len(self._pending)

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        existing = [folder for folder in self.folders if os.path.isdir(folder)]
        try:
            self._watch_limit = int(MAX_USER_WATCHES.read_text())
        except (OSError, ValueError):
            self._watch_limit = None
        if self._watch_limit is not None:
            self._folder_count = await asyncio.to_thread(count_folders, existing)
        self._handler = _Handler(loop, self._note)
        self._alarm = _OverflowAlarm(loop, self._overflowed)
        logging.getLogger(_OverflowAlarm.LOGGER).addHandler(self._alarm)
        for folder in self.folders:
            await asyncio.to_thread(self._watch, folder)
        self._tasks = [asyncio.create_task(self._flush_loop(), name="watcher-flush"),
                       asyncio.create_task(self._check_folders_loop(), name="watcher-folders")]

    def _watch(self, folder: str) -> None:
        """(Re)start ``folder``'s own observer, in the mode its file system calls for now."""
        old = self._observers.pop(folder, None)
        if old is not None:
            old.stop()
            old.join(timeout=2)
        self._identities[folder] = folder_identity(folder)
        if self._identities[folder] is None:
            self.modes[folder] = WatchMode("none", "the folder does not exist; watched as soon as it does")
        else:
            try:
                mountinfo = Path("/proc/self/mountinfo").read_text()
            except OSError:
                mountinfo = ""
            fs_types = {folder: file_system_type(os.path.realpath(folder), mountinfo)}
            self.modes[folder] = choose_modes([folder], self._configured, fs_types, self._folder_count,
                                              self._watch_limit)[folder]
            self._observe(folder, self.modes[folder].mode)
        mode = self.modes[folder]
        log.info("watching %s: %s%s", folder, mode.mode, f" ({mode.reason})" if mode.reason else "")

    def _observe(self, folder: str, mode: str) -> None:
        observer = InotifyObserver() if mode == "inotify" else PollingObserver(timeout=self._poll_interval)
        try:
            assert self._handler is not None, "start() makes the handler before any folder is watched"
            observer.schedule(self._handler, folder, recursive=True, event_filter=_EVENTS)
            observer.start()
        except OSError as exc:  # ENOSPC/EMFILE: out of inotify watches or instances
            observer.stop()
            if mode != "inotify":
                raise
            reason = f"inotify failed ({exc.strerror or exc}); raise fs.inotify.max_user_watches / max_user_instances"
            self.modes[folder] = WatchMode("polling", reason)
            self._observe(folder, "polling")
            return
        self._observers[folder] = observer

    async def _check_folders_loop(self) -> None:
        """A folder that is now another folder (a drive mounted or unmounted there, deleted and
        made again) or that came into being: watch it anew and have the library reconciled."""
        while True:
            await asyncio.sleep(self._folder_check)
            changed = []
            for folder in self.folders:
                # in a thread: a stat on a dead network mount may hang
                identity = await asyncio.to_thread(folder_identity, folder)
                if identity != self._identities[folder] or folder in self._recheck:
                    self._recheck.discard(folder)
                    await asyncio.to_thread(self._watch, folder)
                    changed.append(folder)
            if changed:
                log.warning("music folder changed under us (a drive mounted or unmounted?): %s", ", ".join(changed))
                if self._on_folders_changed is not None:
                    self._on_folders_changed()

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                pass
        self._tasks = []
        if self._alarm is not None:
            logging.getLogger(_OverflowAlarm.LOGGER).removeHandler(self._alarm)
            self._alarm = None
        observers = list(self._observers.values())
        for observer in observers:
            observer.stop()
        def join_all() -> None:
            for observer in observers:
                observer.join(timeout=2)

        await asyncio.to_thread(join_all)
        self._observers = {}

    def _overflowed(self) -> None:
        """Events were lost: every folder inotify watches is reconciled as a whole."""
        self.overflows += 1
        live = [folder for folder, mode in self.modes.items() if mode.mode == "inotify"]
        log.warning("the inotify event queue overflowed (a burst of changes): rescanning %s", ", ".join(live))
        self._hold([os.fsencode(folder) for folder in live])

    def _note(self, paths: list[bytes]) -> None:
        """An event's paths (on the loop's thread)."""
        self.events_seen += 1
        for root in self._roots.intersection(paths):
            # the folder itself deleted (its watch is dead; a new folder there may even get the
            # same inode): the folder check decides, and a full scan, where a missing folder
            # keeps its tracks
            self._recheck.add(os.fsdecode(root))
        self._hold([path for path in paths if path not in self._roots])

    def _hold(self, paths: list[bytes]) -> None:
        """Hand ``paths`` over once quiet."""
        now = time.monotonic()
        for path in paths:
            first, _, origin = self._pending.get(path, (now, now, now))
            self._pending[path] = (first, now, origin)
        if paths:
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
            grace = now + self._quiet / 2  # events a moment apart (mkdir, then mv into it) go together
            due = [path for path, (first, last, _) in self._pending.items() if self._due(first, last) <= grace]
            # in a thread: a stat on a dead network mount may hang
            still_written = await asyncio.to_thread(lambda: {path for path in due if self._still_written(path)})
            now = time.monotonic()
            batch = set()
            for path in due:
                if path not in self._pending:
                    continue
                first, last, origin = self._pending[path]
                if self._due(first, last) > grace:
                    continue  # a new event came in while we looked
                if path in still_written and now - origin < 10 * self._max_wait:
                    self._pending[path] = (now, now, origin)  # look again after another quiet period
                    continue
                del self._pending[path]
                batch.add(path)
            if not self._pending:
                self._has_pending.clear()
            if batch:
                try:
                    self._on_paths(collapse(batch))
                except Exception:  # a failure here must not stop watching; the scan catches up
                    log.exception("could not hand over %d changed path(s)", len(batch))

    def _still_written(self, path: bytes) -> bool:
        """Modified within the quiet period (a copy that paused is still a copy in progress)."""
        try:
            age = time.time() - os.stat(path).st_mtime
        except OSError:
            return False
        return 0 <= age < self._quiet


def folder_identity(folder: str) -> tuple[int, int] | None:
    """(device, inode) of ``folder``, None when it is not a folder: changes when a drive is
    mounted or unmounted there."""
    try:
        info = os.stat(folder)
    except OSError:
        return None
    return (info.st_dev, info.st_ino) if stat.S_ISDIR(info.st_mode) else None


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
