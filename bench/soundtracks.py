"""Real recordings grouped by soundtrack: Debian packages that each hold one game's music (one
composer or one team), fetched with ``apt-get download`` + ``dpkg -x`` into
``~/.cache/cratesense-bench`` (nothing is installed). Used by bench/similar.py (is a track's
nearest neighbour from its own soundtrack?) and bench/duplicates.py (real tracks to re-encode).

The packages are split once, before any feature was chosen, into a development set (features and
weights were chosen looking at it only) and a held-out set (reported, never tuned on); a third,
"unseen", was added for the learned embedding (#27) before anything was measured on it.
"""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import av

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from realaudio import fetch

CACHE = Path(os.environ.get("CRATESENSE_BENCH_CACHE", Path.home() / ".cache" / "cratesense-bench"))

# package -> a folder name its music lives under ("" = anywhere in the package).
DEVELOPMENT = {
    "drascula-music": "",
    "freedroidrpg-data": "music",
    "hedgewars-data": "Music",
    "hyperrogue-music": "",
    "singularity-music": "",
    "warzone2100-music": "",
    "wesnoth-1.16-music": "",
    "openclonk-data": "Music.ocg",
}
HELD_OUT = {
    "flare-game": "music",
    "planetblupi-music-ogg": "",
    "supertux-data": "music",
    "warmux-data": "music",
    "ufoai-music": "",
    "nexuiz-music": "",
    "extremetuxracer-data": "music",
    "xmoto-data": "Musics",
}
# Chosen for issue #27 before anything was measured on them, and never used to fit or choose
# anything: the second held-out set (the first had been reported on while v2 was chosen).
UNSEEN = {
    "colobot-common-sounds": "music",
    "fillets-ng-data": "music",
    "lugaru-data": "Sounds",
    "marsshooter-data": "music",
    "starfighter-data": "music",
    "pushover-data": "themes",
}
SETS = {"development": DEVELOPMENT, "held-out": HELD_OUT, "unseen": UNSEEN}
AUDIO_SUFFIXES = {".ogg", ".opus", ".mp3", ".flac"}
MIN_SECONDS = 30.0  # jingles and stingers are not tracks


def _unpack_archives(folder: Path) -> None:
    """Some games ship their music inside a zip (Quake-style .pk3): unpack it beside."""
    for archive in folder.rglob("*.pk3"):
        target = archive.with_suffix(".unpacked")
        if not (target / ".complete").exists():
            with zipfile.ZipFile(archive) as zipped:
                zipped.extractall(target)
            (target / ".complete").touch()


def _seconds(path: Path) -> float:
    try:
        with av.open(str(path), metadata_errors="replace") as container:
            stream = container.streams.audio[0]
            if stream.duration is not None and stream.time_base is not None:
                return float(stream.duration * stream.time_base)
            return (container.duration or 0) / av.time_base
    except (av.error.FFmpegError, IndexError):
        return 0.0  # a few real files do not open in FFmpeg (platform notes): not part of the set


def soundtrack(package: str, under: str = "", limit: int = 15) -> list[Path]:
    """Up to ``limit`` tracks of one package, in name order: real files (no symlinks: some
    packages link one file into several folders), at least MIN_SECONDS long."""
    packages = CACHE / "packages"
    fetch((package,), packages)
    _unpack_archives(packages / package)
    found = sorted(
        path
        for path in (packages / package).rglob("*")
        if path.suffix.lower() in AUDIO_SUFFIXES
        and path.is_file()
        and not path.is_symlink()
        and (not under or under in path.parts)
    )
    return [path for path in found if _seconds(path) >= MIN_SECONDS][:limit]


def labelled_set(name: str, limit: int = 15) -> list[tuple[str, Path]]:
    """(package, file) pairs of one of SETS."""
    return [(package, path) for package, under in SETS[name].items() for path in soundtrack(package, under, limit)]


def debian_ffmpeg(*arguments: str) -> None:
    """Debian's ffmpeg (PyAV has no libvorbis, and its bundled FFmpeg is not what users encode
    with); raises with FFmpeg's last line on failure."""
    result = subprocess.run(
        ["ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "error", "-y", *arguments],
        capture_output=True,
        text=True,
    )
    if result.returncode != 0:
        raise RuntimeError(f"ffmpeg failed: {result.stderr.strip().splitlines()[-1:]}")
