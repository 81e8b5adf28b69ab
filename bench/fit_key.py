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


def evidence_of(piece: devset.Piece) -> np.ndarray | None:
    """The piece's evidence twice over, weighed by its character: (24, 2 x len(EVIDENCE)), the
    produced weights' columns first, then the played ones'."""
    features = accuracy._features(piece.audio)
    tuning = key_stage.estimate_tuning(features.pitch)
    chroma = key_stage.chroma(features.pitch, tuning)
    evidence = key_stage.key_evidence(chroma, features.energy, features.bass, features.notes, tuning)
    if evidence is None:
        return None
    produced = key_stage.character(chroma, features.energy)
    return np.concatenate([produced * evidence, (1.0 - produced) * evidence], axis=1)


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


def mirex_of(evidence: np.ndarray, truth: np.ndarray, weights: np.ndarray) -> float:
    chosen = np.argmax(evidence @ weights, axis=1)
    return float(np.mean([accuracy.mirex(Key(c % 12, c >= 12), Key(t % 12, t >= 12)) for c, t in zip(chosen, truth)]))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--folds-out", action="store_true", help="also score each tuning fold with a fit that left it out")
    parser.add_argument("--columns", default=None, help="fit only these evidence columns (comma-separated)")
    args = parser.parse_args()
    pieces = [p for p in devset.cached_pieces() if p.key and p.subset in devset.DEV_SUBSETS]
    rows = [(p, evidence_of(p)) for p in pieces]
    rows = [(p, e) for p, e in rows if e is not None]
    evidence = np.stack([e for _, e in rows])
    if args.columns:
        keep = [key_stage.EVIDENCE.index(name) for name in args.columns.split(",")]
        mask = np.zeros(len(key_stage.EVIDENCE))
        mask[keep] = 1.0
        mask = np.concatenate([mask, mask])
        evidence = evidence * mask
    truth = np.array([truth_index(p.key_truth) for p, _ in rows])
    folds = np.array([p.subset for p, _ in rows])
    start = np.concatenate([key_stage._WEIGHTS_PRODUCED, key_stage._WEIGHTS_PLAYED])
    weights = fit(evidence, truth, start)
    print(f"{len(rows)} pieces with a key in the tuning folds")
    print(f"{'fitted weights':16} {'produced':>9} {'played':>9}")
    half = len(key_stage.EVIDENCE)
    for index, name in enumerate(key_stage.EVIDENCE):
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
