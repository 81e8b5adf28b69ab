"""Peak RSS of analyzing a 2-hour DJ mix, against the same process importing everything.

    python bench/memory.py [--minutes 120]

The mix (synthesized, a different tempo and key every 4 minutes) is encoded to MP3 in chunks, so
making it needs no memory either. Each measurement runs in a fresh subprocess.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

import av
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from audiogen import synth_track

# Peak RSS of this process image: VmHWM on Linux. (ru_maxrss is no good here: Linux carries it
# across execve from the forking parent, which just synthesized the whole mix.)
_MEASURE = """
import resource, sys, time
from cratesense.analysis.pipeline import analyze_file
started = time.perf_counter()
result = analyze_file(sys.argv[1]) if sys.argv[1] != "-" else None
elapsed = time.perf_counter() - started
try:
    status = open("/proc/self/status").read()
    peak = int(status.split("VmHWM:")[1].split()[0]) / 1024
except OSError:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 / 1024  # macOS: bytes
print(peak, elapsed, result and result.audio.duration, result and result.descriptors.bpm)
"""


def write_mix(path: Path, minutes: int) -> None:
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libmp3lame", rate=44100, layout="stereo")
        stream.bit_rate = 192000
        resampler = av.AudioResampler(format=stream.codec_context.format.name, layout="stereo", rate=44100)
        for segment in range(0, minutes, 4):
            samples = synth_track(bpm=118 + segment % 20, tonic=segment % 12, seconds=240, seed=segment)
            for start in range(0, samples.shape[1], 1152 * 16):
                frame = av.AudioFrame.from_ndarray(
                    np.ascontiguousarray(samples[:, start : start + 1152 * 16]), format="fltp", layout="stereo"
                )
                frame.sample_rate = 44100
                for converted in resampler.resample(frame):
                    for packet in stream.encode(converted):
                        container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)


def measure(argument: str) -> list[str]:
    output = subprocess.run([sys.executable, "-c", _MEASURE, argument], capture_output=True, text=True, check=True)
    return output.stdout.split()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=int, default=120)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        mix = Path(folder) / "mix.mp3"
        write_mix(mix, args.minutes)
        baseline = float(measure("-")[0])
        rss, seconds, duration, bpm = measure(str(mix))
        print(f"{args.minutes}-minute mix ({float(duration) / 60:.1f} min decoded, {float(seconds):.1f} s, bpm {bpm})")
        print(f"peak RSS analyzing it: {float(rss):.0f} MB (target < 300 MB)")
        print(f"peak RSS after imports only: {baseline:.0f} MB; growth {float(rss) - baseline:.0f} MB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
