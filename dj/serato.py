"""Serato's own tags, as Serato DJ writes them (Holzhaus' serato-tags documents the format; read
back in the tests by serato-tools):

* ``Serato Markers2``: two bytes ``01 01``, then base64 (no padding, Serato's way: a trailing
  ``=`` written as ``A``; a line feed after every 72 characters) of ``01 01`` + entries + a NUL,
  padded with NULs to at least 470 bytes. An entry is its name (NUL-terminated), a big-endian
  32-bit length and its data: ``COLOR`` (the track's colour, ``00`` + RGB), ``CUE`` (``00``,
  slot, position in ms as 32 bits, ``00``, RGB, ``00 00``, a NUL-terminated UTF-8 name),
  ``BPMLOCK`` (one byte).
* ``Serato BeatGrid``: ``01 00``, the number of markers (32 bits), each marker's position in
  seconds (a float) followed by the beats to the next marker (32 bits) or, for the last, the
  tempo (a float), then one footer byte. One tempo, two markers: on the first bar line and on
  the last (Serato reads one marker as well; Debian's Mixxx 2.3 fills a Serato grid's beats only
  from the start of the track to its last marker, so the last marker sits on the last bar).

MP3, AIFF and WAV keep them in ID3 ``GEOB`` frames of those names; FLAC in Vorbis comments
``SERATO_MARKERS_V2`` and ``SERATO_BEATGRID``, whose base64 wraps ``application/octet-stream``,
a NUL, an empty file name, the tag's name and the data. (MP4 wants a second, fixed-length copy
of the first five cues in another field, and Ogg Vorbis a format of its own: neither is written.)

Serato has no memory cues: only the hot cues go in, in their slots.
"""

from __future__ import annotations

import base64
import struct
from collections.abc import Iterable
from dataclasses import dataclass

MARKERS = "Serato Markers2"
BEATGRID = "Serato BeatGrid"
VORBIS_FIELDS = {MARKERS: "SERATO_MARKERS_V2", BEATGRID: "SERATO_BEATGRID"}
_VERSION = b"\x01\x01"
_MIN_LENGTH = 470
_NO_COLOUR = b"\xff\xff\xff"


@dataclass(frozen=True)
class SeratoCue:
    slot: int  # 0-7
    position_ms: int
    colour: str  # "#RRGGBB"
    name: str


def _entry(name: str, data: bytes) -> bytes:
    return name.encode("ascii") + b"\x00" + struct.pack(">I", len(data)) + data


def _rgb(colour: str) -> bytes:
    return bytes.fromhex(colour.lstrip("#"))


def markers2(cues: Iterable[SeratoCue], *, bpm_lock: bool) -> bytes:
    """The ``Serato Markers2`` data for these cues."""
    payload = _VERSION + _entry("COLOR", b"\x00" + _NO_COLOUR)
    for cue in sorted(cues, key=lambda cue: cue.slot):
        payload += _entry("CUE", struct.pack(">cBIc3s2s", b"\x00", cue.slot, cue.position_ms, b"\x00", _rgb(cue.colour),
                                             b"\x00\x00") + cue.name.encode("utf-8") + b"\x00")
    payload += _entry("BPMLOCK", b"\x01" if bpm_lock else b"\x00") + b"\x00"
    encoded = base64.b64encode(payload).rstrip(b"=")
    lines = b"\n".join(encoded[i : i + 72] for i in range(0, len(encoded), 72))
    return (_VERSION + lines).ljust(_MIN_LENGTH, b"\x00")


def beatgrid(first_bar: float, last_bar: float, bpm: float) -> bytes:
    """The ``Serato BeatGrid`` data: a marker on the first bar line counting the beats to the
    terminal marker on the last bar line, which carries the tempo (one terminal marker alone when
    the two are one)."""
    beats = round((last_bar - first_bar) * bpm / 60.0)
    if beats <= 0:
        return b"\x01\x00" + struct.pack(">I", 1) + struct.pack(">ff", first_bar, bpm) + b"\x00"
    return (b"\x01\x00" + struct.pack(">I", 2) + struct.pack(">fI", first_bar, beats)
            + struct.pack(">ff", last_bar, bpm) + b"\x00")


def read_cues(data: bytes) -> list[SeratoCue]:
    """The cues of a ``Serato Markers2`` tag (to tell Serato's own from ours); ValueError when
    it cannot be read."""
    if data[:2] != _VERSION:
        raise ValueError("not a Serato Markers2 tag")
    text = data[2:].split(b"\x00", 1)[0].replace(b"\n", b"")
    if len(text) % 4 == 1:
        text = text[:-1]
    payload = base64.b64decode(text + b"=" * (-len(text) % 4))
    if payload[:2] != _VERSION:
        raise ValueError("not a Serato Markers2 payload")
    cues, at = [], 2
    while at < len(payload):
        end = payload.find(b"\x00", at)
        name = payload[at:end].decode("ascii", "replace") if end >= 0 else ""
        if not name:
            break
        (length,) = struct.unpack(">I", payload[end + 1 : end + 5])
        data_start = end + 5
        entry = payload[data_start : data_start + length]
        if name == "CUE":
            _, slot, position, _, rgb, _ = struct.unpack(">cBIc3s2s", entry[:12])
            name_bytes = entry[12:].split(b"\x00", 1)[0]
            cues.append(SeratoCue(slot, position, "#" + rgb.hex().upper(), name_bytes.decode("utf-8", "replace")))
        at = data_start + length
    return cues


# Serato ends a FLAC's BeatGrid comment with one base64 character more than its data needs, and
# readers drop the last character before decoding (Mixxx's SeratoBeatGrid::parseBase64Encoded):
# without it, they lose the grid's last byte and reject the whole grid.
_EXTRA_CHARACTER = {BEATGRID: b"A"}


def enveloped(name: str, data: bytes) -> str:
    """A FLAC Vorbis comment's value for Serato's tag ``name``."""
    wrapped = b"application/octet-stream\x00\x00" + name.encode("ascii") + b"\x00" + data
    encoded = base64.b64encode(wrapped).rstrip(b"=")
    lines = b"\n".join(encoded[i : i + 72] for i in range(0, len(encoded), 72))
    return (lines + _EXTRA_CHARACTER.get(name, b"")).decode("ascii")


def unenveloped(value: str) -> tuple[str, bytes]:
    """(tag name, data) of a FLAC Vorbis comment written by Serato (or ``enveloped``)."""
    text = value.replace("\n", "").encode("ascii")
    name, data = _decoded(text)
    if name in _EXTRA_CHARACTER:  # its last character is not data
        name, data = _decoded(text[:-1])
    return name, data


def _decoded(text: bytes) -> tuple[str, bytes]:
    if len(text) % 4 == 1:
        text = text[:-1]
    raw = base64.b64decode(text + b"=" * (-len(text) % 4))
    mime, _, rest = raw.partition(b"\x00")
    if mime != b"application/octet-stream":
        raise ValueError("not a Serato tag")
    _, _, rest = rest.partition(b"\x00")  # the empty file name
    name, _, data = rest.partition(b"\x00")
    return name.decode("ascii", "replace"), data
