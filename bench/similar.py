"""Is "similar" worth having? Precision@5 of same-soundtrack neighbours on real recordings, for our
embedding, mean+std MFCCs (librosa, benchmark-only) and chance; its stability across encodes; and
what the timbre statistics cost.

    .venv/bin/pip install librosa          # benchmark-only, never a runtime dependency
    flock -s /work/heavy.lock .venv/bin/python bench/similar.py [--sets development,held-out]
    flock -x /work/heavy.lock .venv/bin/python bench/similar.py --cost     # the timed part alone
    .venv/bin/python bench/similar.py --fit   # the embedding's standardization, from development

The recordings are Debian game-music packages (bench/soundtracks.py), each one soundtrack: a
development set (features and their standardization were chosen on it) and a held-out set
(never tuned on). For every track, its 5 nearest neighbours by cosine are looked up among the
other tracks of the same set; P@5 is the share of them from the track's own package, and chance
is what a random ranking would give. Each set is measured twice: the files as the packages ship
them, and "mixed encodes", each file re-encoded with Debian's ffmpeg to MP3 128k, Opus 64k or
FLAC (chosen by its name), so that a package's own codec cannot be what makes its tracks alike.

The MFCC baseline is librosa's default (20 MFCCs of a 128-band mel spectrum at 22050 Hz), mean
and std over the track, each of the 40 dimensions standardized over the set being measured
(which helps it: raw MFCC vectors are dominated by c0). Its audio is decoded with PyAV, as ours.

Stability: the first two tracks of every package, encoded as MP3 128k, Opus 64k, FLAC and AAC
128k (FFmpeg's own encoder, as the tests use); the cosine of each encode to its original, and
whether the original is its nearest track in the set.

Cost: CPU time of ``TimbreExtractor`` over the decoded channels, against the decode itself (both
views, as the pipeline asks for them) on the same files in one run.
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
_CODE = Path(__file__).resolve().parent.parent / "analysis"


def _code_version() -> str:
    """Our embeddings are cached per version of the code that makes them."""
    digest = hashlib.sha1()
    for name in ("features.py", "embedding.py", "decode.py"):
        digest.update((_CODE / name).read_bytes())
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


def precision_at(vectors: np.ndarray, labels: list[str], k: int = NEIGHBOURS) -> float:
    unit = _unit(vectors)
    similarity = unit @ unit.T
    np.fill_diagonal(similarity, -np.inf)
    nearest = np.argsort(-similarity, axis=1)[:, :k]
    names = np.asarray(labels)
    return float((names[nearest] == names[:, None]).mean())


def chance(labels: list[str]) -> float:
    names = np.asarray(labels)
    return float(np.mean([((names == name).sum() - 1) / (names.size - 1) for name in names]))


def _parallel(function, paths: list[Path]) -> list:
    with ProcessPoolExecutor(max_workers=2) as pool:
        return list(pool.map(function, paths, chunksize=2))


def similarity_rows(set_name: str) -> list[tuple]:
    items = labelled_set(set_name)
    labels = [package for package, _ in items]
    originals = [path for _, path in items]
    rows = []
    for condition, paths in (
        ("as shipped", originals),
        ("mixed encodes", [encode(path, mixed_codec(path)) for path in originals]),
    ):
        progress(f"{set_name}, {condition}: {len(paths)} files")
        our_vectors = np.array(_parallel(ours, paths))
        mfcc_vectors = standardized(np.array(_parallel(mfcc, paths)))
        rows.append(
            (set_name, condition, len(paths), len(set(labels)), precision_at(our_vectors, labels),
             precision_at(mfcc_vectors, labels), chance(labels))
        )
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


def cost_rows(files: int) -> list[tuple]:
    """CPU seconds: decoding both views, and the timbre statistics over the native view."""
    from cratesense.analysis.features import TimbreExtractor

    items = labelled_set("development")
    paths = [path for _, path in items][:: max(1, len(items) // files)][:files]
    decode_seconds = timbre_seconds = audio_seconds = 0.0
    for path in paths:
        started = time.process_time()
        blocks = []
        with AudioFile(path) as audio:
            for block in audio.blocks(native=True):
                blocks.append((block.native, block.native_rate))
                audio_seconds += block.analysis.size / 11025
        decode_seconds += time.process_time() - started
        started = time.process_time()
        extractor = None
        for native, rate in blocks:
            if native is not None:
                extractor = extractor or TimbreExtractor(rate)
                extractor.feed(native)
        extractor.finish()
        timbre_seconds += time.process_time() - started
    return [(len(paths), audio_seconds, decode_seconds, timbre_seconds)]


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
    arguments = parser.parse_args()
    if arguments.fit:
        fit()
        return 0
    if arguments.cost:
        count, audio, decode, timbre = cost_rows(arguments.files)[0]
        print(f"timbre statistics over {count} files ({audio:.0f} s of audio): decode (both views) "
              f"{decode:.2f} s CPU, timbre {timbre:.2f} s CPU = {100 * timbre / decode:.1f} % of the decode")
        return 0
    try:
        import librosa  # noqa: F401
    except ImportError:
        print("bench/similar.py needs librosa: .venv/bin/pip install librosa", file=sys.stderr)
        return 2
    names = arguments.sets.split(",")
    version = STAGE_VERSIONS["embedding"]
    print(f"Precision@{NEIGHBOURS} of same-soundtrack neighbours (embedding version {version})\n")
    print(f"{'set':<12} {'files':<22} {'packages':>8} {'ours':>6} {'MFCC':>6} {'chance':>7}")
    for name in names:
        for set_name, condition, files, packages, our, baseline, luck in similarity_rows(name):
            print(f"{set_name:<12} {condition + f' ({files})':<22} {packages:>8} {our:>6.3f} {baseline:>6.3f} {luck:>7.3f}")
    print("\nStability across encodes (cosine of each encode to its original)")
    print(f"{'set':<12} {'codec':<5} {'method':<6} {'tracks':>6} {'min':>6} {'median':>7} {'own is nearest':>15} {'nearest other (median)':>23}")
    for name in names:
        for set_name, codec, method, tracks, low, middle, own, other in stability_rows(name):
            print(f"{set_name:<12} {codec:<5} {method:<6} {tracks:>6} {low:>6.3f} {middle:>7.3f} {own:>15.0%} {other:>23.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
