"""File-system habits: a file replaced atomically (written beside itself, synced, renamed over),
and the folder synced so the rename itself survives a power cut."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def sync_folder(folder: str | os.PathLike) -> None:
    """A rename is durable only once its folder is synced."""
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def replace_atomically(path: str | os.PathLike, data: bytes, mode: int = 0o644) -> Path:
    """``path`` holds ``data`` (or, after a crash, what it held before: never half of it)."""
    path = Path(path)
    folder = path.parent if str(path.parent) else Path(".")
    fd, temporary = tempfile.mkstemp(dir=folder, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.chmod(temporary, mode)
        os.replace(temporary, path)
    except BaseException:
        try:
            os.unlink(temporary)
        except FileNotFoundError:
            pass
        raise
    sync_folder(folder)
    return path
