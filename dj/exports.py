"""The collection in the DJ programs' own formats: rekordbox XML, Traktor NML, M3U8.

Written to a temporary file beside the target and renamed over it, so a reader never sees half
a collection. Structure as the programs read it (shared/platform-notes.md, "DJ formats"):

* rekordbox: ``DJ_PLAYLISTS Version="1.0.0"`` > ``PRODUCT``, ``COLLECTION Entries`` > ``TRACK``
  (TrackID, Name, Artist, Album, TotalTime in s, AverageBpm "%.2f", Tonality, Location
  ``file://localhost/`` + the percent-encoded path) with a ``TEMPO`` (Inizio: the first beat,
  Bpm, Metro "4/4" or "3/4", Battito: the beat of the bar at Inizio, so bar 1 is where the
  analysis found it), a ``POSITION_MARK`` per cue (Type 0; Num 0-3 for the hot cues A Mix in,
  B Drop, C Breakdown, D Mix out, -1 for a memory cue at every phrase start; Red/Green/Blue the
  cue's colour, as on the page and in Serato), and ``PLAYLISTS`` > ``NODE Type="0" Name="ROOT"`` > ``NODE Type="1"
  KeyType="0" Entries`` > ``TRACK Key=TrackID`` (without KeyType, rekordbox shows the playlist
  empty).
* Traktor NML 19: ``COLLECTION`` > ``ENTRY`` with ``LOCATION DIR="/:Users/:me/:Music/:" FILE
  VOLUME``, ``INFO`` (KEY in Open Key), ``TEMPO BPM``, ``MUSICAL_KEY VALUE`` (0-11 C..B major,
  12-23 C..B minor) and a ``CUE_V2`` grid marker (TYPE 4, START in ms) on bar 1's downbeat in
  hot cue slot 0, beside it the hot cues (TYPE 0, slots 1-4: A Mix in, B Drop, C Breakdown, D Mix
  out) and a memory cue (HOTCUE -1) at every phrase start; Traktor colours cues by their type;
  playlist entries are ``PRIMARYKEY KEY`` = volume + dir + file.
* M3U8: UTF-8, ``#EXTM3U``, ``#EXTINF:<seconds>,Artist - Title``, then the path.

Genre and mood: rekordbox ``Genre`` and ``Comments``, Traktor ``INFO GENRE`` and ``COMMENT``. The
genre is the file's own genre tag when it has one (the program would show it anyway, and ours
must not replace the user's), else the sound model's strongest genre word; the comment is
"Mood: " and the sound model's moods. rekordbox's XML has no field for its My Tags, so those
words go nowhere else.

Beat times are seconds from the start of the decoded audio (FFmpeg's decode, as CrateSense
analyzes it). For MP3s with an encoder delay, DJ programs disagree by ~26 ms about where that
zero is (LAME/LAVC gapless headers); the README says so.
"""

from __future__ import annotations

import os
import time
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Iterable
from pathlib import Path, PurePosixPath
from urllib.parse import quote

from cratesense import __version__
from cratesense.analysis.codecs import codec_name
from cratesense.analysis.constants import GRID_SLACK
from cratesense.analysis.model import Cue
from cratesense.dj.collection import Track
from cratesense.errors import ExportError
from cratesense.files import replace_atomically

FORMATS = ("rekordbox", "traktor", "m3u")
GRID_TOLERANCE = 0.010  # seconds: a cue further than this from a beat of the exported grid is not written
_KIND = {"MP3": "MP3 File", "FLAC": "FLAC File", "AAC": "M4A File", "ALAC": "M4A File", "WAV": "WAV File",
         "AIFF": "AIFF File", "Vorbis": "OGG File", "Opus": "OPUS File"}  # by analysis.codecs.codec_name


MEDIA_TYPES = {"rekordbox": "application/xml", "traktor": "application/xml", "m3u": "audio/x-mpegurl"}
SUFFIXES = {"rekordbox": ".xml", "traktor": ".nml", "m3u": ".m3u8"}


def render(tracks: list[Track], format: str, *, name: str = "CrateSense", relative_to: Path | None = None) -> bytes:
    """The document's bytes (for a download from the web page, or a file)."""
    if format == "rekordbox":
        return rekordbox(tracks, playlist=name)
    if format == "traktor":
        return traktor(tracks, playlist=name)
    if format == "m3u":
        return m3u8(tracks, relative_to=relative_to)
    raise ExportError(f"unknown export format {format!r}; one of {', '.join(FORMATS)}")


def export(tracks: list[Track], format: str, output: Path, *, name: str = "CrateSense",
           relative_to: Path | None = None) -> Path:
    return _write_atomically(output, render(tracks, format, name=name, relative_to=relative_to))


def write_m3u8(tracks: list[Track], output: Path, *, relative_to: Path | None = None) -> Path:
    return export(tracks, "m3u", output, relative_to=relative_to)


def _existing(tracks: Iterable[Track]) -> list[Track]:
    """Every exported track resolves to a file that exists (a file deleted since the last scan
    is left out rather than exported as a broken entry)."""
    return [track for track in tracks if track.path and os.path.isfile(track.path)]


def location_uri(path: str) -> str:
    """``file://localhost/`` + the percent-encoded absolute path, as rekordbox writes it."""
    absolute = os.path.abspath(path)
    return "file://localhost" + quote(absolute, safe="/")


def _rekordbox_key(track: Track) -> str:
    """Tonality as rekordbox writes it in musical notation: "Am", "F#", "Ebm"."""
    if track.key is None:
        return ""
    name, mode = track.key.name.split()
    return name + ("m" if mode == "minor" else "")


def _bar_length(track: Track) -> int:
    """Beats a bar in the exported grid: 3 for a triple meter, else 4 (DJ programs count
    4/4; a bar of two is half of one, and its downbeat is one too)."""
    return 3 if track.beats_per_bar == 3 else 4


def _grid_start(track: Track) -> tuple[float, int]:
    """(Inizio: the grid's first beat in s, Battito: that beat's place in the bar, 1-4): the
    program counts on from it, so bar 1 lands on the analysis' downbeat (after a pickup, the
    first beat is the pickup's: 4 of the bar before)."""
    first = track.beat_offset or 0.0
    if track.downbeat_offset is None or not track.bpm:
        return first, 1  # the bar is not known: the first beat counts as one
    beats_before = round((track.downbeat_offset - first) * track.bpm / 60.0)
    return first, (-beats_before) % _bar_length(track) + 1


def exported_cues(track: Track) -> list[Cue]:
    """The track's cues that an export may write: only with the grid the export writes (our own
    tempo and first beat), each on a beat of it (within ``GRID_TOLERANCE``) and inside the track.
    Anything else (a cue beyond the end, a track whose grid is the catalog's or unknown) is left
    out, never written wrong."""
    if not track.cues or not track.bpm or track.beat_offset is None or "bpm" in track.filled:
        return []
    period = 60.0 / track.bpm
    found = []
    for cue in track.cues:
        beats = (cue.start - track.beat_offset) / period
        off = abs(beats - round(beats)) * period
        # a bar line a hair before 0 s is placed at 0 s, where the music starts (phrases.GRID_SLACK)
        on_grid = off <= GRID_TOLERANCE or (cue.start == 0.0 and off <= GRID_SLACK)
        if on_grid and 0.0 <= cue.start < (track.duration or 0.0):
            found.append(cue)
    return found


def _rgb(colour: str) -> tuple[int, int, int]:
    value = int(colour.lstrip("#"), 16)
    return value >> 16, (value >> 8) & 0xFF, value & 0xFF


def _first_downbeat(track: Track) -> float:
    """The first bar line of the grid (Traktor's grid marker is a downbeat): the first beat
    that ``_grid_start`` counts as one."""
    first, beat = _grid_start(track)
    if not track.bpm:
        return first  # no tempo, no grid: the first beat is all there is
    return first + ((1 - beat) % _bar_length(track)) * 60.0 / track.bpm


def genre_of(track: Track) -> str:
    """The genre an export shows: the file's own, else the sound model's strongest word."""
    from cratesense.dj.tagging import word_text

    return track.tag_genre or (word_text(track.genres[0]) if track.genres else "")


def comment_of(track: Track) -> str:
    return f"Mood: {', '.join(track.moods)}" if track.moods else ""


def rekordbox(tracks: list[Track], *, playlist: str = "CrateSense") -> bytes:
    tracks = _existing(tracks)
    root = ET.Element("DJ_PLAYLISTS", Version="1.0.0")
    ET.SubElement(root, "PRODUCT", Name="CrateSense", Version=__version__, Company="CrateSense")
    collection = ET.SubElement(root, "COLLECTION", Entries=str(len(tracks)))
    for track_id, track in enumerate(tracks, start=1):
        attributes = {
            "TrackID": str(track_id),
            "Name": track.shown_title,
            "Artist": track.artist or "",
            "Album": track.album or "",
            "Genre": genre_of(track),
            "Kind": _KIND.get(codec_name(track.codec) or "", "Audio File"),
            "Size": str(os.path.getsize(track.path)),
            "TotalTime": str(round(track.duration or 0)),
            "AverageBpm": f"{track.bpm:.2f}" if track.bpm else "0.00",
            "Tonality": _rekordbox_key(track),
            "SampleRate": str(track.sample_rate or 0),
            "Comments": comment_of(track),
            "Location": location_uri(track.path),
        }
        element = ET.SubElement(collection, "TRACK", attributes)
        if track.bpm:
            start, beat = _grid_start(track)
            ET.SubElement(element, "TEMPO", Inizio=f"{start:.3f}", Bpm=f"{track.bpm:.2f}",
                          Metro=f"{_bar_length(track)}/4", Battito=str(beat))
        for cue in exported_cues(track):
            red, green, blue = _rgb(cue.colour)
            ET.SubElement(element, "POSITION_MARK", Name=cue.name, Type="0", Start=f"{cue.start:.3f}",
                          Num=str(cue.hot if cue.hot is not None else -1), Red=str(red), Green=str(green),
                          Blue=str(blue))
    playlists = ET.SubElement(root, "PLAYLISTS")
    top = ET.SubElement(playlists, "NODE", Type="0", Name="ROOT", Count="1")
    node = ET.SubElement(top, "NODE", Name=playlist, Type="1", KeyType="0", Entries=str(len(tracks)))
    for track_id in range(1, len(tracks) + 1):
        ET.SubElement(node, "TRACK", Key=str(track_id))
    return _xml(root)


def traktor_location(path: str) -> tuple[str, str, str]:
    """(VOLUME, DIR, FILE) as Traktor writes them: DIR is every folder followed by "/:"."""
    absolute = PurePosixPath(os.path.abspath(path))
    folders = absolute.parent.parts[1:]
    directory = "/:" + "".join(f"{folder}/:" for folder in folders)
    return "", directory, absolute.name


def _traktor_key(track: Track) -> int | None:
    """MUSICAL_KEY VALUE: 0-11 C..B major, 12-23 C..B minor."""
    if track.key is None:
        return None
    return track.key.tonic + (12 if track.key.minor else 0)


def traktor(tracks: list[Track], *, playlist: str = "CrateSense") -> bytes:
    tracks = _existing(tracks)
    root = ET.Element("NML", VERSION="19")
    ET.SubElement(root, "HEAD", COMPANY="www.native-instruments.com", PROGRAM="Traktor")
    ET.SubElement(root, "MUSICFOLDERS")
    collection = ET.SubElement(root, "COLLECTION", ENTRIES=str(len(tracks)))
    today = time.strftime("%Y/%-m/%-d")
    keys = []
    for track in tracks:
        entry = ET.SubElement(collection, "ENTRY", MODIFIED_DATE=today, TITLE=track.shown_title,
                              ARTIST=track.artist or "")
        volume, directory, file = traktor_location(track.path)
        ET.SubElement(entry, "LOCATION", DIR=directory, FILE=file, VOLUME=volume, VOLUMEID=volume)
        keys.append(volume + directory + file)
        if track.album:
            ET.SubElement(entry, "ALBUM", TITLE=track.album)
        info = {"PLAYTIME": str(round(track.duration or 0)), "PLAYTIME_FLOAT": f"{track.duration or 0:.6f}",
                "FILESIZE": str(os.path.getsize(track.path) // 1024)}
        if track.key is not None:
            info["KEY"] = track.key.open_key
        if genre_of(track):
            info["GENRE"] = genre_of(track)
        if comment_of(track):
            info["COMMENT"] = comment_of(track)
        ET.SubElement(entry, "INFO", info)
        if track.bpm:
            ET.SubElement(entry, "TEMPO", BPM=f"{track.bpm:.6f}", BPM_QUALITY="100.000000")
        if _traktor_key(track) is not None:
            ET.SubElement(entry, "MUSICAL_KEY", VALUE=str(_traktor_key(track)))
        if track.bpm:
            ET.SubElement(entry, "CUE_V2", NAME="AutoGrid", DISPL_ORDER="0", TYPE="4",
                          START=f"{1000 * _first_downbeat(track):.6f}",
                          LEN="0.000000", REPEATS="-1", HOTCUE="0")
        for cue in exported_cues(track):  # hot cues beside the grid marker (its slot 0): A-D in 1-4
            ET.SubElement(entry, "CUE_V2", NAME=cue.name, DISPL_ORDER="0", TYPE="0", START=f"{1000 * cue.start:.6f}",
                          LEN="0.000000", REPEATS="-1", HOTCUE=str(cue.hot + 1 if cue.hot is not None else -1))
    ET.SubElement(root, "SETS", ENTRIES="0")
    playlists = ET.SubElement(root, "PLAYLISTS")
    top = ET.SubElement(playlists, "NODE", TYPE="FOLDER", NAME="$ROOT")
    subnodes = ET.SubElement(top, "SUBNODES", COUNT="1")
    node = ET.SubElement(subnodes, "NODE", TYPE="PLAYLIST", NAME=playlist)
    listing = ET.SubElement(node, "PLAYLIST", ENTRIES=str(len(tracks)), TYPE="LIST", UUID=uuid.uuid4().hex)
    for key in keys:
        entry = ET.SubElement(listing, "ENTRY")
        ET.SubElement(entry, "PRIMARYKEY", TYPE="TRACK", KEY=key)
    return _xml(root)


def m3u8(tracks: list[Track], *, relative_to: Path | None = None) -> bytes:
    lines = ["#EXTM3U"]
    for track in _existing(tracks):
        path = os.path.relpath(track.path, relative_to) if relative_to else os.path.abspath(track.path)
        lines.append(f"#EXTINF:{round(track.duration or 0)},{track.label}")
        lines.append(path)
    return ("\n".join(lines) + "\n").encode("utf-8")


def _xml(root: ET.Element) -> bytes:
    ET.indent(root)
    return ET.tostring(root, encoding="UTF-8", xml_declaration=True) + b"\n"


def _write_atomically(output: Path, data: bytes) -> Path:
    try:
        return replace_atomically(output, data)
    except OSError as exc:
        raise ExportError(f"cannot write {output}: {exc.strerror or exc}") from None
