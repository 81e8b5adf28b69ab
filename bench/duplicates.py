"""Duplicates on real recordings: are every re-encode of a track and its trimmed copy found, and is
no group made of different recordings?

    flock -s /work/heavy.lock .venv/bin/python bench/duplicates.py [--folder DIR] [--keep-journal]

The data set (``build_duplicate_set``), made once and cached under ~/.cache/cratesense-bench:
50 real tracks (Debian game-music packages, bench/soundtracks.py), each as shipped (Ogg Vorbis or
Opus) and re-encoded with Debian's ffmpeg as MP3 128k, Opus 64k and FLAC, plus a FLAC with its
first 2 s cut off; and 200 other real tracks once each. Every version lives in its own folder
(``mp3/``, ``opus/``, ...), as copies do in a real library.

The measure, when ``cratesense.dj.duplicates`` exists: a real ``cratesense scan`` of the folder
into a fresh journal, then ``cratesense duplicates --json`` (a cold CLI process, as a DJ runs
it). Recall: the share of re-encodes found in the same group as their track's original, and the
share of tracks whose group holds all five versions and nothing else. False groups: groups that
join files of different recordings.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from soundtracks import CACHE, SETS, debian_ffmpeg, soundtrack

RE_ENCODED = 50
DISTINCT = 200
TRIM_SECONDS = 2.0
VERSIONS = {  # folder -> (extension, ffmpeg arguments)
    "mp3-128k": (".mp3", ("-c:a", "libmp3lame", "-b:a", "128k")),
    "opus-64k": (".opus", ("-c:a", "libopus", "-b:a", "64k")),
    "flac": (".flac", ("-c:a", "flac")),
    "trimmed": (".flac", ("-ss", f"{TRIM_SECONDS}", "-c:a", "flac")),
}
DEFAULT_FOLDER = CACHE / "duplicates"


def _real_tracks() -> list[tuple[str, Path]]:
    """Every track of the soundtrack packages, minus remasters shipped beside their original
    (warzone2100's ``track3_enhanced`` next to ``track3``: another master of the same music, not
    a distinct recording, and not a re-encode either)."""
    tracks = []
    for packages in SETS.values():
        for package, under in packages.items():
            files = soundtrack(package, under, limit=1000)
            stems = {path.stem for path in files}
            tracks.extend(
                (package, path) for path in files
                if not (path.stem.endswith("_enhanced") and path.stem.removesuffix("_enhanced") in stems)
            )
    return tracks


def _name(package: str, path: Path) -> str:
    return f"{package}--{path.stem}".replace(" ", "_")


def build_duplicate_set(folder: Path = DEFAULT_FOLDER) -> dict[str, list[Path]]:
    """Group id -> its files (five versions for the re-encoded tracks, one for the distinct
    ones). Files already there are reused, so a second call only lists them."""
    tracks = _real_tracks()
    if len(tracks) < RE_ENCODED + DISTINCT:
        raise RuntimeError(f"only {len(tracks)} real tracks found; {RE_ENCODED + DISTINCT} needed")
    step = len(tracks) / RE_ENCODED  # spread over every package, not the first few
    chosen = {int(index * step) for index in range(RE_ENCODED)}
    re_encoded = [tracks[index] for index in sorted(chosen)]
    distinct = [track for index, track in enumerate(tracks) if index not in chosen][:DISTINCT]
    groups: dict[str, list[Path]] = {}
    for package, path in re_encoded:
        name = _name(package, path)
        files = [_copy(path, folder / "original" / f"{name}{path.suffix}")]
        for version, (extension, arguments) in VERSIONS.items():
            target = folder / version / f"{name}{extension}"
            if not target.exists():
                _encode(path, target, arguments)
            files.append(target)
        groups[name] = files
    for package, path in distinct:
        name = _name(package, path)
        groups[name] = [_copy(path, folder / "distinct" / f"{name}{path.suffix}")]
    return groups


def _copy(source: Path, target: Path) -> Path:
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(".partial-" + target.name)
        partial.write_bytes(source.read_bytes())
        partial.rename(target)
    return target


def _encode(source: Path, target: Path, arguments: tuple[str, ...]) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(".partial-" + target.name)  # hidden: a scan never sees half a file
    seek, rest = (arguments[:2], arguments[2:]) if arguments[0] == "-ss" else ((), arguments)
    debian_ffmpeg(*seek, "-i", str(source), "-map", "0:a:0", *rest, str(partial))
    partial.rename(target)


def score(expected: dict[str, list[Path]], found: list[list[Path]]) -> dict:
    """Recall and false groups of ``found`` (lists of files) against ``expected``."""
    group_of = {path.resolve(): name for name, paths in expected.items() for path in paths}
    found_of: dict[Path, int] = {}
    false_groups = []
    for index, files in enumerate(found):
        names = {group_of.get(Path(path).resolve(), f"unknown:{path}") for path in files}
        for path in files:
            found_of[Path(path).resolve()] = index
        if len(names) > 1:
            false_groups.append(sorted(names))
    copies = {name: paths for name, paths in expected.items() if len(paths) > 1}
    per_version: dict[str, list[bool]] = {}
    complete = 0
    for name, paths in copies.items():
        original = found_of.get(paths[0].resolve())
        for path in paths[1:]:
            per_version.setdefault(path.parent.name, []).append(
                original is not None and found_of.get(path.resolve()) == original
            )
        members = [group_of.get(Path(p).resolve()) for p in found[original]] if original is not None else []
        complete += int(original is not None and members.count(name) == len(paths) == len(members))
    found_versions = sum(sum(values) for values in per_version.values())
    all_versions = sum(len(values) for values in per_version.values())
    return {
        "tracks": len(copies),
        "distinct": len(expected) - len(copies),
        "re_encodes_found": found_versions,
        "re_encodes": all_versions,
        "recall": found_versions / all_versions if all_versions else 0.0,
        "per_version": {version: sum(values) / len(values) for version, values in per_version.items()},
        "complete_groups": complete,
        "false_groups": false_groups,
        "groups_found": len(found),
    }


def run_duplicates(folder: Path, home: Path) -> tuple[list[list[Path]], float, float]:
    """A real scan into a fresh journal, then ``cratesense duplicates --json``; the groups, the
    scan's and the command's wall seconds."""
    from agentproc import AgentProcess, write_config

    write_config(home, folder, analysis={"workers": 2, "timeout_seconds": 600})
    agent = AgentProcess(home)
    started = time.monotonic()
    scan = agent.cli("scan", timeout=6 * 3600)
    scanned = time.monotonic() - started
    if scan.returncode not in (0, 1):  # 1: some files could not be analyzed (listed)
        raise RuntimeError(f"cratesense scan failed ({scan.returncode}): {scan.stderr.strip()[-500:]}")
    started = time.monotonic()
    result = agent.cli("duplicates", "--json", timeout=600)
    answered = time.monotonic() - started
    if result.returncode != 0:
        raise RuntimeError(f"cratesense duplicates failed ({result.returncode}): {result.stderr.strip()[-500:]}")
    groups = [[Path(entry["path"]) for entry in group["files"]] for group in json.loads(result.stdout)["groups"]]
    return groups, scanned, answered


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--folder", type=Path, default=DEFAULT_FOLDER, help="where the data set is made (cached)")
    parser.add_argument("--keep-journal", type=Path, help="scan into this home folder and keep it")
    arguments = parser.parse_args()
    try:
        import cratesense.dj.duplicates  # noqa: F401
    except ImportError:
        print("cratesense.dj.duplicates does not exist yet: nothing to measure (the data set is "
              "built by build_duplicate_set)")
        return 0
    expected = build_duplicate_set(arguments.folder)
    files = sum(len(paths) for paths in expected.values())
    print(f"data set: {arguments.folder} ({files} files: {RE_ENCODED} tracks x {1 + len(VERSIONS)} versions, "
          f"{DISTINCT} distinct)", flush=True)
    if arguments.keep_journal:
        found, scanned, answered = run_duplicates(arguments.folder, arguments.keep_journal)
    else:
        with tempfile.TemporaryDirectory(prefix="cratesense-duplicates-") as home:
            found, scanned, answered = run_duplicates(arguments.folder, Path(home))
    result = score(expected, found)
    print(f"scan {scanned:.0f} s; duplicates answered in {answered:.2f} s (cold CLI)")
    print(f"re-encodes found with their original: {result['re_encodes_found']}/{result['re_encodes']} "
          f"({result['recall']:.1%})")
    for version, share in sorted(result["per_version"].items()):
        print(f"  {version:<10} {share:.0%}")
    print(f"tracks whose group is exactly their {1 + len(VERSIONS)} files: {result['complete_groups']}/{result['tracks']}")
    print(f"false groups (different recordings joined): {len(result['false_groups'])}")
    for names in result["false_groups"]:
        print("  " + " + ".join(names))
    return 0


if __name__ == "__main__":
    sys.exit(main())
