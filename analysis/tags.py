"""Tags a file already carries, read with mutagen from ID3 (MP3, AIFF, WAV), Vorbis comments
(FLAC, Ogg Vorbis, Opus) and MP4 atoms, then normalized.

Real tags are messy: ID3v2.3 frames in Latin-1 that are really UTF-8 ("BjÃ¶rk"), control
characters, megabyte-long comments, "128.00" or "12800" as a BPM, "Am" or "8A" as a key. Every
value here is cleaned or dropped; reading tags never fails an analysis.
"""

from __future__ import annotations

import logging
import math
import os
import re
import unicodedata

import mutagen
import mutagen.id3
import mutagen.mp3
import mutagen.mp4

from cratesense.analysis.keys import parse_key
from cratesense.analysis.constants import BPM_LIMITS, MAX_TEXT_LENGTH
from cratesense.analysis.model import Tags

log = logging.getLogger(__name__)

MAX_CATALOG_NUMBER_LENGTH = 64
MAX_GENRE_LENGTH = 64
BPM_RANGE = BPM_LIMITS  # a tag outside these is not a tempo
_ISRC_RE = re.compile(r"^[A-Z]{2}[A-Z0-9]{3}[0-9]{7}$")
_WHITESPACE_RE = re.compile(r"\s+")


# Field -> the names it goes by, per tag family (compared case-insensitively).
_VORBIS_NAMES = {
    "artist": ("artist",),
    "title": ("title",),
    "album": ("album",),
    "album_artist": ("albumartist", "album artist", "album_artist"),
    "track_number": ("tracknumber",),
    "isrc": ("isrc",),
    "catalog_number": ("catalognumber", "catalog number", "labelno", "catalog #"),
    "bpm": ("bpm", "tempo"),
    "key": ("initialkey", "key"),
    "genre": ("genre",),
}
_ID3_FRAMES = {
    "artist": "TPE1",
    "title": "TIT2",
    "album": "TALB",
    "album_artist": "TPE2",
    "track_number": "TRCK",
    "isrc": "TSRC",
    "bpm": "TBPM",
    "key": "TKEY",
    "genre": "TCON",
}
_ID3_TXXX = {"catalog_number": ("CATALOGNUMBER", "CATALOG NUMBER", "CATALOG #", "LABELNO")}
_MP4_ATOMS = {
    "artist": ("\xa9ART",),
    "title": ("\xa9nam",),
    "album": ("\xa9alb",),
    "album_artist": ("aART",),
    "track_number": ("trkn",),
    "bpm": ("tmpo",),
    "isrc": ("----:com.apple.iTunes:ISRC",),
    "catalog_number": ("----:com.apple.iTunes:CATALOGNUMBER", "----:com.apple.iTunes:LABELNO"),
    "key": ("----:com.apple.iTunes:initialkey", "----:com.apple.iTunes:KEY"),
    "genre": ("\xa9gen",),
}


def read_tags(path: str | os.PathLike) -> Tags:
    """The normalized tags of a file; an empty ``Tags`` when it has none or they are unreadable."""
    try:
        audio = mutagen.File(path)
    except Exception as exc:  # mutagen raises many types on hostile input; none may stop analysis
        log.info("tags of %s unreadable: %s", path, exc)
        return Tags()
    if audio is None:
        return Tags()
    raw = _raw_values(audio.tags) if audio.tags is not None else {}
    duration = _finite_positive(getattr(audio.info, "length", None))
    return Tags(
        artist=clean_text(" / ".join(raw["artist"])) if raw.get("artist") else None,
        title=_first_text(raw.get("title")),
        album=_first_text(raw.get("album")),
        album_artist=_first_text(raw.get("album_artist")),
        track_number=_track_number(raw.get("track_number")),
        duration=round(duration, 3) if duration else None,
        isrc=_isrc(raw.get("isrc")),
        catalog_number=_first_text(raw.get("catalog_number"), MAX_CATALOG_NUMBER_LENGTH),
        bpm=_bpm(raw.get("bpm")),
        key=_key(raw.get("key")),
        genre=_first_text(raw.get("genre"), MAX_GENRE_LENGTH),
        exact_length=duration if duration and _header_states_length(audio) else None,
    )


def _raw_values(tags) -> dict[str, list]:
    """Field -> list of raw values (str, bytes, int or tuples), whatever the tag family."""
    values: dict[str, list] = {}
    if isinstance(tags, mutagen.id3.ID3):
        for field, frame_id in _ID3_FRAMES.items():
            frame = tags.get(frame_id)
            if frame is not None and getattr(frame, "text", None):
                values[field] = [str(text) for text in frame.text]
        for field, descriptions in _ID3_TXXX.items():
            for frame in tags.getall("TXXX"):
                if frame.desc.upper() in descriptions and frame.text:
                    values.setdefault(field, []).extend(str(text) for text in frame.text)
        return values
    if isinstance(tags, mutagen.mp4.MP4Tags):
        for field, atoms in _MP4_ATOMS.items():
            for atom in atoms:
                if atom in tags:
                    values.setdefault(field, []).extend(tags[atom])
        return values
    # Vorbis comments, APEv2 and other key=value families.
    try:
        items = list(tags.items())
    except Exception:
        return values
    by_name: dict[str, list] = {}
    for name, value in items:
        by_name.setdefault(str(name).lower(), []).extend(value if isinstance(value, list) else [value])
    for field, names in _VORBIS_NAMES.items():
        for name in names:
            if name in by_name:
                values.setdefault(field, []).extend(by_name[name])
    return values


def _header_states_length(audio) -> bool:
    if isinstance(audio, mutagen.mp3.MP3):
        # Without a Xing/Info/VBRI header the length is only estimated from the bitrate.
        return audio.info is not None and audio.info.bitrate_mode != mutagen.mp3.BitrateMode.UNKNOWN
    return type(audio).__name__ in {"FLAC", "WAVE", "AIFF", "MP4"}


def clean_text(value, max_length: int = MAX_TEXT_LENGTH) -> str | None:
    """Printable, NFC-normalized, single-line text, or None when nothing meaningful is left."""
    if value is None:
        return None
    if isinstance(value, bytes):
        try:
            value = value.decode("utf-8")
        except UnicodeDecodeError:
            value = value.decode("latin-1")
    text = _repair_mojibake(str(value))
    text = "".join(
        " " if unicodedata.category(char) in ("Cc", "Zl", "Zp") else char
        for char in text
        if char not in "\ufeff\ufffe"
    )
    text = _WHITESPACE_RE.sub(" ", unicodedata.normalize("NFC", text)).strip()
    if not text:
        return None
    return text[:max_length].rstrip()


def _repair_mojibake(text: str) -> str:
    """UTF-8 bytes that a tagger stored as Latin-1 ("BjÃ¶rk" -> "Björk")."""
    if not any("\x80" <= char <= "\xff" for char in text):
        return text
    try:
        return text.encode("latin-1").decode("utf-8")
    except (UnicodeEncodeError, UnicodeDecodeError):
        return text


def _first_text(values, max_length: int = MAX_TEXT_LENGTH) -> str | None:
    for value in values or ():
        text = clean_text(value, max_length)
        if text:
            return text
    return None


def _track_number(values) -> int | None:
    for value in values or ():
        if isinstance(value, tuple):  # MP4 trkn: (number, total)
            value = value[0] if value else None
        match = re.match(r"^\s*(\d{1,4})", str(value)) if value is not None else None
        if match and 0 < int(match.group(1)) < 10000:
            return int(match.group(1))
    return None


def _isrc(values) -> str | None:
    for value in values or ():
        text = clean_text(value, 64)
        if text:
            candidate = re.sub(r"[\s-]", "", text).upper()
            if _ISRC_RE.match(candidate):
                return candidate
    return None


def _bpm(values) -> float | None:
    for value in values or ():
        text = clean_text(value, 32) if not isinstance(value, (int, float)) else str(value)
        if not text:
            continue
        try:
            bpm = float(text.replace(",", "."))
        except ValueError:
            continue
        if math.isfinite(bpm) and BPM_RANGE[0] <= bpm <= BPM_RANGE[1]:
            return round(bpm, 1)
    return None


def _key(values) -> str | None:
    for value in values or ():
        text = clean_text(value, 32)
        key = parse_key(text) if text else None
        if key:
            return key.name
    return None


def _finite_positive(value) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) and number > 0 else None
