"""Fingerprint cost, side by side in one run: decode-only, our fingerprint+tags, and fpcalc.

    python bench/fingerprint.py [FOLDER ...]

Without a folder it uses the real recordings cached by the opt-in test suite check (or, if
absent, synthesizes a few 3-minute tracks). Every measurement runs on the same files in the
same process (fpcalc as the subprocess a peer would run), best of ``--repeat`` runs; only ratios
are meant to be compared across machines.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import av

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from cratesense.analysis.constants import AUDIO_EXTENSIONS
from cratesense.analysis.decode import AudioFile
from cratesense.analysis.fingerprint import FINGERPRINT_SECONDS
from cratesense.analysis.pipeline import analyze_file
from cratesense.errors import AnalysisError


def decode_only(path: Path, seconds: float | None) -> None:
    """The reference: FFmpeg decoding the same span, no resampling, no analysis."""
    with av.open(str(path)) as container:
        stream = container.streams.audio[0]
        stream.thread_type = "AUTO"
        decoded = 0.0
        for frame in container.decode(stream):
            decoded += frame.samples / frame.sample_rate
            if seconds is not None and decoded >= seconds:
                return


def our_resampled_decode(path: Path, seconds: float | None) -> None:
    with AudioFile(path) as audio:
        for _ in audio.blocks(max_seconds=seconds):
            pass


def fpcalc(path: Path) -> None:
    subprocess.run(["fpcalc", "-json", str(path)], capture_output=True, check=False)


def tolerant(action):
    """Files we refuse (a silent track in the real set) still cost their decode; count it."""

    def run(path: Path) -> None:
        try:
            action(path)
        except AnalysisError:
            pass

    return run


def best_of(repeat: int, files: list[Path], action) -> float:
    best = float("inf")
    for _ in range(repeat):
        started = time.perf_counter()
        for path in files:
            tolerant(action)(path)
        best = min(best, time.perf_counter() - started)
    return best


def default_files() -> list[Path]:
    from realaudio import CACHE

    cached = sorted(p for p in CACHE.rglob("*") if p.suffix.lower() in AUDIO_EXTENSIONS) if CACHE.exists() else []
    if cached:
        return cached
    from audiogen import encode, synth_track

    folder = Path(tempfile.mkdtemp(prefix="cratesense-bench-"))
    files = []
    for index, ext in enumerate(("mp3", "flac", "ogg", "opus", "m4a", "wav")):
        samples = synth_track(bpm=90 + 10 * index, tonic=index, seconds=180, seed=index)
        files.append(encode(samples, 44100, folder / f"track{index}.{ext}"))
    return files


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folders", nargs="*", type=Path)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    if args.folders:
        files = sorted(p for f in args.folders for p in f.rglob("*") if p.suffix.lower() in AUDIO_EXTENSIONS)
    else:
        files = default_files()
    audio_seconds = 0.0
    for path in files:
        with AudioFile(path) as audio:
            audio_seconds += audio.info.declared_duration or 0
    print(f"{len(files)} files, {audio_seconds / 60:.1f} min of audio; best of {args.repeat} runs, one core")

    head = FINGERPRINT_SECONDS
    rows = [
        ("decode-only, first 120 s (FFmpeg, no resampling)", lambda p: decode_only(p, head)),
        ("decode + chromaprint-compatible resampling, 120 s", lambda p: our_resampled_decode(p, head)),
        ("cratesense fingerprint + tags (analyze --fingerprint-only)", lambda p: analyze_file(p, descriptors=False)),
        ("fpcalc (Debian, subprocess per file)", fpcalc),
        ("decode-only, whole file", lambda p: decode_only(p, None)),
        ("cratesense full analysis (all stages, whole file)", lambda p: analyze_file(p)),
    ]
    timings = {}
    for name, action in rows:
        timings[name] = best_of(args.repeat, files, action)
    reference = timings[rows[0][0]]
    fpcalc_time = timings[rows[3][0]]
    whole = timings[rows[4][0]]
    print(f"{'measurement':60} {'seconds':>8} {'x realtime':>10} {'/decode120':>10}")
    for name, seconds in timings.items():
        print(f"{name:60} {seconds:8.2f} {audio_seconds / seconds:10.0f} {seconds / reference:10.2f}")
    ours = timings[rows[2][0]]
    print()
    print(f"fingerprint+tags / fpcalc          = {ours / fpcalc_time:.2f}  (target <= 1.5)")
    print(f"full analysis / whole-file decode  = {timings[rows[5][0]] / whole:.2f}")
    # the agent's two-phase analysis: a track the catalog knows well costs the fingerprint pass
    # only; an unknown one costs that pass and then the full analysis
    full = timings[rows[5][0]]
    print(f"known track (fingerprint pass) / full analysis = {ours / full:.2f}")
    print(f"unknown track (both passes) / full analysis    = {(ours + full) / full:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
