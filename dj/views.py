"""The DJ library in the user's words: tracks, suggestions and duplicates as JSON documents and as
table cells, keys in the user's notation, values the catalog filled marked as such. One module
for the CLI, the control API and the web page, so they all say the same thing."""

from __future__ import annotations

from cratesense.analysis.codecs import codec_name
from cratesense.dj.collection import Track
from cratesense.dj.harmony import in_notation
from cratesense.dj.mixing import Suggestion

CATALOG_MARK = "*"  # after a value the catalog's consensus filled
DISPUTED_MARK = "!"  # after our own value where the catalog's consensus says otherwise
UNCERTAIN_MARK = "?"  # after our own key where the analysis is unsure of it


def track_json(track: Track, notation: str) -> dict:
    return {
        "content_key": track.content_key,
        "path": track.path,
        "copies": track.copies,
        "artist": track.artist,
        "title": track.title,  # the tag's (None without one)
        "shown_title": track.shown_title,  # what every face shows: the tag's, or the file's name
        "label": track.label,  # "Artist - Title"
        "album": track.album,
        "bpm": track.bpm,
        "key": in_notation(track.key, notation),
        "camelot": track.camelot,
        "key_name": track.key.name if track.key else None,
        "key_strength": track.key_strength,  # the key stage's probability that the key is right
        "key_uncertain": track.key_uncertain,  # below KEY_UNCERTAIN_BELOW: check it by ear
        "loudness_lufs": track.loudness,
        "duration": track.duration,
        "beat_offset": track.beat_offset,
        "downbeat_offset": track.downbeat_offset,
        "format": codec_name(track.codec),  # the codec as people name it: MP3, AAC, FLAC... (never mp3float)
        "energy": track.energy,
        "added_at": track.added_at,
        "genres": list(track.genres),
        "moods": list(track.moods),
        "tags": list(track.sound_tags),
        "from_catalog": sorted(track.filled),
        "consensus_djs": track.backed_by,  # how many DJs the catalog's consensus comes from
        # what the consensus says where it disagrees with the file's own analysis
        "consensus_disagrees": {name: value for name, value in (("key", in_notation(track.catalog_key, notation)),
                                                                ("bpm", track.catalog_bpm)) if value is not None},
    }


def consensus_note(track: dict) -> str | None:
    """In words, where the catalog's consensus disagrees with the file's own analysis ("key 8A
    here; 7 DJs say 9A"), so a DJ can check a doubtful key or tempo; None where it agrees."""
    disagrees, djs = track["consensus_disagrees"], track["consensus_djs"]
    say = f"{djs} DJs say" if djs and djs > 1 else "the catalog says"
    notes = []
    if "key" in disagrees:
        notes.append(f"key {track['key']} here; {say} {disagrees['key']}")
    if "bpm" in disagrees:
        notes.append(f"{track['bpm']:.1f} BPM here; {say} {disagrees['bpm']:.1f}")
    return "; ".join(notes) or None


def catalog_cell(track: dict) -> str:
    """What the catalog column of a table says: a disagreement, else how many DJs stand behind
    the values it filled, else nothing."""
    note = consensus_note(track)
    if note:
        return f"{DISPUTED_MARK} {note}"
    if track["from_catalog"] and track["consensus_djs"]:
        return f"{CATALOG_MARK} {track['consensus_djs']} DJ{'s' if track['consensus_djs'] != 1 else ''}"
    return ""


def suggestion_json(suggestion: Suggestion, notation: str) -> dict:
    return {"score": suggestion.score, "harmony": suggestion.harmony, "tempo": suggestion.tempo,
            "sound": suggestion.sound, "energy": suggestion.energy, "reasons": suggestion.reasons,
            "mix": suggestion.mix.json() if suggestion.mix else None, "duplicate": suggestion.duplicate,
            "track": track_json(suggestion.track, notation)}


def minutes(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    return f"{int(seconds // 60)}:{int(seconds % 60):02d}"


def cells(track: dict) -> dict[str, str]:
    """The table cells of a track as ``track_json`` gives it (so a table shows exactly what the
    JSON answer says); a value the catalog filled ends with ``CATALOG_MARK``."""
    filled = set(track["from_catalog"])
    disputed = set(track["consensus_disagrees"])
    uncertain = {"key"} if track.get("key_uncertain") else set()

    def shown(value, name: str) -> str:
        if value is None or value == "":
            return "-"
        unsure = UNCERTAIN_MARK if name in uncertain else ""
        return f"{value}{unsure}{CATALOG_MARK if name in filled else DISPUTED_MARK if name in disputed else ''}"

    path, copies = track["path"], track["copies"]
    return {
        "artist": shown(track["artist"], "artist"),
        "title": shown(track["shown_title"], "title"),
        "bpm": shown(f"{track['bpm']:.1f}" if track["bpm"] else None, "bpm"),
        "key": shown(track["key"], "key"),
        "lufs": shown(f"{track['loudness_lufs']:.1f}" if track["loudness_lufs"] is not None else None, "loudness"),
        "genre": shown(", ".join(track["genres"][:2]) or None, "genres"),
        "mood": shown(", ".join(track["moods"][:2]) or None, "moods"),
        "time": minutes(track["duration"]),
        "catalog": catalog_cell(track),
        "path": path + (f" (+{copies - 1} copies)" if copies > 1 else ""),
    }


def table(rows: list[dict[str, str]], columns: list[tuple[str, str, int]]) -> list[str]:
    """Lines of a text table: ``columns`` are (cell name, heading, width cap); the last column
    is never cut (it is usually the path)."""
    widths = []
    for index, (name, heading, cap) in enumerate(columns):
        width = max([len(heading)] + [len(row[name]) for row in rows])
        widths.append(width if index == len(columns) - 1 else min(cap, width))
    lines = ["  ".join(heading.ljust(width) for (_, heading, _), width in zip(columns, widths)).rstrip()]
    for row in rows:
        parts = []
        for (name, _, _), width in zip(columns, widths):
            cell = row[name]
            parts.append((cell if len(cell) <= width else cell[: width - 1] + "…").ljust(width))
        lines.append("  ".join(parts).rstrip())
    return lines


TRACK_COLUMNS = [("artist", "artist", 24), ("title", "title", 32), ("bpm", "BPM", 7), ("key", "key", 8),
                 ("lufs", "LUFS", 6), ("genre", "genre", 20), ("mood", "mood", 18), ("time", "time", 6),
                 ("catalog", "catalog", 64), ("path", "path", 200)]
CATALOG_LEGEND = (f"{CATALOG_MARK} from the catalog's consensus (the file's own tags and our analysis had none; "
                  f"'N DJs': how many stand behind it); {DISPUTED_MARK} the consensus says otherwise than this "
                  "file's own analysis: worth a listen")
UNCERTAIN_LEGEND = (f"{UNCERTAIN_MARK} our analysis is unsure of this key: check it by ear before mixing "
                    "or tagging by it (tags write leaves it out unless --include-uncertain)")


def legends(tracks: list[dict]) -> list[str]:
    """The legend lines a table of ``tracks`` needs (none when it shows no mark)."""
    found = []
    if any(track["from_catalog"] or track["consensus_disagrees"] for track in tracks):
        found.append(CATALOG_LEGEND)
    if any(track.get("key_uncertain") for track in tracks):
        found.append(UNCERTAIN_LEGEND)
    return found


HOT_CUE_LETTERS = "ABCDEFGH"


def prep_json(track: Track, waveform, media_type: str | None = None) -> dict:
    """A track's prep for the page and ``cratesense prep``: its energy, phrases and cues (with
    their colours, hot cues with their letters), the waveform overview, and what the preview
    streams (its media type, and whether browsers play its format)."""
    from cratesense.dj.playback import playable

    colours = _label_colours()
    return {
        "content_key": track.content_key, "label": track.label, "duration": track.duration, "energy": track.energy,
        "bpm": track.bpm, "bars_known": track.downbeat_offset is not None,
        "phrases": [{"start": p.start, "end": p.end, "bar": p.bar, "bars": p.bars, "label": p.label,
                     "energy": p.energy, "confidence": p.confidence, "colour": colours.get(p.label, "#888888")}
                    for p in track.phrases],
        "cues": [{"start": c.start, "bar": c.bar, "name": c.name, "colour": c.colour, "hot": c.hot,
                  "letter": HOT_CUE_LETTERS[c.hot] if c.hot is not None else None} for c in track.cues],
        "waveform": None if waveform is None else {"column_seconds": waveform.column_seconds, "data": waveform.data},
        "format": codec_name(track.codec), "media_type": media_type, "playable": playable(track.codec),
    }


def _label_colours() -> dict[str, str]:
    from cratesense.analysis.cues import COLOURS

    return COLOURS
