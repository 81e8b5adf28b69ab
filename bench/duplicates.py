"""Duplicates on real recordings: are every re-encode of a track and its trimmed copy found, is
no group made of different recordings, and is the original the copy kept?

    nice .venv/bin/python bench/duplicates.py [--folder DIR] [--keep-journal HOME] [--tracks 50 --distinct 200]

The data set (``build_duplicate_set``), made once and cached under ~/.cache/cratesense-bench:
50 real tracks (Debian game-music packages, bench/soundtracks.py), each as shipped (Ogg Vorbis or
Opus: a lossy original) and re-encoded from it with Debian's ffmpeg as MP3 128k, Opus 64k, MP3
320k (a lossy-to-lossy transcode to a higher bitrate) and FLAC (lossy to lossless), plus a FLAC
with its first 2 s cut off; 200 other real tracks once each; and, when bench/devset.py has
rendered them, 20 lossless originals (MIDI through FluidR3 and TimGM6mb, FLAC) each with an MP3
128k, an MP3 320k, an AAC 256k, an Opus 64k and a FLAC decoded from the MP3 128k. Every version
lives in its own folder (``mp3-128k/``, ``opus-64k/``, ...), as copies do in a real library.

The measure: a real ``cratesense scan`` of the folder into a fresh journal, then ``cratesense
duplicates --json`` (a cold CLI process, as a DJ runs it). Recall: the share of re-encodes
found in the same group as their track's original, and the share of tracks whose group holds
all its versions and nothing else. False groups: groups that join files of different
recordings. The keeper: how often the original is the copy ``duplicates`` keeps; and per
version, how often it is called a transcode, a copy that holds less of the recording, or
neither (an original must be neither; Opus fills its top octave, so nothing is said of it).
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
LOSSLESS = 20
TRIM_SECONDS = 2.0
_MP3_128 = ("-c:a", "libmp3lame", "-b:a", "128k")
VERSIONS = {  # folder -> (extension, ffmpeg arguments), each made from the (lossy) original
    "mp3-128k": (".mp3", _MP3_128),
    "opus-64k": (".opus", ("-c:a", "libopus", "-b:a", "64k")),
    "mp3-320k": (".mp3", ("-c:a", "libmp3lame", "-b:a", "320k")),
    "flac": (".flac", ("-c:a", "flac")),
    "trimmed": (".flac", ("-ss", f"{TRIM_SECONDS}", "-c:a", "flac")),
}
LOSSLESS_VERSIONS = {  # folder -> (extension, ffmpeg arguments, made from: None the original, or a version)
    "ll-mp3-128k": (".mp3", _MP3_128, None),
    "ll-mp3-320k": (".mp3", ("-c:a", "libmp3lame", "-b:a", "320k"), None),
    "ll-aac-256k": (".m4a", ("-c:a", "aac", "-b:a", "256k"), None),
    "ll-opus-64k": (".opus", ("-c:a", "libopus", "-b:a", "64k"), None),
    "ll-flac-from-mp3": (".flac", ("-c:a", "flac"), "ll-mp3-128k"),
}
LOSSLESS_SUBSETS = ("edm-midi-fluidr3", "edm-midi-timgm")  # bench/devset.py's renders
# What a version is, for the keeper's measure: a transcode of a lossy original (it must never be
# kept over it), a lower encode (any flag is right), or one nothing can be said of (Opus).
TRANSCODES = {"flac", "trimmed", "mp3-320k", "ll-flac-from-mp3"}
SILENT = {"opus-64k", "ll-opus-64k"}
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


def _lossless_originals(count: int) -> list[Path]:
    """Lossless renders bench/devset.py made (FLAC), spread over its electronic MIDI subsets."""
    from devset import CACHE as DEVSET

    found = [path for subset in LOSSLESS_SUBSETS for path in sorted((DEVSET / subset).glob("*.flac"))]
    return found[:: max(1, len(found) // count)][:count] if found else []


def build_duplicate_set(folder: Path = DEFAULT_FOLDER, re_encoded_count: int = RE_ENCODED,
                        distinct_count: int = DISTINCT, lossless_count: int = LOSSLESS) -> dict[str, list[Path]]:
    """Group id -> its files, the original first (its versions for the re-encoded tracks and the
    lossless originals, one file for the distinct ones). Files already there are reused, so a
    second call only lists them."""
    tracks = _real_tracks()
    if len(tracks) < re_encoded_count + distinct_count:
        raise RuntimeError(f"only {len(tracks)} real tracks found; {re_encoded_count + distinct_count} needed")
    step = len(tracks) / re_encoded_count  # spread over every package, not the first few
    chosen = {int(index * step) for index in range(re_encoded_count)}
    re_encoded = [tracks[index] for index in sorted(chosen)]
    distinct = [track for index, track in enumerate(tracks) if index not in chosen][:distinct_count]
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
    for path in _lossless_originals(lossless_count):
        name = f"render--{path.parent.name}--{path.stem}"
        files = {"original": _copy(path, folder / "lossless-original" / f"{name}.flac")}
        for version, (extension, arguments, source) in LOSSLESS_VERSIONS.items():
            target = folder / version / f"{name}{extension}"
            if not target.exists():
                _encode(files[source or "original"], target, arguments)
            files[version] = target
        groups[name] = list(files.values())
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


def score(expected: dict[str, list[Path]], found: list[list[Path]], found_answer: list[dict] | None = None) -> dict:
    """Recall and false groups of ``found`` (lists of files) against ``expected``; with
    ``found_answer`` (the groups of ``duplicates --json``), the keeper's measure too."""
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
    keeper = _keeper(expected, found_answer) if found_answer is not None else None
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
        "keeper": keeper,
    }


def _keeper(expected: dict[str, list[Path]], answer: list[dict]) -> dict:
    """How often each group's original is the copy kept (lossy and lossless originals apart),
    and per version how often ``duplicates`` called it a transcode, a copy holding less, or
    neither."""
    verdict: dict[Path, tuple[bool, str]] = {}
    for group in answer:
        for entry in group["files"]:
            said = "transcode" if entry.get("transcode") else "holds less" if entry.get("holds_less") else "neither"
            verdict[Path(entry["path"]).resolve()] = (bool(entry["keep"]), said)
    kept = {"lossy": [0, 0], "lossless": [0, 0]}
    said: dict[str, dict[str, int]] = {}
    for paths in expected.values():
        if len(paths) < 2:
            continue
        kind = "lossless" if paths[0].parent.name == "lossless-original" else "lossy"
        kept[kind][1] += 1
        kept[kind][0] += int(verdict.get(paths[0].resolve(), (False, ""))[0])
        for path in paths:
            version = "original" if path == paths[0] else path.parent.name
            version = f"{kind} original" if version == "original" else version
            counts = said.setdefault(version, {"transcode": 0, "holds less": 0, "neither": 0, "not found": 0})
            counts[verdict.get(path.resolve(), (False, "not found"))[1]] += 1
    return {"kept": kept, "said": said}


def run_duplicates(folder: Path, home: Path) -> tuple[list[dict], float, float]:
    """A real scan into a fresh journal, then ``cratesense duplicates --json``; its groups, the
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
    return json.loads(result.stdout)["groups"], scanned, answered


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--folder", type=Path, default=DEFAULT_FOLDER, help="where the data set is made (cached)")
    parser.add_argument("--keep-journal", type=Path, help="scan into this home folder and keep it")
    parser.add_argument("--tracks", type=int, default=RE_ENCODED, help="real tracks re-encoded")
    parser.add_argument("--distinct", type=int, default=DISTINCT, help="other real tracks, once each")
    parser.add_argument("--lossless", type=int, default=LOSSLESS, help="lossless originals (bench/devset.py's renders)")
    arguments = parser.parse_args()
    expected = build_duplicate_set(arguments.folder, arguments.tracks, arguments.distinct, arguments.lossless)
    files = sum(len(paths) for paths in expected.values())
    lossless = sum(1 for name in expected if name.startswith("render--"))
    print(f"data set: {arguments.folder} ({files} files: {arguments.tracks} real tracks x {1 + len(VERSIONS)} "
          f"versions, {lossless} lossless originals x {1 + len(LOSSLESS_VERSIONS)}, {arguments.distinct} distinct)",
          flush=True)
    if arguments.keep_journal:
        answer, scanned, answered = run_duplicates(arguments.folder, arguments.keep_journal)
    else:
        with tempfile.TemporaryDirectory(prefix="cratesense-duplicates-") as home:
            answer, scanned, answered = run_duplicates(arguments.folder, Path(home))
    found = [[Path(entry["path"]) for entry in group["files"]] for group in answer]
    result = score(expected, found, answer)
    print(f"scan {scanned:.0f} s; duplicates answered in {answered:.2f} s (cold CLI)")
    print(f"re-encodes found with their original: {result['re_encodes_found']}/{result['re_encodes']} "
          f"({result['recall']:.1%})")
    for version, share in sorted(result["per_version"].items()):
        print(f"  {version:<18} {share:.0%}")
    print(f"tracks whose group is exactly their files: {result['complete_groups']}/{result['tracks']}")
    print(f"false groups (different recordings joined): {len(result['false_groups'])}")
    for names in result["false_groups"]:
        print("  " + " + ".join(names))
    keeper = result["keeper"]
    for kind, (kept, total) in keeper["kept"].items():
        if total:
            print(f"the {kind} original is the copy kept: {kept}/{total} ({kept / total:.0%})")
    print(f"\n{'what duplicates says of it':28}{'transcode':>10}{'holds less':>11}{'neither':>9}{'not found':>10}   expected")
    for version, counts in sorted(keeper["said"].items()):
        expectation = ("neither" if version.endswith("original") else "nothing (fills its top)" if version in SILENT
                       else "transcode or holds less" if version in TRANSCODES else "holds less (a lower encode)")
        print(f"{version:28}{counts['transcode']:>10}{counts['holds less']:>11}{counts['neither']:>9}"
              f"{counts['not found']:>10}   {expectation}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
