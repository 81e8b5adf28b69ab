"""Tempo, key and downbeat accuracy against ground truth, per subset, side by side with peers in
one run; and the descriptors' speed.

    python bench/accuracy.py [--quick] [--no-peers] [--no-check]
    python bench/accuracy.py --speed [--files N] [--against CHECKOUT]   (under flock -x)

The development set and the independent check are described in bench/devset.py; they are
rendered once and cached under ~/.cache/cratesense-bench (``scripts/setup.sh bench`` installs
fluidsynth, the FluidR3 soundfont, MMA, music21, mido and the peers).

Methods: cratesense (``analyze_file``, as the agent runs it); Mixxx's own analyzers
(``mixxx-analyzer``: the Queen Mary beat tracker and KeyFinder, as a Mixxx DJ has them); librosa
(``beat.beat_track``; ``chroma_cqt`` + Krumhansl-Kessler profiles); Essentia
(``RhythmExtractor2013`` multifeature, ``PercivalBpmEstimator``; ``KeyExtractor`` with the edma,
temperley and krumhansl profiles). Peers' answers are cached per file and library version
(they cost minutes per run).

Folds: every subset is one source (bench/devset.py). Tuning folds are where weights and
thresholds are chosen; the held-out folds are reported apart and never tuned on. Beside every
comparison with a peer stands a paired bootstrap interval (95 %, 2000 resamples of the pieces)
of our score less the peer's: a difference whose interval holds 0 is no difference.

Metrics: tempo Accuracy1 (within 4 %) and Accuracy2 (also x2, x1/2, x3, x1/3); key exact and the
MIREX weighted score (1 exact, 0.5 a fifth away, 0.3 relative, 0.2 parallel, else 0);
downbeat F-measure (+-70 ms) of the bar grid a DJ program would draw: the first downbeat and
the bar length (beats per bar x 60 / BPM) repeated over the piece. Peers have no downbeat: their
row is the naive grid of their first beat, four beats a bar. Tempo is asked for within
55-190 BPM (the truths lie within 60-185; the agent's default range is 70-180).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import devset
from cratesense.analysis.decode import AudioFile
from cratesense.analysis.keys import Key, parse_key
from cratesense.analysis.pipeline import analyze_file

BPM_RANGE = (55.0, 190.0)
TOLERANCE = 0.07  # downbeat F-measure window, seconds
PEER_CACHE = devset.CACHE.parent / "peers"
_KK_MAJOR = np.array([6.35, 2.23, 3.48, 2.33, 4.38, 4.09, 2.52, 5.19, 2.39, 3.66, 2.29, 2.88])
_KK_MINOR = np.array([6.33, 2.68, 3.52, 5.38, 2.60, 3.53, 2.54, 4.75, 3.98, 2.69, 3.34, 3.17])
TEMPO_METHODS = ("cratesense", "baseline", "mixxx", "librosa", "essentia-multifeature", "essentia-percival")
KEY_METHODS = ("cratesense", "baseline", "mixxx", "librosa-krumhansl", "essentia-edma", "essentia-temperley", "essentia-krumhansl")
DOWNBEAT_METHODS = ("cratesense", "baseline", "mixxx", "librosa", "essentia-multifeature")
BOOTSTRAP = 2000


@dataclass
class Answer:
    """What one method said about one piece."""

    bpm: float | None = None
    key: str | None = None
    downbeat: float | None = None  # seconds to the first downbeat
    beats_per_bar: int | None = None
    strength: float | None = None  # key strength
    tuning: float | None = None  # cents from A4 = 440 Hz
    tempo_confidence: float | None = None


@dataclass
class Score:
    tempo1: list[bool] = field(default_factory=list)
    tempo2: list[bool] = field(default_factory=list)
    key_exact: list[bool] = field(default_factory=list)
    mirex: list[float] = field(default_factory=list)
    downbeat_f: list[float] = field(default_factory=list)


# --- the methods ------------------------------------------------------------------------------


FEATURE_CACHE = devset.CACHE.parent / "features"


def cratesense(path: str, cached_features: bool = False) -> Answer:
    """Our answer, as the agent computes it; with ``cached_features`` the frame features come from
    a cache (stamped with the feature code and the file), so tuning the stages after them is fast."""
    if cached_features:
        from cratesense.analysis.loudness import Loudness
        from cratesense.analysis.pipeline import _describe

        descriptors = _describe(_features(path), Loudness(None, None, None, None), BPM_RANGE)
    else:
        descriptors = analyze_file(path, bpm_range=BPM_RANGE).descriptors
    return Answer(
        descriptors.bpm,
        descriptors.key,
        getattr(descriptors, "downbeat_offset", None),
        getattr(descriptors, "beats_per_bar", None),
        descriptors.key_strength,
        descriptors.tuning_cents,
        descriptors.bpm_confidence,
    )


def _features(path: str):
    """The streamed frame features of ``path``, from the cache when the feature code and the
    file are the ones it was made from."""
    import hashlib

    from cratesense.analysis import decode, features as features_module

    code = hashlib.sha256(Path(features_module.__file__).read_bytes() + Path(decode.__file__).read_bytes()).hexdigest()[:12]
    stat = os.stat(path)
    cache = FEATURE_CACHE / Path(path).parent.name / f"{Path(path).stem}-{code}-{stat.st_size}-{int(stat.st_mtime)}.npz"
    if cache.exists():
        stored = np.load(cache)
        return features_module.FrameFeatures(**{name: stored[name] for name in stored.files if name != "duration"},
                                             duration=float(stored["duration"]))
    extractor = features_module.FeatureExtractor()
    with AudioFile(path) as audio:
        for block in audio.blocks(native=False):
            if block.analysis.size:
                extractor.feed(block.analysis)
    found = extractor.finish()
    cache.parent.mkdir(parents=True, exist_ok=True)
    np.savez(cache, **{name: getattr(found, name) for name in found.__dataclass_fields__})
    return found


def _krumhansl(profile: np.ndarray) -> Key:
    scores = [
        (float(np.corrcoef(profile, np.roll(ref, tonic))[0, 1]), Key(tonic, minor))
        for tonic in range(12)
        for minor, ref in ((False, _KK_MAJOR), (True, _KK_MINOR))
    ]
    return max(scores, key=lambda item: item[0])[1]


def peers(path: str, cached_only: bool = False) -> dict[str, Answer]:
    """Every peer's answer (Mixxx, librosa, Essentia), from the cache when the libraries are the
    same; with ``cached_only`` nothing is computed (a piece not cached has no peers)."""
    versions = _peer_versions()
    if not versions:
        return {}
    cache = PEER_CACHE / Path(path).parent.name / (Path(path).stem + ".json")
    stat = os.stat(path)
    stamp = f"{versions}|{stat.st_size}|{int(stat.st_mtime)}"
    if cache.exists():
        stored = json.loads(cache.read_text())
        if stored.get("stamp") == stamp:
            return {name: Answer(**answer) for name, answer in stored["answers"].items()}
    if cached_only:
        return {}
    answers = {}
    for library, run in (("mixxx", _mixxx), ("librosa", _librosa), ("essentia", _essentia)):
        if library in versions:
            try:
                answers.update(run(path))
            except Exception as error:  # a peer that fails on a file answers nothing for it
                progress(f"{library} failed on {Path(path).name}: {error}")
    cache.parent.mkdir(parents=True, exist_ok=True)
    cache.write_text(json.dumps({"stamp": stamp, "answers": {k: vars(v) for k, v in answers.items()}}))
    return answers


def _peer_versions() -> str:
    found = []
    try:
        from importlib.metadata import version

        found.append(f"mixxx-analyzer {version('mixxx-analyzer')}")
    except Exception:
        pass
    try:
        import librosa

        found.append(f"librosa {librosa.__version__}")
    except ImportError:
        pass
    try:
        import essentia

        found.append(f"essentia {essentia.__version__}")
    except ImportError:
        pass
    return ", ".join(found)


def _mixxx(path: str) -> dict[str, Answer]:
    """Mixxx's analyzers (its own binary in the wheel): BPM, key and the beat grid."""
    import mixxx_analyzer

    result = mixxx_analyzer.analyze(path)
    key = parse_key(result.key) if result.key else None
    first = float(result.beatgrid[0]) if result.beatgrid else None
    return {"mixxx": Answer(result.bpm, key.name if key else None, first, 4)}


def _librosa(path: str) -> dict[str, Answer]:
    import librosa

    y, sr = librosa.load(path, sr=22050)
    tempo, beats = librosa.beat.beat_track(y=y, sr=sr, units="time")
    chroma = librosa.feature.chroma_cqt(y=y, sr=sr).mean(axis=1)
    first = float(beats[0]) if len(beats) else None
    return {
        "librosa": Answer(float(np.atleast_1d(tempo)[0]), None, first, 4),
        "librosa-krumhansl": Answer(None, _krumhansl(chroma).name),
    }


def _essentia(path: str) -> dict[str, Answer]:
    import essentia

    essentia.log.infoActive = False
    essentia.log.warningActive = False
    import essentia.standard as es

    audio = es.MonoLoader(filename=path, sampleRate=44100)()
    bpm, ticks, *_ = es.RhythmExtractor2013(method="multifeature")(audio)
    answers = {
        "essentia-multifeature": Answer(float(bpm), None, float(ticks[0]) if len(ticks) else None, 4),
        "essentia-percival": Answer(float(es.PercivalBpmEstimator()(audio))),
    }
    for profile in ("edma", "temperley", "krumhansl"):
        tonic, scale, _strength = es.KeyExtractor(profileType=profile)(audio)
        key = parse_key(f"{tonic} {scale}")
        answers[f"essentia-{profile}"] = Answer(None, key.name if key else None)
    return answers


# --- scoring ------------------------------------------------------------------------------------


def tempo_scores(estimate: float | None, truth: float) -> tuple[bool, bool]:
    if not estimate:
        return False, False
    within = lambda factor: abs(estimate - truth * factor) <= 0.04 * truth * factor  # noqa: E731
    return within(1), any(within(f) for f in (1, 2, 0.5, 3, 1 / 3))


def mirex(estimate: Key | None, truth: Key) -> float:
    if estimate is None:
        return 0.0
    if estimate == truth:
        return 1.0
    if estimate.minor == truth.minor and (estimate.tonic - truth.tonic) % 12 in (5, 7):
        return 0.5
    relative = (truth.tonic + 3) % 12 if truth.minor else (truth.tonic - 3) % 12
    if estimate.minor != truth.minor and estimate.tonic == relative:
        return 0.3
    if estimate.minor != truth.minor and estimate.tonic == truth.tonic:
        return 0.2
    return 0.0


def downbeat_f(answer: Answer, truth: list[float]) -> float:
    """F-measure of the bar grid (first downbeat, beats per bar x beat) against the bar lines."""
    if not answer.bpm or answer.downbeat is None or not answer.beats_per_bar or not truth:
        return 0.0
    bar = answer.beats_per_bar * 60.0 / answer.bpm
    end = truth[-1] + bar / 2
    start = answer.downbeat - bar * np.floor(answer.downbeat / bar)
    grid = np.arange(start, end, bar)
    truth_array = np.asarray(truth)
    hits, used = 0, np.zeros(truth_array.size, bool)
    for time_ in grid:  # one-to-one matching; the bar is far longer than the window
        nearest = int(np.argmin(np.abs(truth_array - time_)))
        if not used[nearest] and abs(truth_array[nearest] - time_) <= TOLERANCE:
            used[nearest] = True
            hits += 1
    if hits == 0:
        return 0.0
    precision, recall = hits / grid.size, hits / truth_array.size
    return 2 * precision * recall / (precision + recall)


def record(score: Score, piece: devset.Piece, answer: Answer, method: str) -> None:
    if piece.bpm is not None and method in TEMPO_METHODS:
        a1, a2 = tempo_scores(answer.bpm, piece.bpm)
        score.tempo1.append(a1)
        score.tempo2.append(a2)
    if piece.key is not None and method in KEY_METHODS:
        estimate = parse_key(answer.key) if answer.key else None
        score.key_exact.append(estimate == piece.key_truth)
        score.mirex.append(mirex(estimate, piece.key_truth))
    if piece.downbeats and method in DOWNBEAT_METHODS:
        score.downbeat_f.append(downbeat_f(answer, piece.downbeats))


def fraction(values) -> str:
    return f"{np.mean(values):5.3f}" if values else "    -"


def scores_of(pieces: list[devset.Piece], answers: dict[str, dict[str, Answer]], method: str) -> Score:
    score = Score()
    for piece in pieces:
        if method in answers[piece.audio]:
            record(score, piece, answers[piece.audio][method], method)
    return score


def table(title: str, groups: dict[str, list[devset.Piece]], answers: dict[str, dict[str, Answer]], methods) -> None:
    """Every method's figures, per group."""
    print(f"\n{title}")
    print(f"{'subset':20} {'method':22} {'n':>4} {'Acc1':>5} {'Acc2':>5} {'n':>4} {'exact':>5} {'MIREX':>5} {'n':>4} {'downF':>5}")
    for group, pieces in groups.items():
        for method in methods:
            score = scores_of(pieces, answers, method)
            if not (score.tempo1 or score.key_exact or score.downbeat_f):
                continue
            print(
                f"{group:20} {method:22} {len(score.tempo1):4d} {fraction(score.tempo1)} {fraction(score.tempo2)} "
                f"{len(score.key_exact):4d} {fraction(score.key_exact)} {fraction(score.mirex)} "
                f"{len(score.downbeat_f):4d} {fraction(score.downbeat_f)}"
            )


def paired_interval(ours: list[float], theirs: list[float], seed: int = 0) -> tuple[float, float, float]:
    """Our mean less theirs over the same pieces, and its 95 % bootstrap interval."""
    difference = np.asarray(ours, float) - np.asarray(theirs, float)
    rng = np.random.default_rng(seed)
    means = difference[rng.integers(0, difference.size, (BOOTSTRAP, difference.size))].mean(axis=1)
    low, high = np.percentile(means, [2.5, 97.5])
    return float(difference.mean()), float(low), float(high)


_METRICS = (("Acc1", "tempo1", TEMPO_METHODS), ("Acc2", "tempo2", TEMPO_METHODS), ("MIREX", "mirex", KEY_METHODS),
            ("downbeat F", "downbeat_f", DOWNBEAT_METHODS))


def comparison(title: str, groups: dict[str, list[devset.Piece]], answers: dict[str, dict[str, Answer]],
               against: str | None = None) -> list[str]:
    """A markdown table: per group and metric, ours, the best peer on that group (or the method
    ``against``), and our lead over it with its paired bootstrap interval; ✗ where it is ahead
    beyond the interval. Returns the groups and metrics where it is ahead (its interval excludes 0)."""
    print(f"\n{title}\n")
    other = against or "best peer"
    print("| subset | " + " | ".join(f"n | {name} ours | {other} | ours - it [95 %]" for name, _, _ in _METRICS) + " |")
    print("|---|" + "---|---|---|---|" * len(_METRICS))
    behind = []
    for group, pieces in groups.items():
        cells = []
        for name, attribute, methods in _METRICS:
            ours = getattr(scores_of(pieces, answers, "cratesense"), attribute)
            if not ours:
                cells.append("0 | - | - | -")
                continue
            candidates = [against] if against else [m for m in methods if m not in ("cratesense", "baseline")]
            peers_ = {m: getattr(scores_of(pieces, answers, m), attribute) for m in candidates}
            peers_ = {m: v for m, v in peers_.items() if len(v) == len(ours)}
            if not peers_:
                cells.append(f"{len(ours)} | {np.mean(ours):.3f} | - | -")
                continue
            best = max(peers_, key=lambda m: np.mean(peers_[m]))
            lead, low, high = paired_interval(ours, peers_[best])
            mark = " ✗" if high < 0 else (" **ahead**" if low > 0 else "")
            if high < 0:
                behind.append(f"{group} {name} ({best})")
            cells.append(f"{len(ours)} | {np.mean(ours):.3f} | {np.mean(peers_[best]):.3f} {best} | "
                         f"{lead:+.3f} [{low:+.3f}, {high:+.3f}]{mark}")
        print(f"| {group.strip()} | " + " | ".join(cells) + " |")
    return behind


def calibration(pieces: list[devset.Piece], answers: dict[str, dict[str, Answer]], title: str) -> None:
    """How often our key is right at each key strength: an honest strength is right about as
    often as it says."""
    print(f"\nKey strength against how often the key is right (cratesense, {title})")
    rows = [(answers[p.audio]["cratesense"].strength, parse_key(answers[p.audio]["cratesense"].key or "") == p.key_truth)
            for p in pieces if p.key and answers[p.audio]["cratesense"].strength is not None]
    for low, high in ((0.0, 0.3), (0.3, 0.5), (0.5, 0.8), (0.8, 0.95), (0.95, 1.01)):
        inside = [right for strength, right in rows if low <= strength < high]
        share = f"{np.mean(inside):.2f}" if inside else "   -"
        print(f"  strength {low:.2f}-{min(high, 1.0):.2f}: {len(inside):4d} pieces, right {share}")


def tempo_calibration(pieces: list[devset.Piece], answers: dict[str, dict[str, Answer]], title: str) -> None:
    """How often our tempo is right at each tempo confidence (whether the confidence can flag an
    uncertain tempo)."""
    rows = [(answers[p.audio]["cratesense"].tempo_confidence, *tempo_scores(answers[p.audio]["cratesense"].bpm, p.bpm))
            for p in pieces if p.bpm and answers[p.audio]["cratesense"].tempo_confidence is not None]
    print(f"\nTempo confidence against how often the tempo is right (cratesense, {title})")
    for low, high in ((0.0, 0.1), (0.1, 0.2), (0.2, 0.3), (0.3, 0.4), (0.4, 0.6), (0.6, 1.01)):
        inside = [(a1, a2) for confidence, a1, a2 in rows if low <= confidence < high]
        shares = (f"Acc1 {np.mean([a for a, _ in inside]):.2f}, Acc2 {np.mean([b for _, b in inside]):.2f}"
                  if inside else "-")
        print(f"  confidence {low:.2f}-{min(high, 1.0):.2f}: {len(inside):4d} pieces, {shares}")


def tuning_errors(pieces: list[devset.Piece], answers: dict[str, dict[str, Answer]], title: str) -> None:
    """How far our tuning estimate is from the production's detune."""
    errors = [abs(answers[p.audio]["cratesense"].tuning - p.tuning_cents) for p in pieces
              if p.tuning_cents is not None and answers[p.audio]["cratesense"].tuning is not None]
    if errors:
        print(f"\nTuning (cratesense, {title}): {len(errors)} productions, |error| median {np.median(errors):.1f} cents, "
              f"90th percentile {np.percentile(errors, 90):.1f}, within 10 cents {np.mean(np.asarray(errors) <= 10):.2f}")


_TAGS = ("ternary", "fast", "modulating", "orchestral", "piano", "quartet", "melody", "vocal",
         "electronic", "minor", "riff-led", "chords", "detuned", "long-intro", "swung",
         "house", "techno", "trance", "dnb", "hiphop", "dubstep")


def groups_of(pieces: list[devset.Piece], subsets) -> dict[str, list[devset.Piece]]:
    groups = {subset: [p for p in pieces if p.subset == subset] for subset in subsets}
    groups = {name: members for name, members in groups.items() if members}
    if len(groups) > 1:
        everything = [p for p in pieces if p.subset in subsets]
        for tag in _TAGS:
            tagged = [p for p in everything if tag in p.tags]
            if tagged:
                groups[f"  [{tag}]"] = tagged
        groups["ALL"] = everything
    return groups


def progress(message: str) -> None:
    print(f"... {message}", file=sys.stderr, flush=True)


# --- speed --------------------------------------------------------------------------------------


def speed_child(paths: list[str]) -> dict:
    """CPU seconds of one decode of the analysis view (the yardstick) and of the descriptors on
    it (frame features, tempo, key, bars; bench/similar.py --cost measures the
    embedding's), for the installed cratesense."""
    from cratesense.analysis.features import FeatureExtractor
    from cratesense.analysis.loudness import Loudness
    from cratesense.analysis.pipeline import _describe

    decode_cpu = descriptors_cpu = seconds = 0.0
    for path in paths:
        started = time.process_time()
        blocks = []
        with AudioFile(path) as audio:
            for block in audio.blocks(native=False):
                if block.analysis.size:
                    blocks.append(block.analysis)
        decode_cpu += time.process_time() - started
        seconds += sum(b.size for b in blocks) / 11025
        started = time.process_time()
        extractor = FeatureExtractor()
        for block in blocks:
            extractor.feed(block)
        _describe(extractor.finish(), Loudness(None, None, None, None), BPM_RANGE)
        descriptors_cpu += time.process_time() - started
    return {"decode": decode_cpu, "descriptors": descriptors_cpu, "seconds": seconds}


def speed(pieces: list[devset.Piece], count: int, against: Path | None, rounds: int = 3) -> None:
    """The descriptors' CPU cost here and, with ``against`` (a checkout with its own .venv),
    there, alternating in one run on the same files; each as a share of its own decode."""
    import subprocess

    chosen = [p.audio for p in pieces[:: max(1, len(pieces) // count)][:count]]
    sides = {"this checkout": sys.executable}
    if against is not None:
        sides[f"{against}"] = str(against / ".venv" / "bin" / "python")
    results: dict[str, list[dict]] = {name: [] for name in sides}
    # One BLAS thread, as the agent's workers run (daemon/worker.py): idle BLAS threads spinning
    # would be counted as CPU time.
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    for _ in range(rounds):
        for name, python in sides.items():
            done = subprocess.run([python, __file__, "--speed-child", *chosen], capture_output=True, text=True,
                                  check=True, cwd="/", env=env)
            results[name].append(json.loads(done.stdout.strip().splitlines()[-1]))
    minutes = results["this checkout"][0]["seconds"] / 60
    print(f"{len(chosen)} files, {minutes:.1f} min of audio; CPU seconds (median of {rounds} alternating runs):")
    medians = {}
    for name, runs in results.items():
        decode = float(np.median([r["decode"] for r in runs]))
        descriptors = float(np.median([r["descriptors"] for r in runs]))
        medians[name] = (decode, descriptors)
        print(f"  {name:40} decode {decode:6.2f}  descriptors {descriptors:6.2f}  descriptors/decode {descriptors / decode:5.2f}")
    if against is not None:
        (d0, s0), (d1, s1) = medians["this checkout"], medians[f"{against}"]
        print(f"  descriptors here / there: {s0 / s1:.3f} (as shares of each decode: {(s0 / d0) / (s1 / d1):.3f})")


def baseline_answers(checkout: Path, paths: list[str]) -> dict[str, Answer]:
    """Another checkout's analyzer on every piece (its own python, one file list at a time),
    cached by its commit under the bench cache."""
    import subprocess

    commit = subprocess.run(["git", "-C", str(checkout), "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True, check=True).stdout.strip()
    cache = PEER_CACHE.parent / f"baseline-{commit}.json"
    stored = json.loads(cache.read_text()) if cache.exists() else {}
    missing = [path for path in paths if path not in stored]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
    for start in range(0, len(missing), 40):
        done = subprocess.run([str(checkout / ".venv" / "bin" / "python"), __file__, "--baseline-child", *missing[start : start + 40]],
                              capture_output=True, text=True, check=True, cwd="/", env=env)
        stored.update(json.loads(done.stdout.strip().splitlines()[-1]))
        cache.write_text(json.dumps(stored))
    return {path: Answer(**stored[path]) for path in paths}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a third of the set")
    parser.add_argument("--no-peers", action="store_true", help="cratesense only")
    parser.add_argument("--no-check", action="store_true", help="leave out the held-out folds")
    parser.add_argument("--rendered", action="store_true", help="only the pieces rendered so far (no rendering)")
    parser.add_argument("--cached-peers", action="store_true", help="peers' answers only where cached (none computed)")
    parser.add_argument("--only", default=None, help="only these subsets (comma-separated), with --rendered")
    parser.add_argument("--cached-features", action="store_true",
                        help="our frame features from a cache (for tuning the stages after them; not for a result)")
    parser.add_argument("--speed", action="store_true", help="measure the descriptors' CPU cost instead")
    parser.add_argument("--files", type=int, default=24, help="files for --speed")
    parser.add_argument("--against", type=Path, default=None, help="--speed: another checkout (with its .venv) to compare with")
    parser.add_argument("--speed-child", nargs="+", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--baseline", type=Path, default=None,
                        help="another checkout (with its .venv) whose analyzer is reported beside ours as 'baseline'")
    parser.add_argument("--baseline-child", nargs="+", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.speed_child:
        print(json.dumps(speed_child(args.speed_child)))
        return 0
    if args.baseline_child:
        answers = {}
        for path in args.baseline_child:
            answers[path] = vars(cratesense(path))
        print(json.dumps(answers))
        return 0
    if args.speed:
        speed([p for p in devset.cached_pieces() if p.subset in devset.DEV_SUBSETS], args.files, args.against)
        return 0
    started = time.perf_counter()
    if args.rendered:
        chosen = devset.DEV_SUBSETS + (() if args.no_check else devset.CHECK_SUBSETS)
        if args.only:
            chosen = tuple(s for s in chosen if s in args.only.split(","))
        pieces = [p for p in devset.cached_pieces() if p.subset in chosen]
    else:
        pieces = devset.build(quick=args.quick, check=not args.no_check)
    progress(f"{len(pieces)} pieces ready in {time.perf_counter() - started:.0f} s")
    answers: dict[str, dict[str, Answer]] = {}
    for number, piece in enumerate(pieces, 1):
        if number % 20 == 0:
            progress(f"analyzed {number}/{len(pieces)}")
        answers[piece.audio] = {"cratesense": cratesense(piece.audio, args.cached_features)}
        if not args.no_peers:
            answers[piece.audio].update(peers(piece.audio, cached_only=args.cached_peers))
    if args.baseline is not None:
        for path, answer in baseline_answers(args.baseline, [p.audio for p in pieces]).items():
            answers[path]["baseline"] = answer
    counts = ", ".join(f"{sum(p.subset == s for p in pieces)} {s}" for s in devset.DEV_SUBSETS + devset.CHECK_SUBSETS)
    print(f"{len(pieces)} pieces: {counts}")
    print(f"peers: {_peer_versions() if not args.no_peers else 'not run'}")
    methods = list(dict.fromkeys(TEMPO_METHODS + KEY_METHODS))
    sections = [("Tuning folds", devset.DEV_SUBSETS)]
    if not args.no_check:
        sections.append(("Held-out folds (never tuned on)", devset.CHECK_SUBSETS))
    behind: list[str] = []
    worse: list[str] = []
    for title, subsets in sections:
        groups = groups_of(pieces, subsets)
        table(title, groups, answers, methods)
        if not args.no_peers:
            behind += [f"{title}: {where}" for where in comparison(f"{title}: ours against the best peer", groups, answers)]
        if args.baseline is not None:
            worse += [f"{title}: {where}" for where in comparison(f"{title}: ours against the baseline ({args.baseline})",
                                                                  groups, answers, against="baseline")]
        chosen = [p for p in pieces if p.subset in subsets]
        calibration(chosen, answers, title)
        tempo_calibration(chosen, answers, title)
        tuning_errors(chosen, answers, title)
    if behind:
        print("\nA peer ahead beyond the interval: " + "; ".join(behind))
    if worse:
        print("\nThe baseline ahead beyond the interval: " + "; ".join(worse))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
