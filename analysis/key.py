"""Musical key from the folded pitch spectrum: estimate the tuning, align the chroma to it, and
correlate the piece's pitch-class profiles with key profiles of all 24 keys.

What bench/accuracy.py showed on music from many sources (see the README's "What the numbers
mean"): Temperley's profiles, with the harmonics every real note also sounds (a note's third
harmonic lands on its fifth, its fifth on its major third), beat Krumhansl's, EDMA's and a
profile fitted to the development set; square-root compression of each frame's chroma beats
the logarithm; and a piece states its key where it opens and where it ends (the final cadence),
so those stretches, and the bass under the whole piece and under its ending, count beside the
whole piece's profile. That last part is what reads a piece that modulates to its dominant (or
its relative) in the key it starts and ends in.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cratesense.analysis.features import CHROMA_HOP, SUBBINS_PER_SEMITONE
from cratesense.analysis.decode import ANALYSIS_RATE
from cratesense.analysis.keys import Key


def _with_harmonics(profile: np.ndarray, count: int = 5, decay: float = 0.7) -> np.ndarray:
    """The chroma a key's notes make when each sounds its first ``count`` harmonics (the h-th
    at ``decay`` ** (h - 1) of the fundamental): what a spectrum-based chroma really shows."""
    sounded = np.zeros(12)
    for harmonic in range(1, count + 1):
        shift = int(round(12 * np.log2(harmonic))) % 12
        sounded += decay ** (harmonic - 1) * np.roll(profile, shift)
    sounded.flags.writeable = False
    return sounded


# Temperley's key profiles (Kostka-Payne corpus, 2007): sharper than Krumhansl-Kessler's probe-tone
# ratings at telling a key from its relative major/minor.
_MAJOR_PROFILE = np.array([0.748, 0.060, 0.488, 0.082, 0.670, 0.460, 0.096, 0.715, 0.104, 0.366, 0.057, 0.400])
_MINOR_PROFILE = np.array([0.712, 0.084, 0.474, 0.618, 0.049, 0.460, 0.105, 0.747, 0.404, 0.067, 0.133, 0.330])
_MAJOR_SOUNDED = _with_harmonics(_MAJOR_PROFILE)
_MINOR_SOUNDED = _with_harmonics(_MINOR_PROFILE)
_STATED_SECONDS = 12.0  # the opening and the ending, where a piece states its key
_STATED_WEIGHT = 0.55  # each, beside the whole piece's 1 (the middle of the development set's plateau, 0.5-0.6)
_BASS_WEIGHT = 0.3  # the bass under the whole piece
_FINAL_BASS_WEIGHT = 0.2  # the bass under the ending: the final cadence's roots
_SOUNDING = 0.2  # frames with less energy (relative to the loud ones) are not music yet
_STRENGTH_SHARPNESS = 8.0  # softmax over the keys' scores: calibrated on the development set
_MIN_CORRELATION = 0.1  # below this the chroma has no key at all (noise reads ~0.2-0.4 with a strength ~0.3)
_SILENT_ENERGY = 1e-4


@dataclass(frozen=True, slots=True)
class KeyEstimate:
    key: Key
    strength: float  # 0..1: the key's share of the evidence against all 24 keys (low when ambiguous)
    tuning_cents: float  # deviation of the reference pitch from A4 = 440 Hz


def estimate_tuning(pitch: np.ndarray) -> float:
    """Deviation from A4 = 440 Hz in cents (-50..50), from the energy in 20-cent sub-bins."""
    profile = pitch.sum(axis=0).reshape(12, SUBBINS_PER_SEMITONE).sum(axis=0)
    angles = 2 * np.pi * np.arange(SUBBINS_PER_SEMITONE) / SUBBINS_PER_SEMITONE
    angle = np.angle(np.sum(profile * np.exp(1j * angles)))
    return float(angle / (2 * np.pi) * 100.0)


def chroma(pitch: np.ndarray, tuning_cents: float) -> np.ndarray:
    """12-bin chroma frames (C first), aligned to the estimated tuning."""
    shift_bins = tuning_cents / (100.0 / SUBBINS_PER_SEMITONE)
    whole = int(np.floor(shift_bins))
    fraction = shift_bins - whole
    # Move the tuned pitch grid onto bin centres, with linear interpolation between sub-bins.
    centred = np.roll(pitch, SUBBINS_PER_SEMITONE // 2 - whole, axis=1)
    semitones = centred.reshape(len(pitch), 12, SUBBINS_PER_SEMITONE).sum(axis=2)
    # The fractional part moves one sub-bin's worth of energy across each semitone's edge.
    below = centred[:, 0::SUBBINS_PER_SEMITONE]
    above = np.roll(centred, -SUBBINS_PER_SEMITONE, axis=1)[:, 0::SUBBINS_PER_SEMITONE]
    return (semitones - fraction * below + fraction * above).astype(np.float32)


def key_correlations(profile: np.ndarray, major: np.ndarray, minor: np.ndarray) -> np.ndarray:
    """Pearson correlation of a 12-bin pitch-class profile with every key's profile: 24 values,
    C major .. B major, then C minor .. B minor."""
    rotations = np.array([np.roll(reference, tonic) for reference in (major, minor) for tonic in range(12)])
    rotations = rotations - rotations.mean(axis=1, keepdims=True)
    centred = profile - profile.mean()
    denominator = np.linalg.norm(rotations, axis=1) * np.linalg.norm(centred)
    return rotations @ centred / np.maximum(denominator, 1e-12)


def estimate_key(
    chroma_frames: np.ndarray, energy: np.ndarray, tuning_cents: float = 0.0, bass: np.ndarray | None = None
) -> KeyEstimate | None:
    """The key from tuning-aligned chroma frames (see ``chroma``) and, when given, the bass chroma
    of the same frames; None when there is no tonal content (silence, noise, pure percussion)."""
    if chroma_frames.shape[0] == 0 or energy.max(initial=0.0) < _SILENT_ENERGY:
        return None
    # Each frame normalized (a few loud frames must not decide), square-root compressed, and
    # weighted by its energy so near-silent frames count for little.
    weights = np.minimum(1.0, energy / max(float(np.percentile(energy, 90)), 1e-9))
    frames = np.sqrt(chroma_frames / np.maximum(chroma_frames.max(axis=1, keepdims=True), 1e-9)) * weights[:, None]
    whole = frames.sum(axis=0)
    if whole.std() < 1e-6 * max(whole.mean(), 1e-9):
        return None
    opening, ending = _stated_stretches(weights)
    correlations = key_correlations(whole, _MAJOR_SOUNDED, _MINOR_SOUNDED)
    scores = correlations + _STATED_WEIGHT * (
        key_correlations(frames[opening].sum(axis=0), _MAJOR_SOUNDED, _MINOR_SOUNDED)
        + key_correlations(frames[ending].sum(axis=0), _MAJOR_SOUNDED, _MINOR_SOUNDED)
    )
    if bass is not None and bass.shape == chroma_frames.shape:
        # The bass plays fundamentals: the plain profiles, no harmonics.
        low = np.sqrt(bass / np.maximum(bass.max(axis=1, keepdims=True), 1e-9)) * weights[:, None]
        scores = scores + _BASS_WEIGHT * key_correlations(low.sum(axis=0), _MAJOR_PROFILE, _MINOR_PROFILE)
        scores = scores + _FINAL_BASS_WEIGHT * key_correlations(low[ending].sum(axis=0), _MAJOR_PROFILE, _MINOR_PROFILE)
    best = int(np.argmax(scores))
    if correlations[best] < _MIN_CORRELATION:
        return None
    share = np.exp(_STRENGTH_SHARPNESS * (scores - scores[best]))
    strength = float(1.0 / share.sum())
    return KeyEstimate(Key(best % 12, best >= 12), round(strength, 3), round(tuning_cents, 1))


def _stated_stretches(weights: np.ndarray) -> tuple[slice, slice]:
    """The first and last ``_STATED_SECONDS`` of music (leading and trailing quiet skipped)."""
    sounding = np.nonzero(weights > _SOUNDING)[0]
    first, last = (int(sounding[0]), int(sounding[-1])) if sounding.size else (0, weights.size - 1)
    frames = max(1, int(_STATED_SECONDS * ANALYSIS_RATE / CHROMA_HOP))
    return slice(first, min(last, first + frames) + 1), slice(max(first, last - frames), last + 1)
