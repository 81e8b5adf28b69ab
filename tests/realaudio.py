"""Real recordings from Debian's music packages, fetched into a cache outside the repository
(``apt-get download`` + ``dpkg -x``: nothing is installed)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

PACKAGES = ("wesnoth-1.16-music", "warzone2100-music")
CACHE = Path(os.environ.get("CRATESENSE_TEST_AUDIO_CACHE", Path.home() / ".cache" / "cratesense-test-audio"))
AUDIO_SUFFIXES = {".ogg", ".opus", ".mp3", ".flac", ".wav"}


def fetch(packages=PACKAGES, cache: Path = CACHE) -> list[Path]:
    """Every audio file of the packages, downloading and unpacking what is not cached yet."""
    cache.mkdir(parents=True, exist_ok=True)
    for package in packages:
        unpacked = cache / package
        if (unpacked / ".complete").exists():
            continue
        debs = list(cache.glob(f"{package}_*.deb"))
        if not debs:
            result = subprocess.run(["apt-get", "download", package], cwd=cache, capture_output=True, text=True)
            if result.returncode != 0 and os.geteuid() == 0:
                subprocess.run(["apt-get", "update", "-qq"], check=True)
                result = subprocess.run(["apt-get", "download", package], cwd=cache, capture_output=True, text=True)
            if result.returncode != 0:
                raise RuntimeError(f"apt-get download {package} failed: {result.stderr.strip()}")
            debs = list(cache.glob(f"{package}_*.deb"))
        subprocess.run(["dpkg", "-x", str(debs[0]), str(unpacked)], check=True)
        (unpacked / ".complete").touch()
    return sorted(
        path
        for package in packages
        for path in (cache / package).rglob("*")
        if path.suffix.lower() in AUDIO_SUFFIXES and path.is_file()
    )
