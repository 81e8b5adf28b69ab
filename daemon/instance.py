"""One agent per user: an exclusive ``flock`` on a lock file in the data folder.

The kernel drops the lock when the holder dies, however it dies (``kill -9`` included), so a
stale lock file never keeps the next agent from starting. The file holds the holder's pid, for
the message a second agent prints.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from cratesense.errors import AlreadyRunningError, DataFolderError

__all__ = ["InstanceLock", "AlreadyRunningError", "DataFolderError"]


class InstanceLock:
    """Held from ``acquire`` until ``release`` (or the process ends). Use as a context manager."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self._fd: int | None = None

    def acquire(self) -> InstanceLock:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:  # the first write to the data folder: say what is wrong with it
            raise DataFolderError(
                f"cannot write in the data folder {self.path.parent}: {exc.strerror} "
                "(a read-only file system, or a folder owned by another user?)"
            ) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 32).decode("ascii", "replace").strip() or "unknown"
            os.close(fd)
            raise AlreadyRunningError(f"the CrateSense agent is already running (pid {holder})") from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing drops the flock
            self._fd = None

    def __enter__(self) -> InstanceLock:
        return self.acquire()

    def __exit__(self, *exc_info) -> None:
        self.release()
