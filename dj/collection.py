"""The DJ's collection: the tracks on disk, as the journal's library view knows them.

Read-only: it opens the journal for reading only, so it works with the agent stopped, never
migrates a journal under a running agent, and can never change it. One ``Track`` per recording
on disk (per content key; ``copies`` counts the files that hold it), with the catalog's
consensus filling what the file's own tags and our analysis left empty (``filled`` names those
fields, so every view can mark them).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import Any
from dataclasses import dataclass, field
from pathlib import Path

import msgspec

from cratesense.analysis.constants import BPM_LIMITS, GENRE_WORDS, MOOD_WORDS, TAG_WORDS, key_uncertain
from cratesense.analysis.keys import Key, parse_key
from cratesense.analysis.model import Cue, Phrase, shown_title
from cratesense.daemon.journal_read import ORDERS, JournalReader, LibraryEntry, LibraryQuery
from cratesense.dj.harmony import compatible_codes, parse_user_key
from cratesense.errors import QueryError

SORTS = tuple(ORDERS)  # what a library can be sorted by


@dataclass(frozen=True)
class Track:
    content_key: str
    path: str  # one file that holds it (the first by path); ``copies`` says how many do
    copies: int
    artist: str | None
    title: str | None
    album: str | None
    isrc: str | None
    catalog_number: str | None
    duration: float | None
    bpm: float | None
    key: Key | None
    loudness: float | None
    replaygain: float | None
    true_peak: float | None
    beat_offset: float | None
    downbeat_offset: float | None
    beats_per_bar: int | None
    codec: str | None
    sample_rate: int | None
    channels: int | None
    added_at: float | None
    filled: frozenset[str] = field(default_factory=frozenset)  # fields the catalog's consensus filled
    backed_by: int | None = None  # how many DJs the catalog's consensus on it comes from
    catalog_key: Key | None = None  # the consensus's key, where it disagrees with the file's own analysis
    catalog_bpm: float | None = None  # the consensus's tempo, where it disagrees with the file's own analysis
    energy: int | None = None  # 1-10 (analysis/energy.py)
    phrases: tuple[Phrase, ...] = ()  # on the bar grid (analysis/phrases.py); none without a grid
    cues: tuple[Cue, ...] = ()  # hot and memory cues on the grid (analysis/cues.py)
    key_strength: float | None = None  # how sure our analysis is of its key (None: the catalog's key, or none)
    tag_genre: str | None = None  # the genre the file's own tags say
    genres: tuple[str, ...] = ()  # the sound model's words (analysis/sound_tags.py), strongest first
    moods: tuple[str, ...] = ()
    sound_tags: tuple[str, ...] = ()

    @property
    def key_uncertain(self) -> bool:
        """Our key is a guess the DJ should check by ear before mixing or tagging by it."""
        return self.key is not None and key_uncertain(self.key_strength)

    @property
    def shown_title(self) -> str:
        """The title every face shows (the CLI, the page, exports): the tag's, or the file's name
        without its extension when the file has no title tag (whether or not it has an artist)."""
        return shown_title(self.title, self.path)

    @property
    def label(self) -> str:
        """"Artist - Title" (the title as ``shown_title`` says), or the title alone without an artist."""
        return f"{self.artist} - {self.shown_title}" if self.artist else self.shown_title

    @property
    def camelot(self) -> str | None:
        return self.key.camelot if self.key else None


@dataclass(frozen=True)
class Filters:
    bpm: tuple[float, float] | None = None
    key: Key | None = None
    compatible_with: Key | None = None
    search: str | None = None
    sort: str = "artist"
    limit: int | None = None
    genre: str | None = None
    mood: str | None = None
    tag: str | None = None


def parse_bpm_range(text: str) -> tuple[float, float]:
    """"120-128" (or one tempo, "124", for 123.5-124.5); ValueError with the reason otherwise."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(?:-\s*(\d+(?:\.\d+)?)\s*)?", text or "")
    if not match:
        raise ValueError(f"expected a BPM range such as 120-128, got {text!r}")
    low = float(match.group(1))
    high = float(match.group(2)) if match.group(2) else low
    if match.group(2) is None:
        low, high = low - 0.5, high + 0.5
    if low > high:
        raise ValueError(f"the BPM range {text!r} runs backwards (write the lower tempo first: "
                         f"{match.group(2)}-{match.group(1)})")
    if not (BPM_LIMITS[0] - 0.5 <= low and high <= BPM_LIMITS[1] + 0.5):
        raise ValueError(f"the BPM range {text!r} is outside {BPM_LIMITS[0]:g}-{BPM_LIMITS[1]:g}")
    return low, high


def parse_filters(values: Mapping[str, Any]) -> Filters:
    """Filters from strings (CLI flags, query parameters); QueryError names the bad one."""
    try:
        bpm = parse_bpm_range(values["bpm"]) if values.get("bpm") else None
        key = parse_user_key(values["key"]) if values.get("key") else None
        compatible = parse_user_key(values["compatible_with"]) if values.get("compatible_with") else None
        sort = values.get("sort") or "artist"
        if sort not in SORTS:
            raise ValueError(f"cannot sort by {sort!r}; choose one of {', '.join(SORTS)}")
        limit = values.get("limit")
        limit = int(limit) if limit not in (None, "") else None
        if limit is not None and limit < 1:
            raise ValueError("the limit must be a positive number")
        genre = _word(values.get("genre"), GENRE_WORDS, "genre")
        mood = _word(values.get("mood"), MOOD_WORDS, "mood")
        tag = _word(values.get("tag"), TAG_WORDS, "tag")
    except ValueError as exc:
        raise QueryError(str(exc)) from None
    search = (values.get("search") or "").strip() or None
    return Filters(bpm, key, compatible, search, sort, limit, genre, mood, tag)


def _word(given: Any, vocabulary: tuple[str, ...], kind: str) -> str | None:
    """A word of the sound model's vocabulary (any case; "hip hop" for "hip-hop"), or ValueError
    naming the words there are."""
    if given in (None, ""):
        return None
    text = " ".join(str(given).lower().split())
    for word in vocabulary:
        if text in (word, word.replace("-", " ")):
            return word
    raise ValueError(f"{given!r} is not a {kind} CrateSense knows; choose one of: {', '.join(vocabulary)}")


class Collection:
    """The DJ's view of the journal's read model (``daemon/journal_read.py``): tracks as
    ``Track``, filters as the library queries they mean. Use as a context manager."""

    def __init__(self, reader: JournalReader) -> None:
        self.reader = reader

    @classmethod
    def open(cls, path: Path) -> Collection:
        return cls(JournalReader(path))

    def __enter__(self) -> Collection:
        return self

    def __exit__(self, *exc_info) -> None:
        self.reader.close()

    # --- finding tracks -----------------------------------------------------------------

    def tracks(self, filters: Filters | None = None, *, offset: int = 0) -> list[Track]:
        """The tracks ``filters`` select, in their order."""
        filters = filters or Filters()
        return [_track(entry) for entry in self.reader.library(_query(filters), limit=filters.limit, offset=offset)]

    def count(self, filters: Filters | None = None) -> int:
        return self.reader.library_count(_query(filters or Filters()))

    def track(self, content_key: str) -> Track | None:
        entry = self.reader.entries([content_key]).get(content_key)
        return _track(entry) if entry else None

    def find(self, spec: str) -> Track:
        """The one track ``spec`` names: a file's path, or a text that matches one track (its
        artist, title, album or file name). QueryError when it names none or several."""
        if os.path.exists(spec) or os.path.isabs(spec):
            key = self.reader.key_of_file(os.path.abspath(spec))
            track = self.track(key) if key else None
            if track is None:
                raise QueryError(f"{spec} is not an analyzed track of the library (is it in a music folder?)")
            return track
        found = self.tracks(Filters(search=spec, limit=6))
        if not found:
            raise QueryError(f"no track matches {spec!r}")
        exact = [track for track in found if spec.lower() in (track.label.lower(), (track.title or "").lower())]
        if len(found) == 1 or len(exact) == 1:
            return (exact or found)[0]
        names = "; ".join(track.label for track in found[:5])
        raise QueryError(f"{spec!r} matches {'more than 5' if len(found) > 5 else len(found)} tracks ({names}): "
                         "say more, or give the file's path")

    def files(self, content_key: str) -> list[tuple[str, int]]:
        """(path, size) of every file on disk with this content."""
        return self.reader.files_of(content_key)


def _query(filters: Filters) -> LibraryQuery:
    camelots: tuple[str, ...] | None = None
    if filters.key is not None:
        camelots = (filters.key.camelot,)
    if filters.compatible_with is not None:
        compatible = tuple(compatible_codes(filters.compatible_with.camelot))
        camelots = compatible if camelots is None else tuple(code for code in camelots if code in compatible)
    return LibraryQuery(bpm=filters.bpm, camelots=camelots, search=filters.search, order=filters.sort,
                        genre=filters.genre, mood=filters.mood, tag=filters.tag)


def _track(entry: LibraryEntry) -> Track:
    return Track(
        content_key=entry.content_key, path=entry.path, copies=entry.copies, artist=entry.artist, title=entry.title,
        album=entry.album, isrc=entry.isrc, catalog_number=entry.catalog_number, duration=entry.duration,
        bpm=entry.bpm, key=parse_key(entry.key) if entry.key else None, loudness=entry.loudness,
        replaygain=entry.replaygain, true_peak=entry.true_peak, beat_offset=entry.beat_offset,
        downbeat_offset=entry.downbeat_offset, beats_per_bar=entry.beats_per_bar, codec=entry.codec,
        sample_rate=entry.sample_rate, channels=entry.channels, added_at=entry.added_at,
        filled=frozenset((entry.filled or "").split(",")) - {""}, backed_by=entry.backed_by,
        catalog_key=parse_key(entry.catalog_camelot) if entry.catalog_camelot else None, catalog_bpm=entry.catalog_bpm,
        energy=entry.energy,
        phrases=_PHRASES.decode(entry.phrases) if entry.phrases else (),
        cues=_CUES.decode(entry.cues) if entry.cues else (),
        key_strength=entry.key_strength,
        tag_genre=entry.tag_genre, genres=_split(entry.genres), moods=_split(entry.moods),
        sound_tags=_split(entry.sound_tags),
    )


_PHRASES = msgspec.json.Decoder(tuple[Phrase, ...])
_CUES = msgspec.json.Decoder(tuple[Cue, ...])


def _split(words: str | None) -> tuple[str, ...]:
    return tuple(words.split(",")) if words else ()
