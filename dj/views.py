"""The DJ library in the user's words: tracks, suggestions and duplicates as JSON documents and as
table cells, keys in the user's notation, values the catalog filled marked as such. One module
for the CLI, the control API and the web page, so they all say the same thing."""

from __future__ import annotations

from cratesense.dj.collection import Track
from cratesense.dj.harmony import in_notation
from cratesense.dj.mixing import Suggestion

CATALOG_MARK = "*"  # after a value the catalog's consensus filled


def track_json(track: Track, notation: str) -> dict:
    return {
        "content_key": track.content_key,
        "path": track.path,
        "copies": track.copies,
        "artist": track.artist,
        "title": track.title,
        "album": track.album,
        "bpm": track.bpm,
        "key": in_notation(track.key, notation),
        "camelot": track.camelot,
        "key_name": track.key.name if track.key else None,
        "loudness_lufs": track.loudness,
        "duration": track.duration,
        "beat_offset": track.beat_offset,
        "downbeat_offset": track.downbeat_offset,
        "codec": track.codec,
        "added_at": track.added_at,
        "from_catalog": sorted(track.filled),
    }


def suggestion_json(suggestion: Suggestion, notation: str) -> dict:
    return {"score": suggestion.score, "harmony": suggestion.harmony, "tempo": suggestion.tempo,
            "sound": suggestion.sound, "reasons": suggestion.reasons, "track": track_json(suggestion.track, notation)}


def minutes(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    return f"{int(seconds // 60)}:{int(seconds % 60):02d}"


def cells(track: dict) -> dict[str, str]:
    """The table cells of a track as ``track_json`` gives it (so a table shows exactly what the
    JSON answer says); a value the catalog filled ends with ``CATALOG_MARK``."""
    filled = set(track["from_catalog"])

    def shown(value, name: str) -> str:
        if value is None or value == "":
            return "-"
        return f"{value}{CATALOG_MARK if name in filled else ''}"

    path, copies = track["path"], track["copies"]
    return {
        "artist": shown(track["artist"], "artist"),
        "title": shown(track["title"] or (path.rsplit('/', 1)[-1] if not track["artist"] else None), "title"),
        "bpm": shown(f"{track['bpm']:.1f}" if track["bpm"] else None, "bpm"),
        "key": shown(track["key"], "key"),
        "lufs": shown(f"{track['loudness_lufs']:.1f}" if track["loudness_lufs"] is not None else None, "loudness"),
        "time": minutes(track["duration"]),
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
                 ("lufs", "LUFS", 6), ("time", "time", 6), ("path", "path", 200)]
