"""Fit the key stage's evidence weights (analysis/key.py ``EVIDENCE``) on the tuning folds.

    python bench/fit_key.py [--folds-out]

A multinomial (conditional) logistic model over the 24 keys: P(key) is the softmax of the
evidence weighted by one weight vector shared by every key, fitted by maximum likelihood with a
small L2 penalty on the development set's tuning folds (bench/devset.py ``DEV_SUBSETS``) and never
on the held-out folds. ``--folds-out`` also fits once per tuning fold with that fold left out and
scores it (how well the fit carries to a source it has not seen) before the held-out folds are
ever looked at. Prints the weights to paste into analysis/key.py and their MIREX per fold.
Frame features come from bench/accuracy.py's feature cache (computed on first use).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import scipy.optimize

sys.path.insert(0, str(Path(__file__).resolve().parent))

import accuracy
import devset
from cratesense.analysis import key as key_stage
from cratesense.analysis.keys import Key

L2 = 1e-4
EVIDENCE_CACHE = accuracy.FEATURE_CACHE.parent / "key-evidence"


def evidence_of(piece: devset.Piece, columns: tuple[str, ...] = key_stage.CANDIDATES) -> np.ndarray | None:
    """The piece's evidence twice over, weighed by its character: (24, 2 x len(columns)), the
    produced weights' columns first, then the played ones'. Cached by the key stage's code and
    the piece's features."""
    import hashlib

    stamp = hashlib.sha256(Path(key_stage.__file__).read_bytes() + ",".join(columns).encode()).hexdigest()[:12]
    stat = Path(piece.audio).stat()
    cache = EVIDENCE_CACHE / piece.subset / f"{piece.name}-{stamp}-{stat.st_size}-{int(stat.st_mtime)}.npy"
    if cache.exists():
        stored = np.load(cache)
        return stored if stored.size else None
    found = _evidence(piece, columns)
    cache.parent.mkdir(parents=True, exist_ok=True)
    np.save(cache, found if found is not None else np.zeros(0))
    return found


def _evidence(piece: devset.Piece, columns: tuple[str, ...]) -> np.ndarray | None:
    features = accuracy._features(piece.audio)
    tuning = key_stage.estimate_tuning(features.pitch)
    chroma = key_stage.chroma(features.pitch, tuning)
    evidence = key_stage.key_evidence(chroma, features.energy, features.bass, features.notes, tuning, columns)
    if evidence is None:
        return None
    produced = key_stage.character(chroma, features.energy)
    return np.concatenate([produced * evidence, (1.0 - produced) * evidence], axis=1)


def gate_inputs(piece: devset.Piece) -> dict[str, float]:
    """What a production/played gate can read of the piece: ``character`` and the sounding
    frames' tonalness (its median, which ``character`` maps, and its lower quartile). Cached like
    the evidence."""
    import hashlib
    import json

    stamp = hashlib.sha256(Path(key_stage.__file__).read_bytes()).hexdigest()[:12]
    stat = Path(piece.audio).stat()
    cache = EVIDENCE_CACHE / piece.subset / f"{piece.name}-gate-{stamp}-{stat.st_size}-{int(stat.st_mtime)}.json"
    if cache.exists():
        return json.loads(cache.read_text())
    features = accuracy._features(piece.audio)
    chroma = key_stage.chroma(features.pitch, key_stage.estimate_tuning(features.pitch))
    weights = np.minimum(1.0, features.energy / max(float(np.percentile(features.energy, 90)), 1e-9))
    sounding = weights > key_stage._SOUNDING
    tonal = key_stage._tonalness(chroma[sounding]) if sounding.any() else np.zeros(1)
    found = {"character": key_stage.character(chroma, features.energy), "tonal_median": float(np.median(tonal)),
             "tonal_p25": float(np.percentile(tonal, 25))}
    cache.parent.mkdir(parents=True, exist_ok=True)
    cache.write_text(json.dumps(found))
    return found


def gate_of(text: str, inputs: dict[str, float]) -> float:
    """A gate (the produced weights' share, 0..1) named as "character" (the stage's own),
    "all-produced", "all-played", or "SCALAR:low,high" (1 at ``low`` or below, 0 at ``high``)."""
    if text == "character":
        return inputs["character"]
    if text in ("all-produced", "all-played"):
        return 1.0 if text == "all-produced" else 0.0
    name, bounds = text.split(":")
    low, high = (float(b) for b in bounds.split(","))
    return float(np.clip((high - inputs[name]) / (high - low), 0.0, 1.0))


def select(evidence: np.ndarray, columns: tuple[str, ...], played: tuple[str, ...] | None = None) -> np.ndarray:
    """The produced copies of ``columns`` and the played copies of ``played`` (the same columns
    when None) out of evidence over every candidate; a column one side leaves out is zero there."""
    played = columns if played is None else played
    union = tuple(dict.fromkeys(columns + played))
    half = len(key_stage.CANDIDATES)
    produced_part = evidence[..., [key_stage.CANDIDATES.index(name) for name in union]]
    played_part = evidence[..., [half + key_stage.CANDIDATES.index(name) for name in union]]
    produced_part = produced_part * np.array([name in columns for name in union], float)
    played_part = played_part * np.array([name in played for name in union], float)
    return np.concatenate([produced_part, played_part], axis=-1)


def column_sets(text: str) -> tuple[tuple[str, ...], tuple[str, ...] | None]:
    """"a,b,c" (both sides) or "a,b|c,d" (produced | played)."""
    sides = [tuple(name.strip() for name in side.split(",") if name.strip()) for side in text.split("|")]
    return sides[0], (sides[1] if len(sides) > 1 else None)


def folds_out(evidence: np.ndarray, truth: np.ndarray, folds: np.ndarray, start: np.ndarray) -> np.ndarray:
    """Each piece's MIREX under a fit that left its tuning fold out."""
    scores = np.zeros(truth.size)
    for fold in sorted(set(folds)):
        inside = folds == fold
        weights = fit(evidence[~inside], truth[~inside], start)
        scores[inside] = mirex_each(evidence[inside], truth[inside], weights)
    return scores


def truth_index(key: Key) -> int:
    return key.tonic + (12 if key.minor else 0)


def fit(evidence: np.ndarray, truth: np.ndarray, start: np.ndarray) -> np.ndarray:
    """Weights (temperature folded in) maximizing the softmax likelihood of the true keys."""

    def loss(weights: np.ndarray) -> tuple[float, np.ndarray]:
        scores = evidence @ weights  # (pieces, 24)
        scores -= scores.max(axis=1, keepdims=True)
        probabilities = np.exp(scores)
        probabilities /= probabilities.sum(axis=1, keepdims=True)
        picked = probabilities[np.arange(truth.size), truth]
        value = -np.log(np.maximum(picked, 1e-12)).mean() + L2 * weights @ weights
        expected = np.einsum("pk,pkf->pf", probabilities, evidence)
        gradient = (expected - evidence[np.arange(truth.size), truth]).mean(axis=0) + 2 * L2 * weights
        return float(value), gradient

    return scipy.optimize.minimize(loss, start, jac=True, method="L-BFGS-B").x


def mirex_each(evidence: np.ndarray, truth: np.ndarray, weights: np.ndarray) -> np.ndarray:
    chosen = np.argmax(evidence @ weights, axis=1)
    return np.array([accuracy.mirex(Key(c % 12, c >= 12), Key(t % 12, t >= 12)) for c, t in zip(chosen, truth)])


def mirex_of(evidence: np.ndarray, truth: np.ndarray, weights: np.ndarray) -> float:
    return float(np.mean(mirex_each(evidence, truth, weights)))


def compare_gates(gates: list[str], pieces: list[devset.Piece], everything: np.ndarray, truth: np.ndarray,
                  folds: np.ndarray) -> None:
    """Each gate's folds-out MIREX per tuning fold (the stage's columns: ``EVIDENCE`` for a
    production, "stated" for played music), against the first gate with paired intervals."""
    half = len(key_stage.CANDIDATES)
    raw = everything[..., :half] + everything[..., half:]  # character * e + (1 - character) * e
    produced = raw[..., [key_stage.CANDIDATES.index(name) for name in key_stage.EVIDENCE]]
    played = raw[..., [key_stage.CANDIDATES.index("stated")]]
    inputs = [gate_inputs(p) for p in pieces]
    names = sorted(set(folds))
    parts = {"all": np.ones(truth.size, bool), "electronic": np.isin(folds, devset.ELECTRONIC_SUBSETS),
             "band": folds == "band-msgl"}
    print(f"{len(pieces)} pieces with a key in the tuning folds; MIREX of each fold under a fit that left it out")
    print(" ".join(f"{name[:10]:>10}" for name in names) + f" {'ALL':>6} {'electr.':>7}  gate")
    first = None
    for text in gates:
        share = np.array([gate_of(text, i) for i in inputs])[:, None, None]
        evidence = np.concatenate([share * produced, (1.0 - share) * played], axis=-1)
        scores = folds_out(evidence, truth, folds, np.zeros(evidence.shape[-1]))
        print(" ".join(f"{scores[folds == name].mean():10.3f}" for name in names)
              + f" {scores.mean():6.3f} {scores[parts['electronic']].mean():7.3f}  {text}")
        if first is None:
            first = scores
            continue
        print("   " + "; ".join(f"{label} {d:+.3f} [{lo:+.3f}, {hi:+.3f}]" for label, part in parts.items() if part.any()
                                for d, lo, hi in [accuracy.paired_interval(scores[part], first[part])]))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--folds-out", action="store_true", help="also score each tuning fold with a fit that left it out")
    parser.add_argument("--columns", default=None,
                        help="fit these evidence columns (comma-separated, of analysis/key.py CANDIDATES; default EVIDENCE)")
    parser.add_argument("--gates", default=None,
                        help="score production/played gates (';'-separated, see gate_of) with the stage's columns, "
                             "by each tuning fold's MIREX under a fit that left it out")
    parser.add_argument("--compare", default=None,
                        help="score column sets by their folds-out MIREX: sets separated by ';' (each comma-separated)")
    args = parser.parse_args()
    pieces = [p for p in devset.cached_pieces() if p.key and p.subset in devset.DEV_SUBSETS]
    rows = [(p, evidence_of(p)) for p in pieces]
    rows = [(p, e) for p, e in rows if e is not None]
    everything = np.stack([e for _, e in rows])
    truth = np.array([truth_index(p.key_truth) for p, _ in rows])
    folds = np.array([p.subset for p, _ in rows])
    if args.gates:
        compare_gates(args.gates.split(";"), [p for p, _ in rows], everything, truth, folds)
        return 0
    if args.compare:
        print(f"{len(rows)} pieces with a key in the tuning folds; MIREX of each fold under a fit that left it out;")
        print("beside each set after the first: its difference from the first, overall and on the electronic folds, "
              "with a paired bootstrap interval (95 %)")
        names = sorted(set(folds))
        electronic = np.isin(folds, devset.ELECTRONIC_SUBSETS)
        print(f"{'fold':18} " + " ".join(f"{name[:10]:>10}" for name in names) + f" {'ALL':>6} {'electr.':>7}")
        first = None
        for text in args.compare.split(";"):
            evidence = select(everything, *column_sets(text))
            scores = folds_out(evidence, truth, folds, np.zeros(evidence.shape[-1]))
            fourths = int(np.sum(scores == 0.5))  # a fifth either way: the tonic heard as a dominant, or the other way
            print(f"{'':18} " + " ".join(f"{scores[folds == name].mean():10.3f}" for name in names)
                  + f" {scores.mean():6.3f} {scores[electronic].mean():7.3f}  {fourths:3d} a fifth off  {text}")
            if first is None:
                first = scores
            else:
                for label, part in (("all", slice(None)), ("electronic", electronic)):
                    lead, low, high = accuracy.paired_interval(scores[part], first[part])
                    print(f"{'':18} {label}: {lead:+.3f} [{low:+.3f}, {high:+.3f}] against the first set")
        return 0
    produced_columns, played_columns = column_sets(args.columns) if args.columns else (key_stage.EVIDENCE, None)
    columns = tuple(dict.fromkeys(produced_columns + (played_columns or ())))
    evidence = select(everything, produced_columns, played_columns)
    current = columns == key_stage.EVIDENCE and played_columns is None
    start = (np.concatenate([key_stage._WEIGHTS_PRODUCED, key_stage._WEIGHTS_PLAYED]) if current
             else np.zeros(evidence.shape[-1]))
    weights = fit(evidence, truth, start)
    print(f"{len(rows)} pieces with a key in the tuning folds")
    print(f"{'fitted weights':16} {'produced':>9} {'played':>9}")
    half = len(columns)
    for index, name in enumerate(columns):
        print(f"  {name:16} {weights[index]:9.3f} {weights[half + index]:9.3f}")
    for label, part in (("_WEIGHTS_PRODUCED", weights[:half]), ("_WEIGHTS_PLAYED", weights[half:])):
        print(f"{label} = np.array([" + ", ".join(f"{value:.3f}" for value in part) + "])")
    print(f"{'fold':18} {'n':>4} {'current':>8} {'fitted':>8} {'left out':>8}")
    left_out_scores = []
    for fold in sorted(set(folds)):
        inside = folds == fold
        left_out = ""
        if args.folds_out:
            held = fit(evidence[~inside], truth[~inside], start)
            score = mirex_of(evidence[inside], truth[inside], held)
            left_out_scores += [score] * int(inside.sum())
            left_out = f"{score:8.3f}"
        print(f"{fold:18} {inside.sum():4d} {mirex_of(evidence[inside], truth[inside], start):8.3f} "
              f"{mirex_of(evidence[inside], truth[inside], weights):8.3f} {left_out}")
    left_out_all = f"{np.mean(left_out_scores):8.3f}" if left_out_scores else ""
    print(f"{'ALL':18} {truth.size:4d} {mirex_of(evidence, truth, start):8.3f} {mirex_of(evidence, truth, weights):8.3f} {left_out_all}")
    chosen = np.argmax(evidence @ weights, axis=1)
    kinds: dict[str, int] = {}
    for c, t in zip(chosen, truth):
        if c != t:
            kind = f"{'m' if t >= 12 else 'M'}->{'m' if c >= 12 else 'M'} +{(c - t) % 12}"
            kinds[kind] = kinds.get(kind, 0) + 1
    print("misses (truth mode -> answer mode, tonic interval up):", dict(sorted(kinds.items(), key=lambda kv: -kv[1])))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
