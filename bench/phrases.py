"""Phrases, cues and energy against arrangements whose sections are known by construction
(bench/arrangements.py), side by side with librosa's structural segmentation and Mixxx's own
analyzer in one run.

    flock -x /work/heavy.lock .venv/bin/python bench/phrases.py [--quick] [--no-peers]
    flock -x /work/heavy.lock .venv/bin/python bench/phrases.py --fit-energy

Reported:

* boundaries: F-measure of the section starts (bar 1 excluded: every method starts there) at
  +-0.5 s and +-1 bar, per source and split: ours end to end (our tempo, grid and bar 1), ours on
  the true grid (the phrase stage alone), and librosa's agglomerative segmentation of
  beat-synchronous chroma and MFCCs (``librosa.segment.agglomerative``) given the true number of
  sections (an oracle: it is told how many there are);
* labels: the share of matched sections (+-1 bar) whose label is the truth's;
* cues: every cue on our beat grid (+-10 ms) and never beyond the end; the mix-in (hot cue A) and
  the intro's end (our second phrase) against the true first downbeat and intro end; the mix-out
  (hot cue D) against the true outro start; Mixxx's intro end and outro start (``mixxx-analyzer``,
  GPL, a bench extra) against the same truth;
* energy: monotone on constructed pairs (the same arrangement without its drums, without its
  bass, with fewer parts: lower; louder: higher), per track and per phrase; and how the tracks of
  a real library (Debian's game soundtracks, through tests/realaudio.py) spread over 1-10.

``--fit-energy`` prints analysis/energy.py's constants as measured on the fitting half of the
reference library (Debian's game soundtracks, orchestral to techno: every other track of each
package); the spread is reported on the other half.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections import defaultdict
from pathlib import Path

for _variable in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_variable] = "1"

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

import arrangements  # noqa: E402
from audiogen import file_features  # noqa: E402
from cratesense.analysis.constants import DEFAULT_BPM_RANGE, GRID_SLACK  # noqa: E402
from cratesense.analysis.energy import energy_curve, measures, raw_score, track_raw  # noqa: E402
from cratesense.analysis.key import chroma, estimate_tuning  # noqa: E402
from cratesense.analysis.loudness import Loudness  # noqa: E402
from cratesense.analysis.phrases import bar_grid, find_phrases  # noqa: E402
from cratesense.analysis.pipeline import _describe  # noqa: E402

GRID_TOLERANCE = 0.010
UNCHANGED = 1e-3  # raw energy: a section scoring within this of its pair's is unchanged (a level is ~0.076)


def progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def f_measure(found: list[float], truth: list[float], tolerance: float) -> tuple[int, int, int]:
    """(hits, found, truth): each truth matched to at most one found boundary within tolerance."""
    used: set[int] = set()
    hits = 0
    for target in truth:
        near = [(abs(x - target), j) for j, x in enumerate(found) if j not in used and abs(x - target) <= tolerance]
        if near:
            used.add(min(near)[1])
            hits += 1
    return hits, len(found), len(truth)


def f_score(counts: list[tuple[int, int, int]]) -> float:
    hits, found, truth = (sum(c[i] for c in counts) for i in range(3))
    precision, recall = hits / max(found, 1), hits / max(truth, 1)
    return 2 * precision * recall / (precision + recall) if precision + recall else 0.0


def librosa_boundaries(path: str, sections: int) -> list[float]:
    """librosa's agglomerative segmentation (beat-synchronous chroma and MFCC), told the number of
    sections."""
    import librosa

    y, sr = librosa.load(path, sr=22050, mono=True)
    _, beats = librosa.beat.beat_track(y=y, sr=sr)
    features = np.vstack([librosa.util.normalize(librosa.feature.chroma_cqt(y=y, sr=sr), axis=0),
                          librosa.feature.mfcc(y=y, sr=sr, n_mfcc=13) / 100.0])
    synced = librosa.util.sync(features, beats, aggregate=np.median)
    bounds = librosa.segment.agglomerative(synced, sections)
    times = librosa.frames_to_time(librosa.util.fix_frames(beats, x_min=0), sr=sr)
    return sorted(float(times[b]) for b in bounds if b > 0)


def mixxx(paths: list[str]) -> dict[str, tuple[float, float]]:
    try:
        import mixxx_analyzer
    except ImportError:
        progress("mixxx-analyzer is not installed (pip install mixxx-analyzer): Mixxx left out")
        return {}
    found = {}
    for path in paths:
        try:
            result = mixxx_analyzer.analyze(path)
        except Exception as exc:  # a peer's failure is its row's, not the run's
            progress(f"mixxx-analyzer failed on {path}: {exc}")
            continue
        found[path] = (result.intro_secs, result.outro_secs)
    return found


def on_grid(cue: float, bpm: float, beat_offset: float) -> float:
    """How far a cue lies from the nearest beat of the grid (seconds)."""
    period = 60.0 / bpm
    return abs((cue - beat_offset + period / 2) % period - period / 2)


def evaluate(pieces, peers: bool, librosa: bool = True) -> dict:
    rows = defaultdict(list)
    label_hits = defaultdict(list)
    cue_report = {"cues": 0, "off_grid": 0, "at_start": 0, "beyond_end": 0, "worst_ms": 0.0, "tracks_without": 0}
    errors = defaultdict(list)  # (method, what, source) -> absolute errors in s
    mixxx_found = mixxx([p.audio for p in pieces]) if peers else {}
    for number, piece in enumerate(pieces, 1):
        progress(f"[{number}/{len(pieces)}] {piece.name}")
        features = file_features(piece.audio)
        described = _describe(features, Loudness(None, None, None, None), DEFAULT_BPM_RANGE)
        truth = piece.starts[1:]
        bar = piece.bar_seconds
        group = (piece.source, piece.split)
        ours = [p.start for p in described.phrases[1:]] if described.phrases else []
        tuning = estimate_tuning(features.pitch) if features.pitch.size else 0.0
        true_lines = bar_grid(piece.bpm, piece.first_downbeat, piece.first_downbeat, 4, features.duration)
        oracle = find_phrases(features, chroma(features.pitch, tuning), energy_curve(features), true_lines,
                              features.duration)
        methods = {"ours": (ours, described.phrases), "ours, true grid": ([p.start for p in oracle[1:]], oracle)}
        if peers and librosa:
            methods["librosa (told k)"] = (librosa_boundaries(piece.audio, len(piece.starts)), None)
        for method, (found, phrases) in methods.items():
            for tolerance_name, tolerance in (("0.5 s", 0.5), ("1 bar", bar)):
                rows[method, tolerance_name, group].append(f_measure(found, truth, tolerance))
            if phrases:
                for start, label in zip(piece.starts, piece.labels):
                    near = [p for p in phrases if abs(p.start - start) <= bar]
                    if near:
                        label_hits[method, piece.source].append(near[0].label == label)
        # cues, on our own grid
        cues = described.cues or ()
        if not cues:
            cue_report["tracks_without"] += 1
        for cue in cues:
            cue_report["cues"] += 1
            distance = on_grid(cue.start, described.bpm, described.beat_offset)
            if cue.start == 0.0 and GRID_TOLERANCE < distance <= GRID_SLACK:
                cue_report["at_start"] += 1  # the bar line a hair before 0 s, placed at 0 s
                continue
            cue_report["worst_ms"] = max(cue_report["worst_ms"], 1000 * distance)
            cue_report["off_grid"] += distance > GRID_TOLERANCE
            cue_report["beyond_end"] += not 0 <= cue.start < features.duration
        hot = {cue.hot: cue.start for cue in cues if cue.hot is not None}
        intro_end, outro_start = piece.starts[1], piece.starts[-1]
        if 0 in hot:
            errors["ours", "mix-in vs bar 1", piece.source].append(abs(hot[0] - piece.first_downbeat))
        if described.phrases and len(described.phrases) > 1:
            errors["ours", "intro end", piece.source].append(abs(described.phrases[1].start - intro_end))
        if 3 in hot:
            errors["ours", "outro start (mix-out)", piece.source].append(abs(hot[3] - outro_start))
        else:
            errors["ours", "outro start (mix-out)", piece.source].append(float("inf"))
        if piece.audio in mixxx_found:
            # Mixxx's analyzer marks where the sound starts and ends (its intro start and outro
            # end): its intro start is a mix-in; it has no intro end or outro start of its own
            intro, outro = mixxx_found[piece.audio]
            errors["Mixxx", "mix-in vs bar 1", piece.source].append(abs(intro - piece.first_downbeat))
            errors["Mixxx", "intro end", piece.source].append(abs(intro - intro_end))
            errors["Mixxx", "outro start (mix-out)", piece.source].append(abs(outro - outro_start))
    return {"rows": rows, "labels": label_hits, "cues": cue_report, "errors": errors}


def report(result: dict, pieces) -> None:
    groups = sorted({(p.source, p.split) for p in pieces})
    counts = {group: sum(1 for p in pieces if (p.source, p.split) == group) for group in groups}
    print("\nBoundary F-measure (section starts after bar 1)")
    header = "".join(f"{f'{s}/{t} ({counts[s, t]})':>24}" for s, t in groups)
    print(f"{'method':22}{'tolerance':>10}{header}")
    order = ["ours", "ours, true grid", "librosa (told k)"]
    methods = sorted({key[0] for key in result["rows"]}, key=order.index)
    for method in methods:
        for tolerance in ("0.5 s", "1 bar"):
            cells = "".join(f"{f_score(result['rows'][method, tolerance, group]):24.3f}" for group in groups)
            print(f"{method:22}{tolerance:>10}{cells}")
    print("\nLabels of matched sections (share right)")
    for (method, source), hits in sorted(result["labels"].items()):
        print(f"  {method:22}{source:12}{np.mean(hits):6.3f}  ({len(hits)} sections)")
    cues = result["cues"]
    print(f"\nCues: {cues['cues']} on {len(pieces) - cues['tracks_without']} tracks; off our grid (>10 ms): "
          f"{cues['off_grid']}; at 0 s for a bar line <= 30 ms before it: {cues['at_start']}; beyond the end: "
          f"{cues['beyond_end']}; worst distance to a beat (the others) {cues['worst_ms']:.2f} ms")
    print("\nMix points against the truth: median |error| s, share within 1 bar (tracks)")
    for (method, what, source), values in sorted(result["errors"].items(), key=lambda item: (item[0][1], item[0][2], item[0][0])):
        bar = np.median([p.bar_seconds for p in pieces if p.source == source])
        finite = np.array(values)
        print(f"  {what:24}{source:11}{method:8} median {np.median(finite):7.2f}  within a bar "
              f"{np.mean(finite <= bar):5.2f}  ({len(values)})")


def energy_checks(seeds: list[int]) -> None:
    print("\nEnergy on constructed pairs (same arrangement): the track's raw score and each section's, strictly ordered")
    comparisons = [("no drums", "full"), ("no bass", "full"), ("sparser", "full"), ("full", "louder")]
    outcomes = defaultdict(list)
    unchanged: dict[str, int] = defaultdict(int)
    for seed in seeds:
        pairs = arrangements.energy_pairs(seed)
        scored = {}
        for name, piece in pairs.items():
            features = file_features(piece.audio)
            curve = energy_curve(features)
            ends = piece.starts[1:] + [features.duration]
            sections = [raw_score(measures(curve, a, b)) for a, b in zip(piece.starts, ends)]
            scored[name] = (track_raw(curve, features.duration), sections)
        for lower, higher in comparisons:
            (track_low, sections_low), (track_high, sections_high) = scored[lower], scored[higher]
            outcomes[lower, higher, "track"].append(track_low < track_high)
            for a, b in zip(sections_low, sections_high):
                # a section where the muted parts do not play is the same audio (up to the float
                # rounding of the mix): left out, and counted
                if higher == "full" and abs(a - b) <= UNCHANGED:
                    unchanged[lower] += 1
                else:
                    outcomes[lower, higher, "phrase"].append(a < b)
    for (lower, higher, what), values in sorted(outcomes.items()):
        left_out = f"  ({unchanged[lower]} sections without the part, unchanged, left out)" if what == "phrase" and \
            unchanged[lower] else ""
        print(f"  {lower:>9} < {higher:7} ({what:6}): {np.mean(values):6.3f} of {len(values)}{left_out}")


ENERGY_PACKAGES = ("wesnoth-1.16-music", "warzone2100-music", "nexuiz-music", "singularity-music", "asc-music")


def reference_library() -> dict[str, list[str]]:
    """The energy reference: Debian's game soundtracks from orchestral to techno, per package
    (nexuiz keeps its tracks in a zip, music.pk3, unpacked beside it once)."""
    import zipfile

    from realaudio import CACHE, fetch

    found = {}
    for package in ENERGY_PACKAGES:
        paths = [str(path) for path in fetch((package,))]
        for archive in (CACHE / package).rglob("*.pk3"):
            unpacked = archive.parent / (archive.stem + "-unpacked")
            if not unpacked.exists():
                with zipfile.ZipFile(archive) as zipped:
                    zipped.extractall(unpacked)
            paths += sorted(str(path) for path in unpacked.rglob("*.ogg"))
        found[package] = sorted(set(paths))
    return found


def halves(library: dict[str, list[str]]) -> tuple[list[str], list[str]]:
    """Every other track of each package fits the constants; the rest checks them."""
    fit, check = [], []
    for paths in library.values():
        fit += paths[0::2]
        check += paths[1::2]
    return fit, check


def spread(paths: list[str], title: str) -> None:
    from cratesense.analysis.energy import level_of

    raws = []
    for path in paths:
        features = file_features(path)
        raw = track_raw(energy_curve(features), features.duration)
        if raw is not None:
            raws.append(raw)
    levels = np.array([level_of(raw) for raw in raws])
    histogram = " ".join(f"{int(np.sum(levels == level)):3d}" for level in range(1, 11))
    print(f"  {title:44} {len(raws):4}  {histogram}   {len(set(levels.tolist())):2}")


def energy_spread(pieces) -> None:
    library = reference_library()
    fit, check = halves(library)
    print("\nEnergy spread over 1-10 (track level; tracks per level 1..10; levels used)")
    spread(check, "real recordings, checking half")
    spread(fit, "real recordings, fitting half")
    for package, paths in library.items():
        spread(paths, f"  {package}")
    if pieces:
        spread([p.audio for p in pieces], "development set (arrangements)")


def fit_energy() -> None:
    """The constants of analysis/energy.py from the fitting half of the reference library: each
    measure's median and 10th-90th percentile spread over 8-second stretches that sound, then
    the breakpoints: nine equal steps from the 10th to the 90th percentile of the tracks' raw
    scores."""
    from cratesense.analysis import energy

    fit, _ = halves(reference_library())
    stretches = defaultdict(list)
    features_by_path = {}
    for path in fit:
        features = file_features(path)
        features_by_path[path] = features
        curve = energy_curve(features)
        for start in np.arange(0.0, features.duration - 8.0, 8.0):
            found = measures(curve, start, start + 8.0)
            if found and found["loudness"] > 0:
                for name, value in found.items():
                    stretches[name].append(value)
    medians = {name: round(float(np.median(v)), 2) for name, v in stretches.items()}
    spreads = {name: round(float(np.percentile(v, 90) - np.percentile(v, 10)), 2) for name, v in stretches.items()}
    print(f"MEDIANS = {medians}\nSPREADS = {spreads}")
    if medians != energy.MEDIANS or spreads != energy.SPREADS:
        print("(analysis/energy.py holds other constants: the raw scores below use those)")
    raws = [track_raw(energy_curve(f), f.duration) for f in features_by_path.values()]
    low, high = np.percentile([r for r in raws if r is not None], [10, 90])
    print("BREAKPOINTS =", tuple(round(float(c), 3) for c in np.linspace(low, high, 9)))


def stage_cost(count: int = 30) -> None:
    """CPU per track of each #26 stage, from the features of real recordings (decoded once,
    outside the timing): energy curve and level, phrases, cues, waveform overview; beside the
    descriptor stages they join (tempo, key, bars: ``_describe`` without them would be these)."""
    import time

    from cratesense.analysis.cues import place_cues
    from cratesense.analysis.energy import track_energy
    from cratesense.analysis.waveform import overview

    library = reference_library()
    paths = [path for paths in library.values() for path in paths][:: max(1, sum(map(len, library.values())) // count)]
    totals: dict[str, float] = defaultdict(float)
    seconds = 0.0
    for path in paths[:count]:
        features = file_features(path)
        seconds += features.duration
        rounds: dict[str, list[float]] = defaultdict(list)
        for _ in range(3):  # best of three: the machine is shared
            started = time.process_time()
            described = _describe(features, Loudness(None, None, None, None), DEFAULT_BPM_RANGE)
            rounds["all descriptors"].append(time.process_time() - started)
            started = time.process_time()
            curve = energy_curve(features)
            track_energy(curve, features.duration)
            rounds["energy"].append(time.process_time() - started)
            tuning = estimate_tuning(features.pitch) if features.pitch.size else 0.0
            chroma_frames = chroma(features.pitch, tuning)
            lines = bar_grid(described.bpm, described.beat_offset, described.downbeat_offset, described.beats_per_bar,
                             features.duration)
            started = time.process_time()
            phrases = find_phrases(features, chroma_frames, curve, lines, features.duration)
            rounds["phrases"].append(time.process_time() - started)
            started = time.process_time()
            place_cues(phrases, features.duration)
            rounds["cues"].append(time.process_time() - started)
            started = time.process_time()
            overview(features.mel, features.duration)
            rounds["waveform"].append(time.process_time() - started)
        for name, values in rounds.items():
            totals[name] += min(values)
    tracks = min(count, len(paths))
    print(f"\nCPU per track of the #26 stages ({tracks} real recordings, {seconds / tracks / 60:.1f} min on average; "
          "best of 3, features decoded beforehand)")
    for name in ("energy", "phrases", "cues", "waveform", "all descriptors"):
        print(f"  {name:16} {1000 * totals[name] / tracks:8.2f} ms")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a third of the set")
    parser.add_argument("--no-peers", action="store_true", help="ours only")
    parser.add_argument("--fit-energy", action="store_true")
    parser.add_argument("--energy-only", action="store_true", help="the energy pairs and spread alone")
    parser.add_argument("--no-energy", action="store_true", help="boundaries, labels, cues and mix points alone")
    parser.add_argument("--no-librosa", action="store_true", help="Mixxx as the only peer")
    parser.add_argument("--cost", action="store_true", help="each #26 stage's CPU per track on real recordings")
    args = parser.parse_args()
    if args.fit_energy:
        fit_energy()
        return 0
    if args.cost:
        stage_cost()
        return 0
    if args.energy_only:
        energy_checks(list(arrangements.HELD_OUT_SEEDS)[:8])
        energy_spread([])
        return 0
    pieces = arrangements.build(held_out=8 if args.quick else len(arrangements.HELD_OUT_SEEDS),
                                songs=4 if args.quick else len(arrangements.MMA_GROOVES))
    result = evaluate(pieces, peers=not args.no_peers, librosa=not args.no_librosa)
    report(result, pieces)
    if args.no_energy:
        return 0
    energy_checks(list(arrangements.HELD_OUT_SEEDS)[: 3 if args.quick else 8])
    energy_spread(pieces)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
