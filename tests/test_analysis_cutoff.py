"""The cutoff stage: where a file's spectrum stops, measured during analysis, on real encodes and
transcodes made by Debian's ffmpeg (what users encode with)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pytest

from audiogen import encode, synth_track
from cratesense.analysis.cutoff import FRAME, CutoffMeter, spectrum_cutoff
from cratesense.analysis.pipeline import analyze_file

SR = 44100


def _ffmpeg(source: Path, target: Path, *arguments: str) -> Path:
    subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-y", "-i", str(source), *arguments, str(target)], check=True)
    return target


@pytest.fixture(scope="module")
def encodes(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("cutoff")
    original = encode(synth_track(bpm=124, tonic=9, minor=True, seconds=30, seed=5), SR, folder / "original.flac")
    mp3 = _ffmpeg(original, folder / "128.mp3", "-c:a", "libmp3lame", "-b:a", "128k")
    return {
        "original": original,
        "128": mp3,
        "320": _ffmpeg(original, folder / "320.mp3", "-c:a", "libmp3lame", "-b:a", "320k"),
        "flac from 128": _ffmpeg(mp3, folder / "from-128.flac", "-c:a", "flac"),
        "320 from 128": _ffmpeg(mp3, folder / "320-from-128.mp3", "-c:a", "libmp3lame", "-b:a", "320k"),
        "opus from 128": _ffmpeg(mp3, folder / "from-128.opus", "-c:a", "libopus", "-b:a", "96k"),
    }


def test_a_transcode_keeps_its_sources_edge(encodes):
    analyses = {name: analyze_file(path) for name, path in encodes.items()}
    cutoff = {name: analysis.descriptors.cutoff_hz for name, analysis in analyses.items()}
    assert cutoff["original"] == SR / 2  # a lossless recording runs to the top
    assert 15_500 <= cutoff["128"] <= 18_000  # LAME's lowpass at 128 kb/s
    assert cutoff["320"] >= 19_500  # ... at 320 kb/s
    for name in ("flac from 128", "320 from 128"):  # lossy to lossless, lossy to lossy: the ~16 kHz edge stays
        assert abs(cutoff[name] - cutoff["128"]) <= 300, (name, cutoff)
    assert cutoff["opus from 128"] >= 19_500  # Opus fills its top octave: its edge says nothing of its source
    assert analyses["128"].audio.bitrate == 128_000 and analyses["320"].audio.bitrate == 320_000
    assert analyses["original"].audio.bitrate is None  # FLAC states none: the file's size tells


def test_the_edge_is_a_wall_not_a_slope_or_a_dip():
    bins = FRAME // 2 + 1
    frequency = np.linspace(0, SR / 2, bins)
    music = -20.0 - frequency / 1000  # a little darker every kHz
    wall = np.where(frequency < 16_000, music, -130.0)
    assert abs(spectrum_cutoff(wall, SR) - 16_000) <= 50
    slope = np.where(frequency < 12_000, music, music - 6.0 * (frequency - 12_000) / 1000)  # -6 dB per kHz
    assert spectrum_cutoff(slope, SR) == SR / 2
    dip = np.where((frequency > 15_000) & (frequency < 15_400), -120.0, music)  # between two partials
    assert spectrum_cutoff(dip, SR) == SR / 2
    assert spectrum_cutoff(np.where(frequency < 9_000, music, -130.0), SR) == SR / 2  # the music's own, not an encoder's


def test_too_little_sound_gives_no_measure():
    meter = CutoffMeter(SR)
    quiet = (1e-4 * np.sin(2 * np.pi * 440 * np.arange(20 * SR) / SR)).astype(np.float32)
    for start in range(0, quiet.size, 65_536):
        meter.feed(np.stack([quiet[start : start + 65_536]] * 2))
    assert meter.finish() is None
