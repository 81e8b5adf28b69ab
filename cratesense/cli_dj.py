"""The DJ commands of the command line: tracks, next, prep, similar, playlist, duplicates, export,
tags, recommendations. They read the journal read-only (the agent may run or not); what they
print is ``dj/views.py``'s, the same the control API and the web page show."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from cratesense.analysis.constants import DEFAULT_TAG_FIELDS, TAG_FIELDS

EXIT_OK = 0
SORT_HELP = "the order: bpm, key, loudness, added, artist, title or duration"

_FILTER_HELP = {
    "bpm": "a tempo range, e.g. 120-128 (double/half time are not folded here)",
    "key": "a key: 8A, Am, \"A minor\" or 1m",
    "compatible_with": "keys that mix with this one on the Camelot wheel",
    "search": "text in the artist, title, album or file name",
    "genre": "a genre the sound model hears, e.g. house, jazz, classical (README: What the numbers mean)",
    "mood": "a mood the sound model hears: calm, energetic, aggressive, happy, sad, danceable, ...",
    "tag": "any of its words: a genre, a mood, or vocal, instrumental, piano, guitar, strings, ...",
}


def add_commands(commands) -> None:
    tracks = commands.add_parser(
        "tracks", help="list the library: artist, title, BPM, key, loudness, genre, mood, time, path",
        description="The tracks on disk, one row per recording (copies of a file are counted, not "
        "repeated). Values the catalog's consensus filled, where the file's own tags were empty, "
        "are marked *. Works with the agent stopped.")
    add_filters(tracks)
    tracks.add_argument("--sort", default="artist", metavar="FIELD", help=SORT_HELP)
    tracks.add_argument("--limit", type=positive, metavar="N")
    tracks.add_argument("--json", action="store_true", help="one JSON document")
    tracks.set_defaults(handler=_cmd_tracks)

    next_ = commands.add_parser(
        "next", help="what can follow a track in a mix, best first, with reasons",
        description="Harmonic compatibility (Camelot: same key, one step round the wheel, the relative "
        "major/minor, the diagonal weighted lower), tempo within the pitch range (double and half "
        "time counted) and sound. TRACK is a file's path or text that matches one track.")
    next_.add_argument("track", metavar="TRACK")
    next_.add_argument("--limit", type=positive, default=10, metavar="N")
    next_.add_argument("--pitch-range", metavar="PERCENT",
                       help="how far a track may be pitched to match (default: dj.pitch_range_percent, 6)")
    next_.add_argument("--json", action="store_true")
    next_.set_defaults(handler=_cmd_next)

    prep = commands.add_parser(
        "prep", help="a track's phrases, cues and energy",
        description="The phrases on the bar grid (intro, verse, build, drop, breakdown, outro) with their "
        "energy 1-10, and the cues every export writes: hot cues A Mix in, B Drop, C Breakdown, D Mix out, "
        "and a memory cue at every phrase start. TRACK is a file's path or text that matches one track.")
    prep.add_argument("track", metavar="TRACK")
    prep.add_argument("--json", action="store_true")
    prep.set_defaults(handler=_cmd_prep)

    similar = commands.add_parser("similar", help="tracks that sound alike, with scores")
    similar.add_argument("track", metavar="TRACK")
    similar.add_argument("--limit", type=positive, default=10, metavar="N")
    similar.add_argument("--json", action="store_true")
    similar.set_defaults(handler=_cmd_similar)

    playlist = commands.add_parser(
        "playlist", help="a mixable playlist from a track, or the tracks that match filters",
        description="With --from: a path through the library, each step mixable after the last (as "
        "`next` ranks them), no track twice, a cap per artist. Without: the tracks the filters "
        "select. Printed, or saved as M3U8 with --output.")
    playlist.add_argument("--from", dest="start", metavar="TRACK")
    playlist.add_argument("--length", type=positive, default=20, metavar="N")
    playlist.add_argument("--per-artist", type=positive, default=2, metavar="N")
    add_filters(playlist)
    playlist.add_argument("--sort", default="bpm", metavar="FIELD", help=SORT_HELP)
    playlist.add_argument("--output", metavar="FILE.m3u8")
    playlist.add_argument("--relative-to", metavar="DIR", help="write paths relative to this folder")
    playlist.add_argument("--json", action="store_true")
    playlist.set_defaults(handler=_cmd_playlist)
    _add_more_commands(commands)


def _add_more_commands(commands) -> None:
    duplicates = commands.add_parser(
        "duplicates", help="files that hold the same recording (other formats, bitrates, a trimmed head)",
        description="Groups of files of one recording, found by fingerprint (not only identical bytes), each "
        "ranked with the copy to keep first: the original over a transcode (a lossless file decoded from a lossy "
        "one, or a lossy file re-encoded at a higher bitrate, told by where its spectrum stops, and said), then "
        "lossless, then bitrate, then the more complete tags. "
        "Nothing is deleted.")
    duplicates.add_argument("--json", action="store_true")
    duplicates.set_defaults(handler=_cmd_duplicates)

    tags = commands.add_parser("tags", help="write BPM, key and ReplayGain into your files (opt-in)")
    tag_commands = tags.add_subparsers(title="tags commands", metavar="COMMAND")
    write = tag_commands.add_parser(
        "write", help="write the analysis into the files' standard tags",
        description="Writes BPM (ID3 TBPM, MP4 tmpo, Vorbis BPM), the key (ID3 TKEY as \"Am\"; MP4 "
        "initialkey and Vorbis INITIALKEY in your notation) and ReplayGain (REPLAYGAIN_TRACK_GAIN/PEAK; "
        "Opus R128_TRACK_GAIN), and when asked (--fields) the sound model's genre and mood (ID3 TCON/TMOO, "
        "Vorbis GENRE/MOOD, MP4 \u00a9gen and a MOOD freeform atom; only where the file has none unless "
        "--replace-words) into the files of TRACK... (all tracks when none is named). Only our own "
        "analysis is written, never the catalog's consensus; never Mixed In Key's fields; never the "
        "audio. Each file is rewritten atomically with its permissions kept.")
    write.add_argument("tracks", nargs="*", metavar="TRACK")
    write.add_argument("--fields", type=_fields, default=None, metavar="LIST",
                       help=f"comma-separated, some of: {','.join(TAG_FIELDS)} (default: {','.join(DEFAULT_TAG_FIELDS)}; "
                       "serato: the hot cues, their colours, the beat grid and the BPM lock in Serato's own tags; "
                       "genre, mood: the sound model's, only where the file has none)")
    write.add_argument("--replace-words", action="store_true",
                       help="write genre and mood over those the file already has (kept otherwise)")
    write.add_argument("--dry-run", action="store_true", help="show each change, write nothing")
    write.add_argument("--include-uncertain", action="store_true",
                       help="also write a key our analysis is unsure of (left out by default: shown "
                       "with '?' in tracks and next)")
    write.set_defaults(handler=_cmd_tags_write)
    tags.set_defaults(handler=lambda args: _help_of(tags))

    recommendations = commands.add_parser(
        "recommendations", help='"DJs with similar taste also have", from a shared catalog',
        description="Recordings held by contributors whose taste profile (histograms, never a track list) "
        "is nearest yours, with the catalog's artist, title, BPM and key. Needs the agent running and "
        "a shared catalog (sync.catalog_url).")
    recommendations.add_argument("--json", action="store_true")
    recommendations.set_defaults(handler=_cmd_recommendations)


def _help_of(parser: argparse.ArgumentParser) -> int:
    from cratesense.cli import help_of

    return help_of(parser)


def add_filters(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--bpm", metavar="LOW-HIGH", help=_FILTER_HELP["bpm"])
    parser.add_argument("--key", metavar="KEY", help=_FILTER_HELP["key"])
    parser.add_argument("--compatible-with", metavar="KEY", help=_FILTER_HELP["compatible_with"])
    parser.add_argument("--search", metavar="TEXT", help=_FILTER_HELP["search"])
    parser.add_argument("--genre", metavar="WORD", help=_FILTER_HELP["genre"])
    parser.add_argument("--mood", metavar="WORD", help=_FILTER_HELP["mood"])
    parser.add_argument("--tag", metavar="WORD", help=_FILTER_HELP["tag"])


def positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError("expected a number of at least 1")
    return value


def _settings(args):
    from cratesense.daemon.config import load

    return load(getattr(args, "config", None)).dj


def _collection():
    from cratesense.daemon.paths import journal_path
    from cratesense.dj.collection import Collection
    from cratesense.errors import QueryError

    path = journal_path()
    if not path.exists():
        raise QueryError("there is no library yet: the agent has not run (cratesense run ~/Music)")
    return Collection.open(path)


def _filters(args) -> dict:
    return {"bpm": args.bpm, "key": args.key, "compatible_with": args.compatible_with, "search": args.search,
            "genre": args.genre, "mood": args.mood, "tag": args.tag}


def _ask(command: str, values: dict, args) -> dict:
    """The answer of one of the DJ's commands (dj/usecases.py), read here from the journal."""
    from cratesense.dj.usecases import READ_COMMANDS

    settings = _settings(args)
    with _collection() as collection:
        return READ_COMMANDS[command](collection, values, settings)


def _print_json(answer: dict) -> None:
    print(json.dumps(answer, indent=1, ensure_ascii=False))


def _print_tracks(tracks: list[dict]) -> None:
    from cratesense.dj.views import TRACK_COLUMNS, cells, legends, table

    for line in table([cells(track) for track in tracks], TRACK_COLUMNS):
        print(line)
    _print_legends(legends(tracks))


def _print_legends(lines: list[str]) -> None:
    if lines:
        print("\n" + "\n".join(lines))


def _cmd_tracks(args) -> int:
    answer = _ask("tracks", {**_filters(args), "sort": args.sort, "limit": args.limit}, args)
    if args.json:
        _print_json(answer)
    elif answer["tracks"]:
        _print_tracks(answer["tracks"])
    else:
        print("no track matches", file=sys.stderr)
    return EXIT_OK


def _print_suggestions(title: str, suggestions: list[dict], current: dict | None = None) -> None:
    from cratesense.dj.views import cells, legends, table

    print(title)
    rows = []
    for index, suggestion in enumerate(suggestions, start=1):
        row = cells(suggestion["track"])
        row.update(rank=str(index), score=f"{suggestion['score']:.2f}", why="; ".join(suggestion["reasons"]))
        rows.append(row)
    columns = [("rank", "#", 3), ("score", "score", 5), ("artist", "artist", 20), ("title", "title", 26),
               ("bpm", "BPM", 7), ("key", "key", 7), ("catalog", "catalog", 64), ("why", "why", 400)]
    for line in table(rows, columns):
        print(line)
    _print_legends(legends([s["track"] for s in suggestions] + ([current] if current else [])))


def _label(track: dict) -> str:
    """"Artist - Title" as every face shows it (``Track.label``: the file's name without a title tag)."""
    return track["label"]


def _cmd_next(args) -> int:
    answer = _ask("next", {"track": args.track, "limit": args.limit, "pitch_range": args.pitch_range}, args)
    if args.json:
        _print_json(answer)
        return EXIT_OK
    current = answer["track"]
    if not answer["next"]:
        print(f"nothing in the library can follow {_label(current)} (no other track with a tempo)")
        return EXIT_OK
    from cratesense.dj.views import cells, consensus_note

    shown = cells(current)
    described = ", ".join([f"{shown['bpm']} BPM" if current["bpm"] else "tempo unknown",
                           shown["key"] if current["key"] else "key unknown", *filter(None, [consensus_note(current)])])
    _print_suggestions(f"after {_label(current)} ({described}):", answer["next"], current)
    return EXIT_OK


def _cmd_prep(args) -> int:
    from cratesense.dj.views import minutes, table

    answer = _ask("prep", {"track": args.track}, args)
    if args.json:
        answer.pop("waveform", None)  # for the page: columns of bytes, nothing to read
        _print_json(answer)
        return EXIT_OK
    energy = f", energy {answer['energy']}/10" if answer["energy"] is not None else ""
    print(f"{answer['label']}{energy}")
    if not answer["phrases"]:
        print("no phrases: " + ("the track is too short for them" if answer["bars_known"] else "its bar grid is not known"))
        return EXIT_OK
    hot = {cue["start"]: cue for cue in answer["cues"] if cue["hot"] is not None}
    rows = [{"bar": str(p["bar"]), "time": minutes(p["start"]), "bars": str(p["bars"]), "phrase": p["label"],
             "energy": str(p["energy"]), "sure": f"{p['confidence']:.2f}",
             "cue": f"{hot[p['start']]['letter']} {hot[p['start']]['name']}" if p["start"] in hot else ""}
            for p in answer["phrases"]]
    columns = [("bar", "bar", 5), ("time", "time", 6), ("bars", "bars", 4), ("phrase", "phrase", 10),
               ("energy", "energy", 6), ("sure", "sure", 5), ("cue", "hot cue", 20)]
    for line in table(rows, columns):
        print(line)
    return EXIT_OK


def _cmd_similar(args) -> int:
    answer = _ask("similar", {"track": args.track, "limit": args.limit}, args)
    if args.json:
        _print_json(answer)
    else:
        _print_suggestions(f"sounds like {_label(answer['track'])}:", answer["similar"])
    return EXIT_OK


def _cmd_playlist(args) -> int:
    from cratesense.dj.exports import write_m3u8

    values = {**_filters(args), "from": args.start, "length": args.length, "per_artist": args.per_artist,
              "sort": args.sort}
    answer = _ask("playlist", values, args)
    steps = answer["playlist"]
    if args.output:
        with _collection() as collection:
            tracks = [collection.track(step["track"]["content_key"]) for step in steps]
        write_m3u8([track for track in tracks if track is not None], Path(args.output),
                   relative_to=Path(args.relative_to) if args.relative_to else None)
        print(f"wrote {args.output}: {len(steps)} tracks")
    elif args.json:
        _print_json(answer)
    else:
        _print_suggestions(f"{len(steps)} tracks:", steps)
    if not answer["complete"]:
        print(f"(only {len(steps)} of {args.length}: nothing more mixes after the last one within the rules)",
              file=sys.stderr)
    return EXIT_OK


def export_library(args) -> int:
    """``cratesense export --format rekordbox|traktor|m3u --output FILE [filters]``."""
    from cratesense.dj.exports import export
    from cratesense.dj.usecases import export_tracks

    values = {**_filters(args), "format": args.format, "sort": args.sort, "limit": args.limit}
    with _collection() as collection:
        format, tracks = export_tracks(collection, values)
    output = Path(args.output)
    if output.is_dir():
        output = output / {"rekordbox": "cratesense-rekordbox.xml", "traktor": "cratesense.nml",
                           "m3u": "cratesense.m3u8"}[format]
    export(tracks, format, output, name=args.name, relative_to=Path(args.relative_to) if args.relative_to else None)
    print(f"wrote {output}: {len(tracks)} tracks")
    return EXIT_OK


def _cmd_duplicates(args) -> int:
    answer = _ask("duplicates", {}, args)
    if args.json:
        _print_json(answer)
        return EXIT_OK
    groups = answer["groups"]
    if not groups:
        print("no duplicates: every recording is in one file")
        return EXIT_OK
    for group in groups:
        files = group["files"]
        print(f"{_label(files[0])} — {len(files)} files"
              + (f" (fingerprints match at {group['score']:.2f})" if group["score"] < 1 else ""))
        for copy in files:
            quality = "lossless" if copy["lossless"] else f"{copy['bitrate_kbps']:.0f} kb/s" if copy["bitrate_kbps"] else "?"
            top = f"to {copy['cutoff_khz']:.1f} kHz" if copy["cutoff_khz"] is not None else ""
            print(f"  {'keep' if copy['keep'] else '    '}  {copy['format']:<7} {quality:<9} {top:<12} "
                  f"tags {copy['tags_filled']}/5  {copy['path']}")
            for why in (copy["transcode"], copy["holds_less"]):
                if why:
                    print(f"        {why}")
    print(f"\n{len(groups)} group(s); nothing was deleted")
    return EXIT_OK


def _fields(text: str) -> tuple[str, ...]:
    from cratesense.dj.usecases import tag_fields
    from cratesense.errors import QueryError

    try:
        return tag_fields({"fields": text})
    except QueryError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _cmd_tags_write(args) -> int:
    """Through the running agent (its worker writes, its journal learns the new identities), or,
    with the agent stopped, here, holding the agent's lock so none starts meanwhile."""
    from cratesense.daemon.control_client import request
    from cratesense.errors import NotRunningError

    try:
        answer = request("POST", "tags", {"tracks": args.tracks, "fields": list(args.fields or ()),
                                          "dry_run": args.dry_run, "include_uncertain": args.include_uncertain,
                                          "replace_words": args.replace_words},
                         timeout=3600)
        files = answer["files"]
    except NotRunningError:
        files = _write_tags_here(args)
    failed = 0
    for result in files:
        if result["error"]:
            failed += 1
            continue
        for change in result["changes"]:
            print(f"{result['path']}: {change}")
        for note in result.get("notes") or ():
            print(f"{result['path']}: {note}")
    changed = sum(1 for result in files if result["changes"] and not result["error"])
    verb = "would change" if args.dry_run else "changed"
    print(f"{verb} {changed} of {len(files)} file(s)" + (" (dry run: nothing written)" if args.dry_run else ""))
    for result in files:
        if result["error"]:
            print(f"cratesense: {result['error']}", file=sys.stderr)
    return 1 if failed else EXIT_OK


def _write_tags_here(args) -> list[dict]:
    from cratesense.daemon.instance import InstanceLock
    from cratesense.daemon.journal import FileIdentity, Journal
    from cratesense.daemon.paths import data_dir, journal_path
    from cratesense.dj.collection import Collection
    from cratesense.dj.tagging import retag, wanted_for
    from cratesense.dj.usecases import tag_plan
    from cratesense.errors import QueryError

    notation = _settings(args).key_notation
    if not journal_path().exists():
        raise QueryError("there is no library yet: the agent has not run (cratesense run ~/Music)")
    results = []
    with InstanceLock(data_dir() / "agent.lock"), Journal(journal_path()) as journal:
        plan = tag_plan(Collection(journal), {"tracks": args.tracks, "fields": list(args.fields or ()),
                                               "include_uncertain": args.include_uncertain,
                                               "replace_words": args.replace_words, "dry_run": args.dry_run})
        for track, paths in plan.tracks:
            for path in paths:
                done = retag(path, wanted_for(track, include_uncertain=plan.include_uncertain,
                                              replace_words=plan.replace_words), plan.fields, notation,
                             dry_run=plan.dry_run)
                if done.identity is not None and done.content_key is not None:
                    journal.retagged(path, FileIdentity(*done.identity), done.content_key)
                results.append({"path": done.path, "changes": [c.describe() for c in done.changes],
                                "error": done.error, "notes": list(done.notes)})
    return results


def _cmd_recommendations(args) -> int:
    from cratesense.daemon.control_client import request

    answer = request("GET", "recommendations", timeout=60)
    if args.json:
        print(json.dumps(answer, indent=1, ensure_ascii=False))
        return EXIT_OK
    found = answer.get("recommendations") or []
    if not found:
        print("nothing to recommend yet (the catalog needs contributors whose taste is near yours)")
        return EXIT_OK
    print("DJs with similar taste also have:")
    for item in found:
        metadata, analysis = item.get("metadata") or {}, item.get("analysis") or {}
        name = " - ".join(part for part in (metadata.get("artist"), metadata.get("title")) if part) or "(untitled)"
        bpm = f"{analysis['bpm']:.1f} BPM" if analysis.get("bpm") else ""
        key = analysis.get("camelot") or ""
        print(f"  {name}  {bpm} {key}  ({item.get('reason') or 'held by DJs with a taste like yours'})")
    return EXIT_OK
