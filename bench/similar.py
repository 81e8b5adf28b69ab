"""Is "similar" worth having? Precision@5 of same-soundtrack neighbours on real recordings, for our
embedding, mean+std MFCCs (librosa, benchmark-only) and chance; its stability across encodes; and
what the timbre statistics cost.

    .venv/bin/pip install librosa          # benchmark-only, never a runtime dependency
    flock -s /work/heavy.lock .venv/bin/python bench/similar.py [--sets development,held-out] [--against CHECKOUT]
    flock -x /work/heavy.lock .venv/bin/python bench/similar.py --cost [--against CHECKOUT]
    .venv/bin/python bench/similar.py --fit   # the embedding's standardization, from development

The recordings are Debian game-music packages (bench/soundtracks.py), each one soundtrack: a
development set (features and their standardization were chosen on it) and a held-out set
(never tuned on). For every track, its 5 nearest neighbours by cosine are looked up among the
other tracks of the same set; P@5 is the share of them from the track's own package, and chance
is what a random ranking would give. Each set is measured twice: the files as the packages ship
them, and "mixed encodes", each file re-encoded with Debian's ffmpeg to MP3 128k, Opus 64k or
FLAC (chosen by its name), so that a package's own codec cannot be what makes its tracks alike.
"ours-MFCC 95% CI" is a paired bootstrap interval over the tracks (is the difference more than
which tracks happen to be in the set?). ``--against CHECKOUT`` (one with its own .venv, e.g. main
before embedding version 2) adds a column with that checkout's embedding on the same files.

The MFCC baseline is librosa's default (20 MFCCs of a 128-band mel spectrum at 22050 Hz), mean
and std over the track, each of the 40 dimensions standardized over the set being measured
(which helps it: raw MFCC vectors are dominated by c0). Its audio is decoded with PyAV, as ours.

Stability: the first two tracks of every package, encoded as MP3 128k, Opus 64k, FLAC and AAC
128k (FFmpeg's own encoder, as the tests use); the cosine of each encode to its original, and
whether the original is its nearest track in the set.

Cost: CPU time of the whole pipeline (``analyze_file``) on the same files, here and in another
checkout (``--against``: e.g. main before embedding version 2, with its own .venv), in
alternating child processes of one run; and the share of it that ``TimbreExtractor`` takes:
timed alone over decoded blocks, and as the pipeline with / without it (the extractor replaced
by a no-op), which also counts what it costs the decode's caches.
"""

from __future__ import annotations

import os

for _variable in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ[_variable] = "1"  # as in the agent's workers; before numpy is imported

import argparse  # noqa: E402
import hashlib  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from concurrent.futures import ProcessPoolExecutor  # noqa: E402
from pathlib import Path  # noqa: E402

import av  # noqa: E402
import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))

from soundtracks import CACHE, SETS, debian_ffmpeg, labelled_set  # noqa: E402

from cratesense.analysis.constants import STAGE_VERSIONS  # noqa: E402
from cratesense.analysis.decode import AudioFile  # noqa: E402
from cratesense.analysis.pipeline import analyze_file  # noqa: E402

WORK = CACHE / "similar"
ENCODES = {
    "mp3": ("-c:a", "libmp3lame", "-b:a", "128k"),
    "opus": ("-c:a", "libopus", "-b:a", "64k"),
    "flac": ("-c:a", "flac"),
    "m4a": ("-c:a", "aac", "-b:a", "128k"),  # FFmpeg's own AAC encoder (stability only)
}
MIXED = ("flac", "mp3", "opus")  # the formats "mixed encodes" draws from
NEIGHBOURS = 5
MFCC_RATE = 22050
BOOTSTRAP = 2000  # resamples of the tracks for the confidence interval of ours - MFCC


def _code_version() -> str:
    """Our embeddings are cached per version of the code that makes them (the installed
    cratesense: another checkout's child process caches its own)."""
    import cratesense.analysis

    code = Path(cratesense.analysis.__file__).resolve().parent
    digest = hashlib.sha1()
    for name in ("features.py", "embedding.py", "decode.py"):
        digest.update((code / name).read_bytes())
    return digest.hexdigest()[:12]


def _key(path: Path) -> str:
    return hashlib.sha1(str(path).encode()).hexdigest()[:16]


def encode(path: Path, codec: str) -> Path:
    target = WORK / "encodes" / f"{_key(path)}.{codec}"
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_name("partial-" + target.name)
        debian_ffmpeg("-i", str(path), "-map", "0:a:0", "-map_metadata", "-1", *ENCODES[codec], str(partial))
        partial.rename(target)
    return target


def mixed_codec(path: Path) -> str:
    return MIXED[int(_key(path), 16) % len(MIXED)]


# --- the three methods ----------------------------------------------------------------------------


_CODE_VERSION = _code_version()  # of the code this process imported


def ours(path: Path) -> np.ndarray:
    cached = WORK / f"ours-{_CODE_VERSION}" / f"{_key(path)}.npy"
    if cached.exists():
        return np.load(cached)
    vector = np.array(analyze_file(path).descriptors.embedding, np.float64)
    cached.parent.mkdir(parents=True, exist_ok=True)
    np.save(cached, vector)
    return vector


def _mono(path: Path, rate: int) -> np.ndarray:
    pieces = []
    with av.open(str(path), metadata_errors="replace") as container:
        resampler = av.AudioResampler(format="flt", layout="mono", rate=rate)
        for frame in container.decode(container.streams.audio[0]):
            pieces.extend(out.to_ndarray().reshape(-1) for out in resampler.resample(frame))
        pieces.extend(out.to_ndarray().reshape(-1) for out in resampler.resample(None))
    return np.concatenate(pieces)


def mfcc(path: Path) -> np.ndarray:
    cached = WORK / "mfcc" / f"{_key(path)}.npy"
    if cached.exists():
        return np.load(cached)
    import librosa

    coefficients = librosa.feature.mfcc(y=_mono(path, MFCC_RATE), sr=MFCC_RATE, n_mfcc=20)
    vector = np.concatenate([coefficients.mean(axis=1), coefficients.std(axis=1)])
    cached.parent.mkdir(parents=True, exist_ok=True)
    np.save(cached, vector)
    return vector


def timbre_of(path: Path):
    """The pipeline's timbre statistics of one file (for --fit)."""
    from cratesense.analysis.features import TimbreExtractor

    extractor = None
    with AudioFile(path) as audio:
        for block in audio.blocks(native=True):
            if block.native is not None:
                extractor = extractor or TimbreExtractor(block.native_rate)
                extractor.feed(block.native)
    return extractor.finish()


# --- measures -------------------------------------------------------------------------------------


def _unit(vectors: np.ndarray) -> np.ndarray:
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def standardized(vectors: np.ndarray) -> np.ndarray:
    return (vectors - vectors.mean(axis=0)) / (vectors.std(axis=0) + 1e-12)


def precision_per_track(vectors: np.ndarray, labels: list[str], k: int = NEIGHBOURS) -> np.ndarray:
    """For each track, the share of its k nearest others (by cosine) from its own package."""
    unit = _unit(vectors)
    similarity = unit @ unit.T
    np.fill_diagonal(similarity, -np.inf)
    nearest = np.argsort(-similarity, axis=1)[:, :k]
    names = np.asarray(labels)
    return (names[nearest] == names[:, None]).mean(axis=1)


def precision_at(vectors: np.ndarray, labels: list[str], k: int = NEIGHBOURS) -> float:
    return float(precision_per_track(vectors, labels, k).mean())


def difference_interval(ours_: np.ndarray, theirs: np.ndarray, seed: int = 18) -> tuple[float, float]:
    """95 % bootstrap interval of mean(ours_ - theirs) over the tracks (paired: the same queries)."""
    rng = np.random.default_rng(seed)
    difference = ours_ - theirs
    means = difference[rng.integers(0, difference.size, (BOOTSTRAP, difference.size))].mean(axis=1)
    low, high = np.percentile(means, [2.5, 97.5])
    return float(low), float(high)


def chance(labels: list[str]) -> float:
    names = np.asarray(labels)
    return float(np.mean([((names == name).sum() - 1) / (names.size - 1) for name in names]))


def _parallel(function, paths: list[Path]) -> list:
    with ProcessPoolExecutor(max_workers=2) as pool:
        return list(pool.map(function, paths, chunksize=2))


def embed_child(paths: list[str]) -> list[list[float]]:
    """The installed cratesense's embeddings of ``paths`` (for ``--against``)."""
    return [vector.tolist() for vector in _parallel(ours, [Path(path) for path in paths])]


def _embeddings_there(against: Path, paths: list[Path]) -> np.ndarray:
    import json
    import subprocess

    python = str(against / ".venv" / "bin" / "python")
    done = subprocess.run([python, __file__, "--embed-child", *map(str, paths)], capture_output=True, text=True,
                          check=True, cwd="/")
    return np.array(json.loads(done.stdout.strip().splitlines()[-1]))


def similarity_rows(set_name: str, against: Path | None) -> list[tuple]:
    items = labelled_set(set_name)
    labels = [package for package, _ in items]
    originals = [path for _, path in items]
    rows = []
    for condition, paths in (
        ("as shipped", originals),
        ("mixed encodes", [encode(path, mixed_codec(path)) for path in originals]),
    ):
        progress(f"{set_name}, {condition}: {len(paths)} files")
        our = precision_per_track(np.array(_parallel(ours, paths)), labels)
        baseline = precision_per_track(standardized(np.array(_parallel(mfcc, paths))), labels)
        there = precision_at(_embeddings_there(against, paths), labels) if against else None
        rows.append((set_name, condition, len(paths), len(set(labels)), float(our.mean()), float(baseline.mean()),
                     difference_interval(our, baseline), there, chance(labels)))
    return rows


def stability_rows(set_name: str) -> list[tuple]:
    items = labelled_set(set_name)
    originals = [path for _, path in items]
    firsts = [index for index, (package, _) in enumerate(items) if [p for p, _ in items[:index]].count(package) < 2]
    base = {"ours": np.array(_parallel(ours, originals)), "MFCC": np.array(_parallel(mfcc, originals))}
    mean, spread = base["MFCC"].mean(axis=0), base["MFCC"].std(axis=0) + 1e-12
    base["MFCC"] = (base["MFCC"] - mean) / spread
    rows = []
    for codec in ENCODES:
        encoded = [encode(originals[index], codec) for index in firsts]
        progress(f"{set_name}: stability, {codec}: {len(encoded)} files")
        found = {"ours": np.array(_parallel(ours, encoded)), "MFCC": (np.array(_parallel(mfcc, encoded)) - mean) / spread}
        for method in ("ours", "MFCC"):
            reference = _unit(base[method])
            copies = _unit(found[method])
            to_all = copies @ reference.T
            own = to_all[np.arange(len(firsts)), firsts]
            nearest_is_own = float(np.mean(np.argmax(to_all, axis=1) == np.array(firsts)))
            others = reference[firsts] @ reference.T
            others[np.arange(len(firsts)), firsts] = -np.inf
            rows.append((set_name, codec, method, len(firsts), float(own.min()), float(np.median(own)),
                         nearest_is_own, float(np.median(others.max(axis=1)))))
    return rows


def cost_child(paths: list[str]) -> dict:
    """CPU seconds, for the installed cratesense, over ``paths``: the whole pipeline
    (``analyze_file``), one decode of both views, and (where it exists) ``TimbreExtractor`` over
    the native view, timed alone and as the pipeline's share: the pipeline again with the
    extractor replaced by one that does nothing (inside the pipeline it also costs the decode
    cache, which timing it alone misses)."""
    from cratesense.analysis import pipeline as module

    try:
        from cratesense.analysis.features import TimbreExtractor
    except ImportError:  # a checkout from before embedding version 2
        TimbreExtractor = None

    class NoTimbre:
        def __init__(self, rate: int) -> None:
            pass

        def feed(self, channels) -> None:
            pass

        def finish(self) -> None:
            return None

    analyze_file(Path(paths[0]))  # untimed: the first call's one-time set-up (imports, FFT plans)
    spent = {"pipeline": 0.0, "without_timbre": 0.0}
    decode = timbre = seconds = 0.0
    for index, path in enumerate(paths):
        sides = ("pipeline", "without_timbre") if TimbreExtractor is not None else ("pipeline",)
        for side in sides if index % 2 == 0 else sides[::-1]:  # neither always runs first
            if TimbreExtractor is not None:
                module.TimbreExtractor = TimbreExtractor if side == "pipeline" else NoTimbre
            started = time.process_time()
            analyze_file(Path(path))
            spent[side] += time.process_time() - started
        if TimbreExtractor is not None:
            module.TimbreExtractor = TimbreExtractor
        started = time.process_time()
        blocks = []
        with AudioFile(path) as audio:
            for block in audio.blocks(native=True):
                blocks.append((block.native, block.native_rate))
                seconds += block.analysis.size / 11025
        decode += time.process_time() - started
        if TimbreExtractor is not None:
            started = time.process_time()
            extractor = None
            for native, rate in blocks:
                if native is not None:
                    extractor = extractor or TimbreExtractor(rate)
                    extractor.feed(native)
            extractor.finish()
            timbre += time.process_time() - started
    return {**spent, "decode": decode, "timbre": timbre, "seconds": seconds}


def cost(files: int, against: Path | None, rounds: int = 3) -> None:
    """The pipeline's CPU time here and, with ``against`` (a checkout with its own .venv, e.g.
    main before this embedding), there: alternating child processes on the same files."""
    import json
    import subprocess

    items = labelled_set("development")
    chosen = [str(path) for _, path in items][:: max(1, len(items) // files)][:files]
    sides = {"this checkout": sys.executable}
    if against is not None:
        sides[str(against)] = str(against / ".venv" / "bin" / "python")
    results: dict[str, list[dict]] = {name: [] for name in sides}
    for round_ in range(rounds):
        for name, python in sides.items():
            progress(f"cost: round {round_ + 1}/{rounds}, {name}")
            done = subprocess.run([python, __file__, "--cost-child", *chosen], capture_output=True, text=True,
                                  check=True, cwd="/")
            results[name].append(json.loads(done.stdout.strip().splitlines()[-1]))
    minutes = results["this checkout"][0]["seconds"] / 60
    print(f"{len(chosen)} files, {minutes:.1f} min of audio; CPU seconds, median of {rounds} alternating runs:")
    medians = {name: {field: float(np.median([run[field] for run in runs])) for field in runs[0]}
               for name, runs in results.items()}
    for name, median in medians.items():
        print(f"  {name:34} pipeline {median['pipeline']:6.2f}  decode (both views) {median['decode']:6.2f}  "
              f"timbre statistics {median['timbre']:5.2f} ({100 * median['timbre'] / median['pipeline']:.1f} % "
              f"of the pipeline)")
        if median["without_timbre"]:
            print(f"  {'':34} pipeline with the extractor a no-op {median['without_timbre']:6.2f}: with / without "
                  f"{median['pipeline'] / median['without_timbre']:.3f}")
    if against is not None:
        here, there = medians["this checkout"]["pipeline"], medians[str(against)]["pipeline"]
        print(f"  pipeline here / there: {here / there:.3f}")


def fit() -> None:
    """Mean and spread of the raw features over the development set, as embedding.py holds them."""
    from cratesense.analysis.embedding import raw_features

    paths = [path for _, path in labelled_set("development")]
    raw = np.array([raw_features(timbre) for timbre in _parallel(timbre_of, paths)])
    for name, values in (("_CENTRE", raw.mean(axis=0)), ("_SCALE", raw.std(axis=0))):
        print(f"{name} = np.array([")
        for start in range(0, values.size, 8):
            print("    " + ", ".join(f"{value:.4g}" for value in values[start : start + 8]) + ",")
        print("])")


def progress(message: str) -> None:
    print(f"[similar] {message}", file=sys.stderr, flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sets", default=",".join(SETS), help="which sets (development, held-out)")
    parser.add_argument("--fit", action="store_true", help="print the embedding's standardization and exit")
    parser.add_argument("--cost", action="store_true", help="only the timed cost (run under flock -x)")
    parser.add_argument("--files", type=int, default=8, help="files for --cost")
    parser.add_argument("--against", type=Path, help="--cost: another checkout (with its .venv) to compare with")
    parser.add_argument("--cost-child", nargs="+", help=argparse.SUPPRESS)
    parser.add_argument("--embed-child", nargs="+", help=argparse.SUPPRESS)
    arguments = parser.parse_args()
    if arguments.fit:
        fit()
        return 0
    if arguments.embed_child:
        import json

        print(json.dumps(embed_child(arguments.embed_child)))
        return 0
    if arguments.cost_child:
        import json

        print(json.dumps(cost_child(arguments.cost_child)))
        return 0
    if arguments.cost:
        cost(arguments.files, arguments.against)
        return 0
    try:
        import librosa  # noqa: F401
    except ImportError:
        print("bench/similar.py needs librosa: .venv/bin/pip install librosa", file=sys.stderr)
        return 2
    names = arguments.sets.split(",")
    version = STAGE_VERSIONS["embedding"]
    print(f"Precision@{NEIGHBOURS} of same-soundtrack neighbours (embedding version {version})\n")
    there = "--against" if arguments.against else ""
    print(f"{'set':<12} {'files':<22} {'packages':>8} {'ours':>6} {'MFCC':>6} {'ours-MFCC 95% CI':>17} "
          f"{there:>9} {'chance':>7}")
    for name in names:
        for set_name, condition, files, packages, our, baseline, (low, high), before, luck in similarity_rows(
            name, arguments.against
        ):
            before = f"{before:.3f}" if before is not None else ""
            print(f"{set_name:<12} {condition + f' ({files})':<22} {packages:>8} {our:>6.3f} {baseline:>6.3f} "
                  f"{f'{low:+.3f}..{high:+.3f}':>17} {before:>9} {luck:>7.3f}")
    if arguments.against:
        print(f"(--against: the embedding of {arguments.against})")
    print("\nStability across encodes (cosine of each encode to its original)")
    print(f"{'set':<12} {'codec':<5} {'method':<6} {'tracks':>6} {'min':>6} {'median':>7} {'own is nearest':>15} {'nearest other (median)':>23}")
    for name in names:
        for set_name, codec, method, tracks, low, middle, own, other in stability_rows(name):
            print(f"{set_name:<12} {codec:<5} {method:<6} {tracks:>6} {low:>6.3f} {middle:>7.3f} {own:>15.0%} {other:>23.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
