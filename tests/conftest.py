"""Shared fixtures: test audio is synthesized and encoded here, once per session."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from audiogen import FORMATS, encode, fingerprintable_track, synth_track

SR = 44100


@pytest.fixture(scope="session")
def tracks(tmp_path_factory) -> list[Path]:
    """Six different 24 s tracks (FLAC) the catalog accepts, outside any watched folder."""
    folder = tmp_path_factory.mktemp("source")
    return [encode(fingerprintable_track(i), SR, folder / f"s{i}.flac") for i in range(6)]


@pytest.fixture(scope="session")
def track_30s():
    """A 30 s A-minor track at 128 BPM (stereo float32, 44.1 kHz)."""
    return synth_track(bpm=128, tonic=9, minor=True, seconds=30, seed=1)


@pytest.fixture(scope="session")
def formats_dir(tmp_path_factory, track_30s) -> dict[str, Path]:
    """The same 30 s track encoded into every format the agent reads: extension -> path."""
    folder = tmp_path_factory.mktemp("formats")
    return {ext: encode(track_30s, SR, folder / f"track.{ext}") for ext in FORMATS}


@pytest.fixture(scope="session")
def long_formats_dir(tmp_path_factory) -> dict[str, Path]:
    """A 130 s track in every format: long enough that Debian's fpcalc exits 0 on it.

    Ogg Vorbis is encoded by Debian's ffmpeg with libvorbis, as real .ogg files are made:
    PyAV's FFmpeg has only the experimental native Vorbis encoder, whose streams FFmpeg 5.1
    (fpcalc's) and FFmpeg 8 (PyAV's) decode differently.
    """
    folder = tmp_path_factory.mktemp("long")
    samples = synth_track(bpm=100, tonic=2, minor=False, seconds=130, seed=2)
    files = {ext: encode(samples, SR, folder / f"long.{ext}") for ext in FORMATS if ext != "ogg"}
    if shutil.which("ffmpeg"):
        ogg = folder / "long.ogg"
        subprocess.run(
            ["ffmpeg", "-v", "error", "-y", "-i", str(files["wav"]), "-c:a", "libvorbis", str(ogg)],
            check=True,
        )
        files["ogg"] = ogg
    return files


def fpcalc(path: Path) -> tuple[int, dict | None]:
    """fpcalc's exit status and its JSON (which it prints even when it exits 3)."""
    import json

    result = subprocess.run(["fpcalc", "-json", str(path)], capture_output=True, text=True)
    return result.returncode, (json.loads(result.stdout) if result.stdout.strip() else None)


requires_fpcalc = pytest.mark.skipif(
    shutil.which("fpcalc") is None, reason="fpcalc not installed (apt-get install libchromaprint-tools)"
)


@pytest.fixture(scope="session")
def catalog_fingerprints(tmp_path_factory):
    """(source, encode) -> (chromaprint, duration): 5 different tracks, source 0 in 8 encodes."""
    from catalogkit import make_fingerprints

    return make_fingerprints(tmp_path_factory.mktemp("catalog-audio"))
