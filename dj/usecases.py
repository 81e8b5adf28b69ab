"""The DJ's commands, once, for every face: tracks, next, similar, playlist, duplicates, export
and the tag-writing plan.

Each use case takes the collection (the journal's read model as the DJ sees it), the user's DJ
settings and the request's values, as a command line or a query string gives them (strings, or
values argparse already typed), validates them here and only here, and returns the answer every
face shows: the control API sends it as JSON (and so the web page reads it), and the CLI prints it
with ``--json`` or as a table made from it. So the same inputs give the same answers everywhere.
A value that cannot be used raises ``QueryError`` naming it (the CLI exits 2, the API answers 400).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, NamedTuple

from cratesense.analysis.constants import DEFAULT_TAG_FIELDS, TAG_FIELDS
from cratesense.daemon.config import DjConfig
from cratesense.dj.collection import Collection, Filters, Track, parse_filters
from cratesense.errors import QueryError

if TYPE_CHECKING:
    from cratesense.dj.playback import Playable

Answer = dict[str, Any]  # JSON: what the API sends and the CLI prints with --json
MAX_PITCH_RANGE_PERCENT = 50.0  # beyond this a "mix" is another track entirely


def whole(values: Mapping[str, Any], name: str, default: int, *, minimum: int = 1) -> int:
    """``values[name]`` as a whole number of at least ``minimum`` (``default`` when absent)."""
    value = values.get(name)
    if value in (None, ""):
        return default
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise QueryError(f"{name} must be a whole number, got {value!r}") from None
    if number < minimum:
        raise QueryError(f"{name} must be at least {minimum}, got {number}")
    return number


def pitch_range(values: Mapping[str, Any], settings: DjConfig) -> float:
    """The pitch range as a fraction, from ``pitch_range`` in percent ("6", "6%", 6.0) or the
    settings' ``pitch_range_percent``."""
    value = values.get("pitch_range")
    if value in (None, ""):
        return settings.pitch_range_percent / 100
    try:
        percent = float(str(value).strip().rstrip("%"))
    except ValueError:
        raise QueryError(f"pitch_range must be a percentage such as 6, got {value!r}") from None
    if not 0 < percent < MAX_PITCH_RANGE_PERCENT:
        raise QueryError(f"pitch_range must be between 0 and {MAX_PITCH_RANGE_PERCENT:g} %, got {percent:g}")
    return percent / 100


def tag_fields(values: Mapping[str, Any]) -> tuple[str, ...]:
    """The tag fields to write: a list or a comma-separated text of ``TAG_FIELDS``
    (``DEFAULT_TAG_FIELDS`` when absent: Serato's tags and the sound model's genre and mood only when
    asked for)."""
    given = values.get("fields")
    if given in (None, "", []):
        return DEFAULT_TAG_FIELDS
    names = given.split(",") if isinstance(given, str) else list(given)
    fields = tuple(str(name).strip() for name in names if str(name).strip())
    unknown = sorted(set(fields) - set(TAG_FIELDS))
    if not fields or unknown:
        raise QueryError(f"unknown tag field(s) {', '.join(unknown) or repr(given)}: choose from {','.join(TAG_FIELDS)}")
    return fields


def named(collection: Collection, values: Mapping[str, Any], field: str = "track") -> Track:
    """The track a request names: ``content_key``, or ``field`` (a path or text matching one track)."""
    if values.get("content_key"):
        track = collection.track(values["content_key"])
        if track is None:
            raise QueryError("no such track in the library (content_key)")
        return track
    if not values.get(field):
        raise QueryError(f"say which track: {field}=PATH or text, or content_key=KEY")
    return collection.find(values[field])


# --- the use cases -----------------------------------------------------------------------------

def tracks(collection: Collection, values: Mapping[str, Any], settings: DjConfig) -> Answer:
    """The tracks the filters select: a page of them (``limit``, ``offset``) and how many in all."""
    from cratesense.dj.views import track_json

    filters = parse_filters(values)
    offset = whole(values, "offset", 0, minimum=0)
    return {"total": collection.count(filters), "offset": offset,
            "tracks": [track_json(track, settings.key_notation) for track in collection.tracks(filters, offset=offset)]}


def next_tracks(collection: Collection, values: Mapping[str, Any], settings: DjConfig) -> Answer:
    """What can follow a track in a mix, best first, with reasons."""
    from cratesense.dj import mixing
    from cratesense.dj.views import suggestion_json, track_json

    limit, fraction = whole(values, "limit", 10), pitch_range(values, settings)
    current = named(collection, values)
    found = mixing.next_tracks(collection, current, limit=limit, pitch_range=fraction, notation=settings.key_notation)
    return {"track": track_json(current, settings.key_notation),
            "next": [suggestion_json(s, settings.key_notation) for s in found]}


def similar(collection: Collection, values: Mapping[str, Any], settings: DjConfig) -> Answer:
    """What sounds like a track, with scores."""
    from cratesense.dj import mixing
    from cratesense.dj.views import suggestion_json, track_json

    limit = whole(values, "limit", 10)
    current = named(collection, values)
    found = mixing.similar_tracks(collection, current, limit=limit)
    return {"track": track_json(current, settings.key_notation),
            "similar": [suggestion_json(s, settings.key_notation) for s in found]}


def playlist(collection: Collection, values: Mapping[str, Any], settings: DjConfig) -> Answer:
    """A mixable path from a track (``from``, or ``content_key``), or the tracks the filters
    select; ``complete`` says whether it reached the length asked for."""
    from cratesense.dj import mixing
    from cratesense.dj.views import suggestion_json

    filters = parse_filters({**values, "sort": values.get("sort") or "bpm"})
    length, per_artist = whole(values, "length", 20), whole(values, "per_artist", 2)
    start = named(collection, values, "from") if values.get("from") or values.get("content_key") else None
    steps = mixing.playlist(collection, start, length=length, filters=filters, per_artist=per_artist,
                            pitch_range=pitch_range(values, settings), notation=settings.key_notation)
    return {"playlist": [suggestion_json(step, settings.key_notation) for step in steps], "length": length,
            "complete": start is None or len(steps) >= length}


def duplicates(collection: Collection, values: Mapping[str, Any], settings: DjConfig) -> Answer:
    """Groups of files of one recording, the copy to keep first."""
    from cratesense.dj.duplicates import find_groups, group_json

    return {"groups": [group_json(group) for group in find_groups(collection)]}


def export_tracks(collection: Collection, values: Mapping[str, Any]) -> tuple[str, list[Track]]:
    """The format and the tracks of an export: listed ``content_keys``, or those the filters select."""
    from cratesense.dj.exports import FORMATS

    format = values.get("format") or "m3u"
    if format not in FORMATS:
        raise QueryError(f"unknown export format {format!r}; one of {', '.join(FORMATS)}")
    keys = values.get("content_keys")
    if keys:
        found = [track for key in keys if (track := collection.track(key)) is not None]
    else:
        filters = parse_filters(values)
        found = collection.tracks(Filters(**{**filters.__dict__, "limit": whole(values, "limit", 0, minimum=0) or None}))
    return format, found


def library_export(collection: Collection, values: Mapping[str, Any], settings: DjConfig) -> Answer:
    """A DJ program's document for some tracks, as text (the page downloads it)."""
    from cratesense.dj.exports import MEDIA_TYPES, render

    format, found = export_tracks(collection, values)
    document = render(found, format, name=values.get("name") or "CrateSense")
    return {"format": format, "media_type": MEDIA_TYPES[format], "tracks": len(found),
            "document": document.decode("utf-8")}


class TagPlan(NamedTuple):
    fields: tuple[str, ...]
    tracks: list[tuple[Track, list[str]]]  # each track with the paths of its files
    include_uncertain: bool  # write a key the analysis is unsure of too
    replace_words: bool  # replace the genre and mood the file already has
    dry_run: bool  # say what would change, write nothing


def flag(values: Mapping[str, Any], name: str) -> bool:
    """``values[name]`` as a yes or no (a JSON boolean, or "true"/"false"/"1"/"0" from a query)."""
    value = values.get(name)
    if value in (None, "", False, True):
        return bool(value)
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise QueryError(f"{name} must be true or false, got {value!r}")


def tag_plan(collection: Collection, values: Mapping[str, Any]) -> TagPlan:
    """Which fields to write into which files: the named ``tracks`` (all when none), each with
    the paths of its files; a key the analysis is unsure of only with
    ``include_uncertain``; the file's own genre and mood only with ``replace_words``."""
    fields = tag_fields(values)
    include_uncertain = flag(values, "include_uncertain")
    specs = values.get("tracks") or []
    chosen = [collection.find(spec) for spec in specs] if specs else collection.tracks()
    return TagPlan(fields, [(track, [path for path, _ in collection.files(track.content_key)]) for track in chosen],
                   include_uncertain, flag(values, "replace_words"), flag(values, "dry_run"))


def prep(collection: Collection, values: Mapping[str, Any], settings: DjConfig) -> Answer:
    """A track's prep: energy, phrases and cues (hot and memory), and the waveform overview."""
    from cratesense.dj.playback import media_type
    from cratesense.dj.views import prep_json

    track = named(collection, values)
    analysis = collection.reader.track(track.content_key)
    if analysis is None:
        return prep_json(track, None)
    return prep_json(track, analysis.descriptors.waveform, media_type(analysis.audio.container, analysis.audio.codec))


def audio(collection: Collection, values: Mapping[str, Any]) -> Playable | None:
    """The library file a track's preview streams, opened and checked (``dj/playback.py``);
    None for anything but ``content_key`` alone naming a track on disk, still the file analyzed
    (the page answers 404)."""
    from cratesense.dj.playback import open_library_file

    key = values.get("content_key")
    if set(values) != {"content_key"} or not isinstance(key, str) or not key:
        return None
    return open_library_file(collection.reader, key)


# The DJ's read-only commands by name: what the control API routes and the CLI calls.
READ_COMMANDS = {
    "prep": prep,
    "tracks": tracks,
    "next": next_tracks,
    "similar": similar,
    "playlist": playlist,
    "duplicates": duplicates,
    "library-export": library_export,
}
