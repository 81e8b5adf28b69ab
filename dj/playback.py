"""Playing a library track in the page: the file to stream, opened and checked, its media type,
and the part of it a Range request asks for.

Only a file of the library is ever served, and only while it is still the file that was
analyzed: the file is opened first and its identity (device, inode, size, modification time)
read from the open file, so what is streamed is exactly what was checked. A library file
replaced since (by another file, or by a link to one) is not found, however quick the swap. A
track is named by its content key only: no path from a request ever reaches the disk.
"""

from __future__ import annotations

import os
import re
import stat
from dataclasses import dataclass

from cratesense.analysis.codecs import codec_name
from cratesense.daemon.journal_read import FileIdentity, JournalReader

# FFmpeg's container (demuxer) name -> the media type browsers know it by
MEDIA_TYPES = {
    "mp3": "audio/mpeg", "flac": "audio/flac", "ogg": "audio/ogg", "wav": "audio/wav", "aiff": "audio/aiff",
    "mov,mp4,m4a,3gp,3g2,mj2": "audio/mp4", "aac": "audio/aac", "asf": "audio/x-ms-wma", "wv": "audio/x-wavpack",
    "ape": "audio/x-ape", "matroska,webm": "audio/webm", "caf": "audio/x-caf",
}
# What today's browsers play (Chromium, Firefox, Safari all play these): the page still asks its
# own browser (canPlayType) before it offers to play.
PLAYABLE = frozenset({"MP3", "AAC", "FLAC", "Vorbis", "Opus", "WAV"})
_RANGE = re.compile(r"bytes=(\d*)-(\d*)")


def media_type(container: str | None, codec: str | None) -> str:
    """The media type of a file from what FFmpeg read it as (an Opus in Ogg is ``audio/ogg``)."""
    found = MEDIA_TYPES.get(container or "", "application/octet-stream")
    name = codec_name(codec)
    return f"{found}; codecs=opus" if found == "audio/ogg" and name == "Opus" else found


def playable(codec: str | None) -> bool:
    return codec_name(codec) in PLAYABLE


@dataclass
class Playable:
    """A library file opened for the preview: read it with ``os.pread`` on ``fd``, then ``close``."""

    fd: int
    size: int
    media_type: str

    def close(self) -> None:
        os.close(self.fd)


def open_library_file(reader: JournalReader, content_key: str) -> Playable | None:
    """The first file holding ``content_key`` that is still the regular file that was analyzed,
    opened; None when there is none."""
    track = reader.track(content_key)
    if track is None:
        return None
    for path, identity in reader.stored_files(content_key):
        try:  # never blocks: a FIFO put in a file's place opens at once, and is refused below
            fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError:
            continue
        found = os.fstat(fd)
        if stat.S_ISREG(found.st_mode) and FileIdentity.of(found) == identity:
            return Playable(fd, found.st_size, media_type(track.audio.container, track.audio.codec))
        os.close(fd)
    return None


class Unsatisfiable(ValueError):
    """A range that starts beyond the file's end (answered 416)."""


def byte_range(header: str | None, size: int) -> tuple[int, int] | None:
    """The first and last byte a ``Range`` header asks for, or None for the whole file (no
    header, or one this server ignores, as HTTP allows: another unit, several ranges, or one it
    cannot read). Raises ``Unsatisfiable`` for a range that starts at or beyond the end."""
    match = _RANGE.fullmatch((header or "").strip())
    if match is None or match.group(1) == match.group(2) == "":
        return None
    first, last = match.groups()
    if first == "":  # the last N bytes
        count = int(last)
        if count == 0:
            raise Unsatisfiable(header)
        return max(0, size - count), size - 1
    start = int(first)
    end = min(int(last), size - 1) if last else size - 1
    if start >= size:
        raise Unsatisfiable(header)
    if end < start:
        return None
    return start, end
