"""Playing a library track in the page: which file to stream, and whether a browser can play it.

Only a file of the library is ever served, and only while it is still the file that was analyzed
(the same device, inode, size and modification time as the journal holds): a path that is not a
library file, or a library file replaced since (by another file, or a link to one), is not found.
"""

from __future__ import annotations

import os

from cratesense.daemon.journal_read import FileIdentity, JournalReader

# What the browsers the page is tested in (Chromium) and the usual ones play, by decoder name.
PLAYABLE_CODECS = frozenset({"mp3", "mp3float", "flac", "vorbis", "opus", "aac", "pcm_s16le", "pcm_s24le",
                             "pcm_s32le", "pcm_f32le", "pcm_u8"})
MEDIA_TYPES = {".mp3": "audio/mpeg", ".flac": "audio/flac", ".ogg": "audio/ogg", ".oga": "audio/ogg",
               ".opus": "audio/ogg", ".m4a": "audio/mp4", ".mp4": "audio/mp4", ".aac": "audio/aac",
               ".wav": "audio/wav", ".wave": "audio/wav", ".aif": "audio/aiff", ".aiff": "audio/aiff",
               ".aifc": "audio/aiff"}


def playable(codec: str | None) -> bool:
    return codec in PLAYABLE_CODECS


def media_type(path: bytes | str) -> str:
    return MEDIA_TYPES.get(os.path.splitext(os.fsdecode(path))[1].lower(), "application/octet-stream")


def library_file(reader: JournalReader, content_key: str) -> bytes | None:
    """The first file holding ``content_key`` that is still the file that was analyzed, or None."""
    for path, identity in reader.stored_files(content_key):
        try:
            now = FileIdentity.of(os.stat(path))
        except OSError:
            continue
        if now == identity:
            return path
    return None
