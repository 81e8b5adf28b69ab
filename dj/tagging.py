"""Writing BPM, key and ReplayGain into the user's files, and Serato's own cue and grid tags when
asked: opt-in, standard fields (or Serato's own) only, atomic, never touching the audio.

Fields (shared/platform-notes.md, "DJ formats"):

* BPM: ID3 ``TBPM`` (a whole number, as the ID3 standard says), MP4 ``tmpo``, Vorbis ``BPM``.
* key: ID3 ``TKEY`` in its at-most-3-character musical form ("Am", "C#m", "Eb": the standard
  allows nothing else); MP4 ``----:com.apple.iTunes:initialkey`` and Vorbis ``INITIALKEY`` in the
  user's notation (Camelot, Open Key or musical).
* ReplayGain: ID3 ``TXXX:REPLAYGAIN_TRACK_GAIN`` "-6.52 dB" and ``_PEAK`` (6 decimals), the same
  names as Vorbis comments and MP4 freeform atoms; Opus: ``R128_TRACK_GAIN`` (Q7.8, relative to
  -23 LUFS) and no peak (the Opus convention).
* Serato (the ``serato`` field, never written unless asked for): ``Serato Markers2`` (the hot
  cues A-D, named and coloured as in every export, and the BPM lock) and ``Serato BeatGrid`` (one
  marker on a bar line, at our tempo) in MP3, AIFF and WAV (ID3 ``GEOB``) and FLAC (Vorbis
  comments), as Serato writes them (``dj/serato.py``); only into a file holding no Serato data of
  its own (Serato's analysis, the DJ's cues), so nothing a DJ set in Serato is ever overwritten.
* genre and mood (the sound model's best word of each, capitalized: "House", "Calm"): ID3 ``TCON``
  and ``TMOO``, Vorbis ``GENRE`` and ``MOOD``, MP4 ``©gen`` and the freeform
  ``----:com.apple.iTunes:MOOD`` (Picard's). Only where the file has none: a genre or mood the
  user wrote is kept unless they ask (``replace_words``).

Never Mixed In Key's own fields (Vorbis ``KEY``, ``ENERGY``, ``CUEPOINTS``; ID3 GEOB "Key",
"Energy", "CuePoints": base64 JSON there, which plain text would break), never another
program's private frames (Serato's only as above), never the audio: the file is copied beside itself, the copy's tags
are changed by mutagen (which rewrites only tag blocks), synced, and renamed over the
original, so a crash mid-write leaves the old file whole; its permissions are kept.
"""

from __future__ import annotations

import math
import os
import shutil
import tempfile
from dataclasses import dataclass, replace

from cratesense.analysis.constants import TAG_FIELDS  # noqa: F401 (what this module writes)
from cratesense.analysis.constants import key_uncertain
from cratesense.analysis.keys import Key
from cratesense.analysis.cues import HOT_CUES
from cratesense.analysis.model import Cue, TrackAnalysis
from cratesense.dj.harmony import in_notation
from cratesense.errors import ExportError
from cratesense.files import sync_folder

WORD_FIELDS = ("genre", "mood")  # written only where the file has none, unless asked
R128_REFERENCE = -23.0


@dataclass(frozen=True)
class Wanted:
    """The values to write into one file (None: not known, not written)."""

    bpm: float | None = None
    key: Key | None = None
    replaygain_db: float | None = None
    peak_dbtp: float | None = None
    loudness_lufs: float | None = None
    cues: tuple[Cue, ...] = ()  # our cues on our grid (Serato takes the hot cues)
    grid: tuple[float, float, float] | None = None  # (first bar line, last bar line in s, BPM): Serato's beat grid
    left_out: tuple[str, ...] = ()  # what is not written and why ("key: uncertain ..."), said beside the changes
    genre: str | None = None  # a vocabulary word ("hip-hop")
    mood: str | None = None
    replace_words: bool = False  # replace a genre or mood the file already has


@dataclass(frozen=True)
class Change:
    field: str  # the tag's own name: "TBPM", "INITIALKEY", "----:com.apple.iTunes:initialkey", ...
    old: str | None
    new: str
    data: bytes | None = None  # a binary tag's bytes (Serato's GEOB frames); ``new`` then describes them

    def describe(self) -> str:
        return f"{self.field}: {self.old if self.old is not None else '(none)'} -> {self.new}"


def _id3_key(key: Key) -> str:
    name, mode = key.name.split()
    return name + ("m" if mode == "minor" else "")


def _gain(db: float) -> str:
    return f"{db:.2f} dB"


def _peak(dbtp: float) -> str:
    return f"{10 ** (dbtp / 20):.6f}"


def word_text(word: str) -> str:
    """A vocabulary word as a tag shows it: "Hip-Hop", "Easy Listening"."""
    return "-".join(part.capitalize() for part in word.title().split("-"))


def _word_fields(kind: str) -> dict[str, str]:
    return {"id3": {"genre": "TCON", "mood": "TMOO"}, "mp4": {"genre": "\xa9gen", "mood": "----:com.apple.iTunes:MOOD"}}.get(
        kind, {"genre": "GENRE", "mood": "MOOD"})


def _bpm_text(bpm: float, whole: bool) -> str:
    return str(round(bpm)) if whole or abs(bpm - round(bpm)) < 0.05 else f"{bpm:.1f}"


def plan(path: str, wanted: Wanted, fields: tuple[str, ...], notation: str) -> tuple[list[Change], list[str]]:
    """The changes writing ``wanted`` into ``path`` would make (nothing for what is already so),
    and notes on what is left alone and why."""
    import mutagen

    try:
        audio = mutagen.File(path)
    except Exception as exc:
        raise ExportError(f"{path}: its tags cannot be read ({exc})") from None
    if audio is None:
        raise ExportError(f"{path}: not a file whose tags can be written")
    kind = _family(audio)
    desired = _desired(kind, audio, wanted, fields, notation)
    current = _current(kind, audio)
    if not wanted.replace_words:  # the user's own genre and mood stay
        for name in _word_fields(kind).values():
            if current.get(name):
                desired.pop(name, None)
    changes = [Change(name, current.get(name), value) for name, value in desired.items() if current.get(name) != value]
    # what was left out, said for the fields asked for
    notes = [note for note in wanted.left_out if note.split(" ", 1)[0] in fields]
    if "serato" in fields:
        changes += _serato_changes(kind, audio, wanted, notes)
    return changes, notes


def _family(audio) -> str:
    import mutagen.id3
    import mutagen.mp4
    import mutagen.oggopus

    if isinstance(audio, mutagen.mp4.MP4):
        return "mp4"
    if isinstance(audio, mutagen.oggopus.OggOpus):
        return "opus"
    if isinstance(getattr(audio, "tags", None), mutagen.id3.ID3) or type(audio).__name__ in ("MP3", "AIFF", "WAVE"):
        return "id3"
    if hasattr(audio, "tags") and type(audio).__name__ in ("FLAC", "OggVorbis", "OggFLAC", "OggSpeex"):
        return "vorbis"
    raise ExportError(f"{type(audio).__name__} files: writing their tags is not supported")


def _desired(kind: str, audio, wanted: Wanted, fields, notation: str) -> dict[str, str]:
    desired: dict[str, str] = {}
    if "bpm" in fields and wanted.bpm:
        name = {"id3": "TBPM", "mp4": "tmpo"}.get(kind, "BPM")
        desired[name] = _bpm_text(wanted.bpm, whole=kind in ("id3", "mp4"))
    if "key" in fields and wanted.key is not None:
        if kind == "id3":
            desired["TKEY"] = _id3_key(wanted.key)
        elif kind == "mp4":
            desired["----:com.apple.iTunes:initialkey"] = in_notation(wanted.key, notation)
        else:
            desired["INITIALKEY"] = in_notation(wanted.key, notation)
    if "replaygain" in fields:
        if kind == "opus":
            if wanted.loudness_lufs is not None:
                desired["R128_TRACK_GAIN"] = str(round((R128_REFERENCE - wanted.loudness_lufs) * 256))
        elif wanted.replaygain_db is not None:
            prefix = {"id3": "TXXX:", "mp4": "----:com.apple.iTunes:"}.get(kind, "")
            gain, peak = "REPLAYGAIN_TRACK_GAIN", "REPLAYGAIN_TRACK_PEAK"
            if kind == "mp4":
                gain, peak = gain.lower(), peak.lower()
            desired[prefix + gain] = _gain(wanted.replaygain_db)
            if wanted.peak_dbtp is not None:
                desired[prefix + peak] = _peak(wanted.peak_dbtp)
    names = _word_fields(kind)
    for field, word in (("genre", wanted.genre), ("mood", wanted.mood)):
        if field in fields and word:
            desired[names[field]] = word_text(word)
    return desired


def _current(kind: str, audio) -> dict[str, str]:
    tags = audio.tags
    if tags is None:
        return {}
    found: dict[str, str] = {}
    if kind == "id3":
        for frame in tags.values():
            if frame.FrameID in ("TBPM", "TKEY", "TCON", "TMOO") and frame.text:
                found[frame.FrameID] = str(frame.text[0])
            elif frame.FrameID == "TXXX" and frame.text:
                found[f"TXXX:{frame.desc.upper()}"] = str(frame.text[0])
    elif kind == "mp4":
        for name, values in tags.items():
            if values:
                value = values[0]
                found[name] = value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
    else:
        for name, value in tags.items():  # (name, text) pairs, or (name, [texts]) in a dict view
            if isinstance(value, list):
                value = value[0] if value else ""
            found[name.upper()] = str(value)
    return found


# --- Serato's own tags (opt-in: the "serato" field) -------------------------------------------

_OURS = frozenset(name for name, _ in HOT_CUES)


def _serato_changes(kind: str, audio, wanted: Wanted, notes: list[str]) -> list[Change]:
    """Serato's ``Markers2`` (the hot cues, their colours, the BPM lock) and ``BeatGrid``, unless
    the file holds Serato data of its own (Serato has analyzed it, or the DJ set cues there):
    then nothing Serato's is touched, and a note says so."""
    from cratesense.dj import serato

    if kind not in ("id3", "vorbis") or (kind == "vorbis" and type(audio).__name__ != "FLAC"):
        notes.append("Serato's tags are written into MP3, AIFF, WAV and FLAC files only")
        return []
    hot = [serato.SeratoCue(cue.hot, round(1000 * cue.start), cue.colour, cue.name) for cue in wanted.cues
           if cue.hot is not None]
    if not hot or wanted.grid is None:
        notes.append("no cues to give Serato (no bar grid or no phrases)")
        return []
    current = _serato_current(kind, audio)
    foreign = set(current) - {serato.MARKERS, serato.BEATGRID} or (serato.BEATGRID in current and serato.MARKERS not in current)
    if serato.MARKERS in current and not foreign:
        try:
            foreign = any(cue.name not in _OURS for cue in serato.read_cues(current[serato.MARKERS]))
        except ValueError:
            foreign = True
    if foreign:
        notes.append("Serato's own data is in this file (its analysis or the DJ's cues): left as it is")
        return []
    wanted_tags = {serato.MARKERS: serato.markers2(hot, bpm_lock=True), serato.BEATGRID: serato.beatgrid(*wanted.grid)}
    described = {serato.MARKERS: f"{len(hot)} hot cues ({', '.join(f'{cue.name} {cue.position_ms / 1000:.1f} s' for cue in hot)}), "
                                 "BPM lock",
                 serato.BEATGRID: f"{wanted.grid[2]:.2f} BPM, bars from {wanted.grid[0]:.3f} s to {wanted.grid[1]:.3f} s"}
    changes = []
    for name, data in wanted_tags.items():
        if current.get(name) != data:
            field = f"GEOB:{name}" if kind == "id3" else serato.VORBIS_FIELDS[name]
            changes.append(Change(field, "(ours, older)" if name in current else None, described[name], data))
    return changes


def _serato_current(kind: str, audio) -> dict[str, bytes]:
    """Serato's tags in the file, by their names ("Serato Markers2", ...), as data."""
    from cratesense.dj import serato

    tags = audio.tags
    if tags is None:
        return {}
    found: dict[str, bytes] = {}
    if kind == "id3":
        for frame in tags.getall("GEOB"):
            if frame.desc.startswith("Serato"):
                found[frame.desc] = bytes(frame.data)
    else:
        for name, value in tags.items():
            if name.upper().startswith("SERATO_"):
                text = value[0] if isinstance(value, list) else value
                try:
                    tag, data = serato.unenveloped(str(text))
                except ValueError:
                    tag, data = name.upper(), b""
                found[tag] = data
    return found


def write(path: str, changes: list[Change]) -> os.stat_result:
    """Make ``changes`` to ``path`` atomically; the file's new stat. ExportError (the file
    untouched) when it cannot be written."""
    if not changes:
        return os.stat(path)
    folder = os.path.dirname(os.path.abspath(path))
    if not os.access(path, os.W_OK) or not os.access(folder, os.W_OK):
        raise ExportError(f"{path}: cannot write it (read-only file or folder); nothing was changed")
    before = os.stat(path)
    fd, temporary = tempfile.mkstemp(dir=folder, prefix=f".{os.path.basename(path)}.", suffix=".cratesense-tags")
    os.close(fd)
    try:
        shutil.copyfile(path, temporary)
        os.chmod(temporary, before.st_mode & 0o7777)
        if os.geteuid() == 0:
            os.chown(temporary, before.st_uid, before.st_gid)
        _apply(temporary, changes)
        with open(temporary, "rb+") as file:
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException as exc:
        try:
            os.unlink(temporary)
        except FileNotFoundError:
            pass
        if isinstance(exc, OSError):
            raise ExportError(f"{path}: cannot write its tags ({exc.strerror or exc}); nothing was changed") from None
        raise
    sync_folder(folder)
    return os.stat(path)


def _apply(path: str, changes: list[Change]) -> None:
    import mutagen
    import mutagen.id3
    import mutagen.mp4

    audio = mutagen.File(path)
    kind = _family(audio)
    if audio.tags is None:
        audio.add_tags()
    tags = audio.tags
    for change in changes:
        if change.data is not None:  # Serato's own tags
            from cratesense.dj import serato

            if kind == "id3":
                name = change.field[len("GEOB:"):]
                tags.delall(change.field)
                tags.add(mutagen.id3.GEOB(encoding=0, mime="application/octet-stream", filename="", desc=name,
                                          data=change.data))
            else:
                name = next(tag for tag, field in serato.VORBIS_FIELDS.items() if field == change.field)
                for existing in [key for key in tags.keys() if key.upper() == change.field]:
                    del tags[existing]
                tags[change.field] = [serato.enveloped(name, change.data)]
        elif kind == "id3":
            if change.field.startswith("TXXX:"):
                description = change.field[len("TXXX:"):]
                tags.delall(f"TXXX:{description}")
                for existing in [f for f in tags.getall("TXXX") if f.desc.upper() == description]:
                    tags.delall(existing.HashKey)
                tags.add(mutagen.id3.TXXX(encoding=3, desc=description, text=[change.new]))
            else:
                frame = getattr(mutagen.id3, change.field)
                tags.setall(change.field, [frame(encoding=3, text=[change.new])])
        elif kind == "mp4":
            if change.field == "tmpo":
                tags["tmpo"] = [int(change.new)]
            elif change.field == "\xa9gen":
                tags["\xa9gen"] = [change.new]
            else:
                tags[change.field] = [mutagen.mp4.MP4FreeForm(change.new.encode("utf-8"))]
        else:
            for existing in [name for name in tags.keys() if name.upper() == change.field]:
                del tags[existing]
            tags[change.field] = [change.new]
    audio.save()


@dataclass(frozen=True)
class Retagged:
    """What became of one file: the changes (made, or only planned), and after a write the
    file's new identity and content key (the journal relinks it: no re-analysis)."""

    path: str
    changes: list[Change]
    identity: tuple[int, int, int, int] | None = None  # (device, inode, size, mtime_ns)
    content_key: str | None = None
    error: str | None = None
    notes: tuple[str, ...] = ()  # what was left alone, and why


def retag(path: str, wanted: Wanted, fields: tuple[str, ...], notation: str, *, dry_run: bool = False) -> Retagged:
    """Plan, and unless ``dry_run`` write, ``wanted`` into ``path``; errors become ``error``."""
    from cratesense.daemon.scan import content_key

    try:
        changes, notes = plan(path, wanted, fields, notation)
        if dry_run or not changes:
            return Retagged(path, changes, notes=tuple(notes))
        stat = write(path, changes)
        return Retagged(path, changes, (stat.st_dev, stat.st_ino, stat.st_size, stat.st_mtime_ns),
                        content_key(path, stat.st_size), notes=tuple(notes))
    except ExportError as exc:
        return Retagged(path, [], error=str(exc))
    except OSError as exc:
        return Retagged(path, [], error=f"{path}: {exc.strerror or exc}")
    except Exception as exc:  # mutagen on a hostile file: this file's error, not the run's
        return Retagged(path, [], error=f"{path}: cannot write its tags ({type(exc).__name__}: {exc})")


def wanted_for(track, *, include_uncertain: bool = False, replace_words: bool = False) -> Wanted:
    """The values a library ``Track`` has to write: our own analysis only (the catalog's
    consensus is shown beside it, never written into the user's files), and a key the
    analysis is unsure of only with ``include_uncertain`` (a DJ program would trust it).
    ``replace_words``: also over a genre or mood the file already has."""
    from cratesense.dj.exports import exported_cues

    ours = lambda name, value: None if name in track.filled else value  # noqa: E731
    cues = tuple(exported_cues(track))
    wanted = Wanted(bpm=ours("bpm", track.bpm), key=ours("key", track.key), replaygain_db=ours("loudness", track.replaygain),
                    peak_dbtp=ours("loudness", track.true_peak), loudness_lufs=ours("loudness", track.loudness),
                    cues=cues, grid=_grid(cues, track.bpm, track.beats_per_bar, track.duration),
                    genre=ours("genres", track.genres[0] if track.genres else None),
                    mood=ours("moods", track.moods[0] if track.moods else None), replace_words=replace_words)
    return wanted if include_uncertain else _without_uncertain(wanted, track.key_strength)


def wanted_from_analysis(analysis: TrackAnalysis, *, include_uncertain: bool = False) -> Wanted:
    """The values a fresh analysis has to write (ours only: none when the catalog's consensus
    stood in for our descriptors; an uncertain key only with ``include_uncertain``)."""
    from cratesense.analysis.keys import parse_key

    if analysis.descriptors_from == "catalog":
        return Wanted()
    descriptors = analysis.descriptors
    wanted = Wanted(bpm=descriptors.bpm, key=parse_key(descriptors.key or ""), replaygain_db=descriptors.replaygain_db,
                    peak_dbtp=descriptors.true_peak_dbtp, loudness_lufs=descriptors.loudness_lufs,
                    cues=descriptors.cues or (),
                    grid=_grid(descriptors.cues or (), descriptors.bpm, descriptors.beats_per_bar, analysis.audio.duration),
                    genre=descriptors.genres[0] if descriptors.genres else None,
                    mood=descriptors.moods[0] if descriptors.moods else None)
    if include_uncertain:
        return wanted
    return _without_uncertain(wanted, descriptors.key_strength)


def _without_uncertain(wanted: Wanted, key_strength: float | None) -> Wanted:
    """``wanted`` without a key the analysis is unsure of, saying so."""
    if wanted.key is None or not key_uncertain(key_strength):
        return wanted
    note = (f"key {_id3_key(wanted.key)} not written: our analysis is unsure of it (strength {key_strength:.2f}); "
            "--include-uncertain writes it")
    return replace(wanted, key=None, left_out=(note,))


def _grid(cues, bpm: float | None, beats_per_bar: int | None,
          duration: float | None) -> tuple[float, float, float] | None:
    """Serato's grid: (the first bar line at or after 0 s, the last one before the end, our
    tempo), counted in whole bars from the earliest cue after 0 s (a bar line of our grid; one at
    0 s may stand for a bar line a hair before it). Two markers, not one: Serato reads either,
    but Debian's Mixxx (2.3) draws a Serato grid's beats only from the track's start up to its
    last marker, so a grid with its one marker near the start would have no beats after it."""
    from cratesense.analysis.phrases import bar_beats

    if not cues or not bpm:
        return None
    anchor = min([cue.start for cue in cues if cue.start > 0.0] or [cue.start for cue in cues])
    bar = bar_beats(beats_per_bar) * 60.0 / bpm
    first = anchor - math.floor(anchor / bar) * bar
    bars = math.floor((duration - first) / bar - 1e-9) if duration and duration > first else 0
    return first, first + max(bars, 0) * bar, bpm
