"""Is "similar" worth having? Precision@5 of same-soundtrack neighbours on real recordings, for our
embedding (version 4: the sound model's view blended with the timbre statistics), each of its two
parts alone, the sound model's raw penultimate layers, mean+std MFCCs (librosa, benchmark-only),
another checkout's embedding (e.g. version 2) and chance; its stability across encodes; and the
fit of its projections.

    .venv/bin/pip install librosa          # benchmark-only, never a runtime dependency
    nice .venv/bin/python bench/similar.py [--sets development,held-out,unseen] [--against CHECKOUT] [--no-encodes]
    nice .venv/bin/python bench/similar.py --fit   # the projection, from the fit corpus

The recordings are Debian game-music packages (bench/soundtracks.py), each one soundtrack: a
development set (choices were made on it), a held-out set (reported while version 2 was made,
never tuned on) and an unseen set (chosen for version 3 before anything was measured on it, never
tuned on). For every track, its 5 nearest neighbours by cosine are looked up among the other
tracks of the same set; P@5 is the share of them from the track's own package, and chance is what
a random ranking would give. Each set is measured twice: the files as the packages ship them, and
"mixed encodes", each file re-encoded with Debian's ffmpeg to MP3 128k, Opus 64k or FLAC (chosen
by its name), so that a package's own codec cannot be what makes its tracks alike. "v4-MFCC 95%
CI" is a paired bootstrap interval over the tracks (is the difference more than which tracks
happen to be in the set?). ``--against CHECKOUT`` (one with its own .venv, e.g. the baseline with
embedding version 2) adds a column with that checkout's embedding on the same files.

Version 4 is computed here as the pipeline computes it (the same ``PatchCollector``, the model's
``infer``, the ``TimbreExtractor`` and the projections: ``learned_outputs``; the first file of each
set is checked against ``analyze_file``). "model" and "timbre" are its two halves alone (the
model's 32 projected dimensions, the statistics' 32). "raw" is the cosine of the 400 penultimate
units themselves (no projection), as the issue asked to compare. The MFCC baseline is librosa's default (20 MFCCs of a 128-band mel
spectrum at 22050 Hz), mean and std over the track, each of the 40 dimensions standardized over
the set being measured (which helps it: raw MFCC vectors are dominated by c0). Its audio is
decoded with PyAV, as ours.

Stability: the first two tracks of every package, encoded as MP3 128k, Opus 64k, FLAC and AAC
128k (FFmpeg's own encoder, as the tests use); the cosine of each encode to its original, and
whether the original is its nearest track in the set.

Fit (``--fit``): the projections of the embedding's two halves, from the 400 penultimate units to
32 dimensions (the mean and the first principal directions) and from the timbre statistics' 64 to
32 (their first principal directions), over a fit corpus (the development packages, up to 60
tracks each, and bench/devset.py's rendered development subsets; never a held-out or unseen
package), written to analysis/sound-model/embedding.npz with its SHA-256 in musicnn.json.
"""

from __future__ import annotations

import os

for _variable in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ[_variable] = "1"  # as in the agent's workers; before numpy is imported

import argparse  # noqa: E402
import hashlib  # noqa: E402
import sys  # noqa: E402
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
    """Embeddings are cached per version of the code that makes them (the installed cratesense:
    another checkout's child process caches its own): the analysis code and the model's files."""
    import cratesense.analysis

    code = Path(cratesense.analysis.__file__).resolve().parent
    digest = hashlib.sha1()
    for name in ("features.py", "embedding.py", "decode.py", "learned.py", "pipeline.py"):
        if (code / name).exists():
            digest.update((code / name).read_bytes())
    for model_file in sorted((code / "sound-model").glob("*")) if (code / "sound-model").exists() else ():
        digest.update(model_file.read_bytes())
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


def pipeline_embedding(path: Path) -> np.ndarray:
    """The installed cratesense's embedding of a file, through ``analyze_file`` (whatever its
    version: ``--against`` runs this in another checkout)."""
    cached = WORK / f"pipeline-{_CODE_VERSION}" / f"{_key(path)}.npy"
    if cached.exists():
        return np.load(cached)
    vector = np.array(analyze_file(path).descriptors.embedding, np.float64)
    cached.parent.mkdir(parents=True, exist_ok=True)
    np.save(cached, vector)
    return vector


def _model_files_version() -> str:
    """The learned features are cached per model files and patch choice (not per projection:
    ``--fit`` changes that, and the features it is fitted on stay valid)."""
    import json

    from cratesense.analysis import learned

    manifest = json.loads((learned.model_folder() / learned.MANIFEST).read_text())
    digest = hashlib.sha1(Path(learned.__file__).read_bytes())
    digest.update(json.dumps(manifest["models"], sort_keys=True).encode())
    return digest.hexdigest()[:12]


def model_view(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """The sound model's view of a file, on the patches the pipeline chooses: its 400 penultimate
    units and its 100 label scores (in the model's label order). Cached; bench/tags.py reads the
    scores from here too."""
    from cratesense.analysis import learned

    cached = WORK / f"learned-{_model_files_version()}" / f"{_key(path)}.npz"
    if cached.exists():
        with np.load(cached) as stored:
            return stored["features"], stored["scores"]
    model = learned.shipped_model()
    assert not isinstance(model, Exception), model
    collector = None
    with AudioFile(path) as audio:
        for block in audio.blocks(native=True):
            if block.native is not None:
                collector = collector or learned.PatchCollector(block.native_rate, model.rate, model.window_samples,
                                                                learned.PATCHES)
                collector.feed(block.native)
    windows = collector.finish() if collector is not None else np.zeros((0, 1), np.float32)
    if len(windows):
        output = model.infer(windows)
        features, scores = output.features.astype(np.float64), np.array(list(output.scores.values()))
    else:  # silence: nothing to hear
        features, scores = np.zeros(400), np.zeros(len(model.labels))
    cached.parent.mkdir(parents=True, exist_ok=True)
    np.savez(cached, features=features, scores=scores)
    return features, scores


def learned_features(path: Path) -> np.ndarray:
    return model_view(path)[0]


def _timbre_code_version() -> str:
    from cratesense.analysis import embedding, features

    digest = hashlib.sha1(Path(features.__file__).read_bytes())
    digest.update(Path(embedding.__file__).read_bytes())
    return digest.hexdigest()[:12]


def timbre_view(path: Path) -> np.ndarray:
    """The timbre statistics' unit vector of a file (``embedding.timbre_embedding``; zeros when
    there is too little sound). Cached per version of the code that makes it."""
    from cratesense.analysis.embedding import TIMBRE_SIZE, timbre_embedding
    from cratesense.analysis.features import TimbreExtractor

    cached = WORK / f"timbre-{_timbre_code_version()}" / f"{_key(path)}.npy"
    if cached.exists():
        return np.load(cached)
    extractor = None
    with AudioFile(path) as audio:
        for block in audio.blocks(native=True):
            if block.native is not None:
                extractor = extractor or TimbreExtractor(block.native_rate)
                extractor.feed(block.native)
    vector = timbre_embedding(extractor.finish() if extractor is not None else None)
    vector = np.zeros(TIMBRE_SIZE) if vector is None else vector
    cached.parent.mkdir(parents=True, exist_ok=True)
    np.save(cached, vector)
    return vector


def learned_outputs(path: Path) -> np.ndarray:
    """A file's embedding as the pipeline makes it (the same patches, model, statistics and
    projections) and its parts, in one row: the 400 penultimate units, the 64-d embedding, the
    model's projected half, the statistics' projected half."""
    from cratesense.analysis import learned

    features, timbre = learned_features(path), timbre_view(path)
    projection = learned.shipped_model().projection  # type: ignore[union-attr]
    embedding = projection.embed(features, timbre)
    embedding = np.zeros(64) if embedding is None else np.asarray(embedding, np.float64)
    return np.concatenate([features, embedding, projection.model_part(features),
                           projection.timbre_components @ timbre])


RAW = slice(0, 400)  # of a ``learned_outputs`` row: the penultimate units
V4 = slice(400, 464)  # the embedding
MODEL_HALF = slice(464, 496)  # its model part, before weighing
TIMBRE_HALF = slice(496, 528)  # its timbre statistics part


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
    return [vector.tolist() for vector in _parallel(pipeline_embedding, [Path(path) for path in paths])]


def _embeddings_there(against: Path, paths: list[Path]) -> np.ndarray:
    import json
    import subprocess

    python = str(against / ".venv" / "bin" / "python")
    done = subprocess.run([python, __file__, "--embed-child", *map(str, paths)], capture_output=True, text=True,
                          check=True, cwd="/")
    return np.array(json.loads(done.stdout.strip().splitlines()[-1]))


def similarity_rows(set_name: str, against: Path | None, encodes: bool = True) -> list[tuple]:
    items = labelled_set(set_name)
    labels = [package for package, _ in items]
    originals = [path for _, path in items]
    first = pipeline_embedding(originals[0])
    assert np.allclose(first, learned_outputs(originals[0])[V4], atol=2e-5), "the bench's v4 is not the pipeline's"
    rows = []
    conditions = [("as shipped", originals)]
    if encodes:
        conditions.append(("mixed encodes", [encode(path, mixed_codec(path)) for path in originals]))
    for condition, paths in conditions:
        progress(f"{set_name}, {condition}: {len(paths)} files")
        outputs = np.array(_parallel(learned_outputs, paths))
        ours = precision_per_track(outputs[:, V4], labels)
        raw = precision_at(outputs[:, RAW], labels)
        halves = (precision_at(outputs[:, MODEL_HALF], labels), precision_at(outputs[:, TIMBRE_HALF], labels))
        baseline = precision_per_track(standardized(np.array(_parallel(mfcc, paths))), labels)
        there = None
        differences: dict[str, tuple[float, float, float]] = {}  # name -> (mean difference, 95 % CI)

        def versus(name: str, first: np.ndarray, second: np.ndarray) -> None:
            differences[name] = (float((first - second).mean()), *difference_interval(first, second))

        versus("v4-MFCC", ours, baseline)
        if against:
            theirs = _embeddings_there(against, paths)
            there_per_track = precision_per_track(theirs, labels)
            there = float(there_per_track.mean())
            versus("theirs-MFCC", there_per_track, baseline)
            versus("v4-theirs", ours, there_per_track)
        rows.append((set_name, condition, len(paths), len(set(labels)), float(ours.mean()), halves, raw,
                     float(baseline.mean()), difference_interval(ours, baseline), there, chance(labels),
                     differences))
    return rows


def stability_rows(set_name: str) -> list[tuple]:
    items = labelled_set(set_name)
    originals = [path for _, path in items]
    firsts = [index for index, (package, _) in enumerate(items) if [p for p, _ in items[:index]].count(package) < 2]
    base = {"v4": np.array(_parallel(learned_outputs, originals))[:, V4], "MFCC": np.array(_parallel(mfcc, originals))}
    mean, spread = base["MFCC"].mean(axis=0), base["MFCC"].std(axis=0) + 1e-12
    base["MFCC"] = (base["MFCC"] - mean) / spread
    rows = []
    for codec in ENCODES:
        encoded = [encode(originals[index], codec) for index in firsts]
        progress(f"{set_name}: stability, {codec}: {len(encoded)} files")
        found = {"v4": np.array(_parallel(learned_outputs, encoded))[:, V4],
                 "MFCC": (np.array(_parallel(mfcc, encoded)) - mean) / spread}
        for method in ("v4", "MFCC"):
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


def fit_corpus() -> list[Path]:
    """The development packages (up to 60 tracks each) and the rendered development subsets of
    bench/devset.py that are cached: never a held-out or unseen package."""
    import json

    from soundtracks import DEVELOPMENT, soundtrack

    paths = [path for package, under in DEVELOPMENT.items() for path in soundtrack(package, under, limit=60)]
    for subset in ("classical", "polyphony", "folk", "irish", "pop", "synthesized", "edm-synth-a", "edm-midi-fluidr3"):
        for meta in sorted((CACHE / "devset" / subset).glob("*.json")):
            audio = Path(json.loads(meta.read_text())["audio"])
            if audio.exists():
                paths.append(audio)
    return paths


def fit() -> None:
    """The projections: the fit corpus' mean penultimate units and their first 32 principal
    directions, each scaled by its spread's square root (half-way to whitening: the leading
    directions still count more, but not by their whole variance); the first 32 principal
    directions of the timbre statistics' unit vectors (not centred: they are centred where music
    lies already, and a cosine near 0 must still mean unrelated); written beside the model."""
    import json

    from cratesense.analysis import learned
    from cratesense.analysis.embedding import MODEL_DIMENSIONS, TIMBRE_DIMENSIONS

    paths = fit_corpus()
    progress(f"fit corpus: {len(paths)} files")
    features = np.array(_parallel(learned_features, paths))
    mean = features.mean(axis=0)
    _, spread, directions = np.linalg.svd(features - mean, full_matrices=False)
    scale = np.sqrt(spread[:MODEL_DIMENSIONS] / spread[0])
    timbres = np.array(_parallel(timbre_view, paths))
    timbres = timbres[np.linalg.norm(timbres, axis=1) > 0.5]  # not the silent ones
    _, timbre_spread, timbre_directions = np.linalg.svd(timbres, full_matrices=False)
    folder = learned.model_folder()
    target = folder / "embedding.npz"
    np.savez(target, mean=mean.astype(np.float32), components=directions[:MODEL_DIMENSIONS].astype(np.float32),
             scale=scale.astype(np.float32), timbre_components=timbre_directions[:TIMBRE_DIMENSIONS].astype(np.float32))
    manifest = json.loads((folder / learned.MANIFEST).read_text())
    manifest["embedding"] = {
        "file": target.name, "sha256": hashlib.sha256(target.read_bytes()).hexdigest(),
        "fitted_by": "bench/similar.py --fit", "fit_corpus_tracks": len(paths),
        "explained_variance": round(float((spread[:MODEL_DIMENSIONS] ** 2).sum() / (spread ** 2).sum()), 4),
        "timbre_explained_variance": round(float((timbre_spread[:TIMBRE_DIMENSIONS] ** 2).sum()
                                                 / (timbre_spread ** 2).sum()), 4),
    }
    (folder / learned.MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n")
    print(f"wrote {target} ({len(paths)} tracks; {MODEL_DIMENSIONS} directions keep "
          f"{manifest['embedding']['explained_variance']:.1%} of the model's variance, {TIMBRE_DIMENSIONS} "
          f"{manifest['embedding']['timbre_explained_variance']:.1%} of the statistics')")


def progress(message: str) -> None:
    print(f"[similar] {message}", file=sys.stderr, flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sets", default=",".join(SETS), help="which sets (development, held-out, unseen)")
    parser.add_argument("--fit", action="store_true", help="fit the embedding's projection and exit")
    parser.add_argument("--against", type=Path, help="another checkout (with its .venv): its embedding, beside ours")
    parser.add_argument("--no-encodes", action="store_true", help="the files as shipped only: no mixed encodes, "
                        "no stability rows")
    parser.add_argument("--embed-child", nargs="+", help=argparse.SUPPRESS)
    arguments = parser.parse_args()
    if arguments.embed_child:
        import json

        print(json.dumps(embed_child(arguments.embed_child)))
        return 0
    if arguments.fit:
        fit()
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
    print(f"{'set':<12} {'files':<22} {'packages':>8} {'v4':>6} {'model':>6} {'timbre':>6} {'raw':>6} {'MFCC':>6} "
          f"{'v4-MFCC 95% CI':>17} {there:>9} {'chance':>7}")
    compared = []
    for name in names:
        for set_name, condition, files, packages, ours, (model, timbre), raw, baseline, (low, high), before, luck, \
                differences in similarity_rows(name, arguments.against, encodes=not arguments.no_encodes):
            compared.append((set_name, condition, differences))
            before = f"{before:.3f}" if before is not None else ""
            print(f"{set_name:<12} {condition + f' ({files})':<22} {packages:>8} {ours:>6.3f} {model:>6.3f} "
                  f"{timbre:>6.3f} {raw:>6.3f} {baseline:>6.3f} {f'{low:+.3f}..{high:+.3f}':>17} {before:>9} "
                  f"{luck:>7.3f}")
    if arguments.against:
        print(f"(--against: the embedding of {arguments.against})")
    print("\nDifferences of P@5, mean and paired 95 % CI over the tracks")
    for set_name, condition, differences in compared:
        print(f"{set_name:<12} {condition:<14} " + "  ".join(
            f"{label} {mean:+.3f} [{low:+.3f}..{high:+.3f}]" for label, (mean, low, high) in differences.items()))
    if arguments.no_encodes:
        return 0
    print("\nStability across encodes (cosine of each encode to its original)")
    print(f"{'set':<12} {'codec':<5} {'method':<6} {'tracks':>6} {'min':>6} {'median':>7} {'own is nearest':>15} "
          f"{'nearest other (median)':>23}")
    for name in names:
        for set_name, codec, method, tracks, low, middle, own, other in stability_rows(name):
            print(f"{set_name:<12} {codec:<5} {method:<6} {tracks:>6} {low:>6.3f} {middle:>7.3f} {own:>15.0%} "
                  f"{other:>23.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
