"""Analysis cost on real recordings, side by side in one run: our pipeline against one plain decode
of the same file, librosa, Essentia and fpcalc; per-format costs and a first-pass estimate.

    flock -x /work/heavy.lock .venv/bin/python bench/speed.py [--files 8] [--repeat 2] [--no-peers]
    flock -x /work/heavy.lock .venv/bin/python bench/speed.py --against /work/wt/baseline [--rounds 3]
    flock -x /work/heavy.lock .venv/bin/python bench/speed.py --without CutoffMeter [--rounds 3]
    /work/coord/heavy .venv/bin/python bench/speed.py --without model [--rounds 3]   # the sound model's stage
    .venv/bin/python bench/speed.py --memory [--files 8]   # the sound model's memory in a worker (not a timing)

The recordings are the Debian music packages the opt-in tests use (tests/realaudio.py: Ogg
Vorbis); the first ``--files`` of 2-5 minutes are also transcoded with Debian's ffmpeg into the
formats a DJ library holds (MP3 320 kb/s, AAC 256 kb/s, FLAC), cached beside them. Every side is
measured as CPU time (its process, its threads and any child it starts), one BLAS thread each,
best of ``--repeat`` rounds; only ratios are meant to be compared across machines.

Peers (benchmark-only extras, never runtime dependencies; skipped when missing): librosa (load
at 22050 Hz, ``beat.beat_track``, chroma + Krumhansl-Kessler key) and Essentia (AudioLoader,
RhythmExtractor2013, KeyExtractor, LoudnessEBUR128): tempo, key and loudness, our fields.

``--against CHECKOUT`` (a checkout with its own .venv, e.g. the budget's baseline) measures only
the whole pipeline, here and there, on the same files in one run: each side is a long-lived
child process (one BLAS thread, the first file analyzed once untimed) that analyzes the file it
is sent; every file goes to both sides back to back, in alternating order, so a change of the
machine's load hits both alike; a file's cost on a side is the median of its ``--rounds``. Per
format it prints both sides' CPU seconds per track and their ratio with a 95 % bootstrap interval
over the files (the CPU budget: the whole pipeline within 1.1x the baseline's).

``--without NAME`` measures what one stage costs inside the pipeline: the same rounds, this checkout
against itself with the stage class ``cratesense.analysis.pipeline.NAME`` (e.g. ``CutoffMeter``)
replaced by one that does nothing (inside the pipeline a stage also costs the decode's caches,
which timing it alone misses); ``--without model``: without the sound model's stage (no patches
collected, no inference: as when the model cannot be loaded).

``--memory``: a worker's peak and final resident memory after analyzing the files, in two fresh
processes, with and without the sound model: the difference is the model's memory in a worker.
"""

from __future__ import annotations

import os

for _variable in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_variable] = "1"  # as in the agent's workers; before numpy is imported

import argparse  # noqa: E402
import resource  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import av  # noqa: E402
import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from cratesense.analysis.decode import AudioFile  # noqa: E402
from cratesense.analysis.loudness import LoudnessMeter  # noqa: E402
from cratesense.analysis.pipeline import analyze_file  # noqa: E402
from cratesense.errors import AnalysisError  # noqa: E402
from realaudio import CACHE, fetch  # noqa: E402

FORMATS = {  # what a DJ library typically holds, made from the real recordings
    "mp3": ["-c:a", "libmp3lame", "-b:a", "320k"],
    "m4a": ["-c:a", "aac", "-b:a", "256k"],
    "flac": ["-c:a", "flac", "-sample_fmt", "s16"],
}
TRACK_SECONDS = 240  # a typical track, for the library estimate
LIBRARY_TRACKS = 100_000


def cpu_seconds() -> float:
    """CPU time of this process (all its threads) and of the children it waited for."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def duration_of(path: Path) -> float:
    with av.open(str(path)) as container:
        stream = container.streams.audio[0]
        if stream.duration and stream.time_base:
            return float(stream.duration * stream.time_base)
        return (container.duration or 0) / av.time_base


def choose_recordings(count: int) -> list[Path]:
    chosen = []
    for path in fetch():
        if path.suffix == ".ogg" and 120 <= duration_of(path) <= 300:
            chosen.append(path)
        if len(chosen) == count:
            break
    return chosen


def transcoded(sources: list[Path], ext: str) -> list[Path]:
    folder = CACHE / "speed-bench" / ext
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for source in sources:
        target = folder / f"{source.stem}.{ext}"
        if not target.exists():
            partial = target.with_suffix(f".part.{ext}")
            subprocess.run(["ffmpeg", "-v", "error", "-y", "-i", str(source), "-vn", *FORMATS[ext], str(partial)],
                           check=True)
            partial.rename(target)
        out.append(target)
    return out


# --- the sides ----------------------------------------------------------------------------------


def one_decode(path: Path) -> None:
    """The reference: one PyAV decode of the file at its own rate, nothing else."""
    with av.open(str(path)) as container:
        for _ in container.decode(container.streams.audio[0]):
            pass


def ours(path: Path) -> None:
    try:
        analyze_file(path)
    except AnalysisError:
        pass


def ours_fingerprint_only(path: Path) -> None:
    try:
        analyze_file(path, descriptors=False)
    except AnalysisError:
        pass


def decode_views(native: bool, meter: bool = False, model: bool = False):
    """Our decode alone (analysis view, optionally the native one), optionally with the meter,
    optionally with the sound model's stage (its patches collected, the model run on them)."""
    from cratesense.analysis import learned

    def run(path: Path) -> None:
        loudness = patches = None
        with AudioFile(path) as audio:
            for block in audio.blocks(native=native):
                if meter and block.native is not None:
                    if loudness is None:
                        loudness = LoudnessMeter(block.native_rate, tuple(f"C{i}" for i in range(block.native.shape[0])))
                    loudness.feed(block.native)
                if model and block.native is not None:
                    if patches is None:
                        patches = learned.PatchCollector(block.native_rate, learned.RATE, learned.WINDOW_SAMPLES,
                                                         learned.PATCHES)
                    patches.feed(block.native)
        if loudness is not None:
            loudness.finish()
        if patches is not None:
            windows = patches.finish()
            sound = learned.shipped_model()
            if len(windows) and not isinstance(sound, Exception):
                sound.infer(windows)

    return run


def fpcalc(path: Path) -> None:
    subprocess.run(["fpcalc", "-json", str(path)], capture_output=True, check=False)


_KK_MAJOR = np.array([6.35, 2.23, 3.48, 2.33, 4.38, 4.09, 2.52, 5.19, 2.39, 3.66, 2.29, 2.88])
_KK_MINOR = np.array([6.33, 2.68, 3.52, 5.38, 2.60, 3.53, 2.54, 4.75, 3.98, 2.69, 3.34, 3.17])


def librosa_side():
    try:
        import librosa
    except ImportError:
        return None
    librosa.beat.beat_track(y=np.zeros(22050 * 5, np.float32), sr=22050)  # numba compiles outside the timing

    def run(path: Path) -> None:
        y, sr = librosa.load(str(path), sr=22050)
        librosa.beat.beat_track(y=y, sr=sr)
        profile = librosa.feature.chroma_stft(y=y, sr=sr).mean(axis=1)
        max(np.corrcoef(np.roll(kk, tonic), profile)[0, 1] for kk in (_KK_MAJOR, _KK_MINOR) for tonic in range(12))

    return run


def essentia_side():
    try:
        import essentia

        essentia.log.infoActive = False
        essentia.log.warningActive = False
        import essentia.standard as es
    except ImportError:
        return None
    rhythm = es.RhythmExtractor2013(method="multifeature")
    key = es.KeyExtractor(profileType="edma")

    def run(path: Path) -> None:
        stereo, rate, *_ = es.AudioLoader(filename=str(path))()
        mono = es.MonoMixer()(stereo, stereo.shape[1])
        if rate != 44100:
            mono = es.Resample(inputSampleRate=rate, outputSampleRate=44100)(mono)
        rhythm(mono)
        key(mono)
        es.LoudnessEBUR128(sampleRate=rate)(stereo)

    return run


def best_cpu(action, files: list[Path], repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        started = cpu_seconds()
        for path in files:
            action(path)
        best = min(best, cpu_seconds() - started)
    return best


# --- the CPU budget: this checkout against another, in one run ----------------------------------


class _NoStage:
    """A stage that does nothing (``--without``)."""

    def __init__(self, *args, **kwargs) -> None:
        pass

    def feed(self, *args) -> None:
        pass

    def finish(self) -> None:
        return None


def _leave_out(without: str) -> None:
    """The pipeline of this process without one stage: ``model`` (the sound model: no patches
    collected, no inference, as when it cannot be loaded) or a stage class of the pipeline."""
    from cratesense.analysis import pipeline

    if without == "model":
        from cratesense.errors import ModelError

        pipeline.shipped_model = lambda: ModelError("left out by bench/speed.py --without model")
        return
    if not hasattr(pipeline, without):
        raise SystemExit(f"the pipeline has no stage class {without}")
    setattr(pipeline, without, _NoStage)


def memory_child(paths: list[str], without: str | None) -> dict[str, int]:
    """A worker's memory (kB, from /proc: the peak and the resident set at the end) after it has
    analyzed ``paths`` (the model, when on, loaded first, as a worker loads it)."""
    from cratesense.analysis import learned

    if without:
        _leave_out(without)
    else:
        learned.shipped_model()
    for path in paths:
        ours(Path(path))
    status = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines() if ":" in line)
    return {"peak_kb": int(status["VmHWM"].split()[0]), "resident_kb": int(status["VmRSS"].split()[0])}


def memory(files: list[Path]) -> None:
    """The sound model's memory in a worker: the same files analyzed in two fresh processes, with
    and without the model (not a timing: no lock needed)."""
    import json

    found = {}
    for label, options in (("with the model", []), ("without it", ["--without", "model"])):
        done = subprocess.run([sys.executable, __file__, *options, "--memory-child", *map(str, files)],
                              capture_output=True, text=True, check=True, cwd="/")
        found[label] = json.loads(done.stdout.strip().splitlines()[-1])
    print(f"\na worker's memory after analyzing {len(files)} files (MB)")
    print(f"{'':16}{'peak':>8}{'resident':>10}")
    for label, figures in found.items():
        print(f"{label:16}{figures['peak_kb'] / 1024:8.1f}{figures['resident_kb'] / 1024:10.1f}")
    extra = {key: (found["with the model"][key] - found["without it"][key]) / 1024 for key in ("peak_kb", "resident_kb")}
    print(f"{'the model':16}{extra['peak_kb']:8.1f}{extra['resident_kb']:10.1f}")


def pipeline_server(without: str | None = None) -> None:
    """Answers each path read from stdin with the CPU seconds ``analyze_file`` took on it, for the
    installed cratesense (this process runs with the other checkout's venv for that side), with the
    pipeline's stage class ``without`` replaced by one that does nothing. The first path is analyzed
    once untimed: imports, FFT plans and a model's session are a worker's one-time set-up."""
    import json

    if without:
        _leave_out(without)
    warm = False
    for line in sys.stdin:
        path = Path(line.rstrip("\n"))
        if not warm:
            ours(path)
            warm = True
        started = time.process_time()
        ours(path)
        print(json.dumps(time.process_time() - started), flush=True)


class _Side:
    """One side's pipeline server (a child process)."""

    def __init__(self, python: str, without: str | None = None) -> None:
        options = ["--without", without] if without else []
        self.process = subprocess.Popen([python, __file__, *options, "--pipeline-server"], stdin=subprocess.PIPE,
                                        stdout=subprocess.PIPE, text=True, cwd="/")  # not the checkout root:
        # its packaging/ once shadowed PyPA's

    def cpu(self, path: Path) -> float:
        import json

        self.process.stdin.write(f"{path}\n")
        self.process.stdin.flush()
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError(f"the pipeline server ({self.process.args[0]}) ended")
        return json.loads(line)

    def close(self) -> None:
        self.process.stdin.close()
        self.process.wait()


def ratio_interval(here: np.ndarray, there: np.ndarray, seed: int = 27) -> tuple[float, float]:
    """95 % bootstrap interval of sum(here) / sum(there) over the files (paired)."""
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, here.size, (2000, here.size))
    ratios = here[picks].sum(axis=1) / there[picks].sum(axis=1)
    low, high = np.percentile(ratios, [2.5, 97.5])
    return float(low), float(high)


def against(checkout: Path | None, sets: dict[str, list[Path]], rounds: int, without: str | None = None) -> None:
    """``there``: the pipeline of ``checkout``, or (``checkout`` None) this one without the stage ``without``."""
    sides = {"here": _Side(sys.executable),
             "there": _Side(str(checkout / ".venv" / "bin" / "python")) if checkout else _Side(sys.executable, without)}
    files = [path for paths in sets.values() for path in paths]
    runs: dict[str, list[list[float]]] = {side: [[] for _ in range(rounds)] for side in sides}
    try:
        for round_ in range(rounds):
            print(f"[speed] round {round_ + 1}/{rounds}", file=sys.stderr, flush=True)
            for index, path in enumerate(files):  # file by file, so a change of load hits both sides
                order = ["here", "there"] if (index + round_) % 2 == 0 else ["there", "here"]
                for side in order:
                    runs[side][round_].append(sides[side].cpu(path))
    finally:
        for side in sides.values():
            side.close()
    cost = {side: np.median(np.array(values), axis=0) for side, values in runs.items()}
    there_is = checkout if checkout else f"this checkout without {without}"
    print(f"\nwhole pipeline, CPU s per track (median of {rounds} alternating rounds; there = {there_is})")
    print(f"{'format':8}{'files':>6}{'here':>9}{'there':>9}{'here/there':>12}{'95% CI':>16}")
    start = 0
    totals = {"here": [], "there": []}
    for ext, paths in sets.items():
        here, there = cost["here"][start : start + len(paths)], cost["there"][start : start + len(paths)]
        start += len(paths)
        totals["here"].append(here)
        totals["there"].append(there)
        low, high = ratio_interval(here, there)
        print(f"{ext:8}{len(paths):>6}{here.mean():9.3f}{there.mean():9.3f}{here.sum() / there.sum():12.3f}"
              f"{f'{low:.3f}..{high:.3f}':>16}")
    here, there = np.concatenate(totals["here"]), np.concatenate(totals["there"])
    low, high = ratio_interval(here, there)
    print(f"{'all':8}{here.size:>6}{here.mean():9.3f}{there.mean():9.3f}{here.sum() / there.sum():12.3f}"
          f"{f'{low:.3f}..{high:.3f}':>16}" + ("   budget <= 1.10" if checkout else "   (the stage's share)"))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=8)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--no-peers", action="store_true", help="skip librosa and Essentia")
    parser.add_argument("--workers-speedup", type=float, default=None,
                        help="first-pass throughput of 2 workers over 1 on this machine (bench/workers.py)")
    parser.add_argument("--against", type=Path, help="another checkout (with its .venv): the whole pipeline there "
                        "and here on the same files, alternating")
    parser.add_argument("--rounds", type=int, default=3, help="--against: rounds per side")
    parser.add_argument("--without", metavar="NAME", help="the pipeline here against itself without the stage "
                        "class NAME of cratesense.analysis.pipeline (e.g. CutoffMeter), or without the sound "
                        "model (NAME: model): the stage's cost")
    parser.add_argument("--memory", action="store_true", help="the sound model's memory in a worker (with/without)")
    parser.add_argument("--pipeline-server", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--memory-child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.pipeline_server:
        pipeline_server(args.without)
        return 0
    if args.memory_child:
        import json

        print(json.dumps(memory_child(args.memory_child, args.without)))
        return 0

    vorbis = choose_recordings(args.files)
    if args.memory:
        memory(vorbis)
        return 0
    sets = {"ogg": vorbis, **{ext: transcoded(vorbis, ext) for ext in FORMATS}}
    if args.against or args.without:
        print(f"{len(vorbis)} real recordings, each as Vorbis, MP3 320k, AAC 256k, FLAC")
        against(args.against, sets, args.rounds, args.without)
        return 0
    seconds = {ext: sum(duration_of(p) for p in files) for ext, files in sets.items()}
    print(f"{len(vorbis)} real recordings ({seconds['ogg'] / 60:.1f} min), each as Vorbis, MP3 320k, AAC 256k, "
          f"FLAC; CPU time, one thread each, best of {args.repeat}")

    for files in sets.values():  # warm the page cache and the imports
        for path in files:
            ours(path)

    rows: dict[tuple[str, str], float] = {}
    for ext, files in sets.items():
        rows[ext, "decode"] = best_cpu(one_decode, files, args.repeat)
        rows[ext, "ours"] = best_cpu(ours, files, args.repeat)
        rows[ext, "fingerprint-only"] = best_cpu(ours_fingerprint_only, files, args.repeat)
        rows[ext, "fpcalc"] = best_cpu(fpcalc, files, args.repeat)
        rows[ext, "decode+analysis"] = best_cpu(decode_views(False), files, args.repeat)
        rows[ext, "+native view"] = best_cpu(decode_views(True), files, args.repeat)
        rows[ext, "+loudness"] = best_cpu(decode_views(True, meter=True), files, args.repeat)
        rows[ext, "+native view+model"] = best_cpu(decode_views(True, model=True), files, args.repeat)
    peers = {} if args.no_peers else {"librosa": librosa_side(), "essentia": essentia_side()}
    for name, action in peers.items():
        if action is not None:
            rows["ogg", name] = best_cpu(action, sets["ogg"], args.repeat)

    count = len(vorbis)
    print(f"\n{'per track (CPU s)':20}" + "".join(f"{ext:>9}" for ext in sets))
    for side in ("decode", "decode+analysis", "+native view", "+loudness", "+native view+model", "ours", "fingerprint-only", "fpcalc",
                 "librosa", "essentia"):
        cells = [rows.get((ext, side)) for ext in sets]
        if any(cell is not None for cell in cells):
            print(f"{side:20}" + "".join(f"{cell / count:9.3f}" if cell is not None else f"{'':>9}" for cell in cells))

    print(f"\n{'ratio':44}" + "".join(f"{ext:>7}" for ext in sets) + "   target")
    ratios = [
        ("whole pipeline / one decode", "ours", "decode", "<= 1.5"),
        ("fingerprint-only / fpcalc", "fingerprint-only", "fpcalc", "<= 1.2"),
        ("whole pipeline / librosa (tempo, key)", "ours", "librosa", "<= 0.25"),
        ("whole pipeline / Essentia (tempo, key, R128)", "ours", "essentia", "<= 0.15"),
    ]
    for label, numerator, denominator, target in ratios:
        cells = [
            rows[ext, numerator] / rows[ext, denominator] if (ext, denominator) in rows else None for ext in sets
        ]
        print(f"{label:44}" + "".join(f"{c:7.2f}" if c is not None else f"{'':>7}" for c in cells) + f"   {target}")

    # A typical library: 4-minute tracks, a third each MP3, AAC and FLAC.
    mix = ("mp3", "m4a", "flac")
    per_track = {side: float(np.mean([rows[ext, side] / seconds[ext] for ext in mix])) * TRACK_SECONDS
                 for side in ("ours", "fingerprint-only")}
    print(f"\nper 4-minute track (MP3/AAC/FLAC mix): {per_track['ours']:.2f} CPU s full, "
          f"{per_track['fingerprint-only']:.2f} CPU s fingerprint pass")
    speedups = {"1 worker": 1.0, "2 workers (ideal)": 2.0}
    if args.workers_speedup:
        speedups["2 workers (measured)"] = args.workers_speedup
    for label, speedup in speedups.items():
        full = LIBRARY_TRACKS * per_track["ours"] / speedup / 3600
        both = LIBRARY_TRACKS * (per_track["ours"] + per_track["fingerprint-only"]) / speedup / 3600
        print(f"  {LIBRARY_TRACKS:,} tracks, {label:21}: {full:5.1f} h (embedded catalog), "
              f"{both:5.1f} h (shared catalog, every track unknown: both passes)  target < 12 h")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
