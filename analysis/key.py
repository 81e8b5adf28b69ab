"""Musical key from the folded pitch spectrum: estimate the tuning, align the chroma to it, and
correlate the track's pitch-class profile with key profiles of all 24 keys."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cratesense.analysis.features import SUBBINS_PER_SEMITONE
from cratesense.analysis.keys import Key

# Temperley's key profiles (Kostka-Payne corpus, 2007): sharper than Krumhansl-Kessler's probe-tone
# ratings at telling a key from its relative major/minor.
_MAJOR_PROFILE = np.array([0.748, 0.060, 0.488, 0.082, 0.670, 0.460, 0.096, 0.715, 0.104, 0.366, 0.057, 0.400])
_MINOR_PROFILE = np.array([0.712, 0.084, 0.474, 0.618, 0.049, 0.460, 0.105, 0.747, 0.404, 0.067, 0.133, 0.330])
_MIN_STRENGTH = 0.3
_SILENT_ENERGY = 1e-4


@dataclass(frozen=True, slots=True)
class KeyEstimate:
    key: Key
    strength: float  # correlation with the key's profile, -1..1
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


def best_matching_key(profile: np.ndarray, major: np.ndarray, minor: np.ndarray) -> tuple[Key, float]:
    """The key whose profile (major or minor, rotated to each tonic) correlates best with a
    12-bin pitch-class profile, and that correlation. Ties go to the first key tried."""
    best_key, best_score = Key(0, False), -2.0
    for tonic in range(12):
        for is_minor, reference in ((False, major), (True, minor)):
            score = float(np.corrcoef(profile, np.roll(reference, tonic))[0, 1])
            if score > best_score:
                best_key, best_score = Key(tonic, is_minor), score
    return best_key, best_score


def estimate_key(chroma_frames: np.ndarray, energy: np.ndarray, tuning_cents: float = 0.0) -> KeyEstimate | None:
    """The key from tuning-aligned chroma frames (see ``chroma``), or None when there is no tonal
    content (silence, noise, pure percussion)."""
    if chroma_frames.shape[0] == 0 or energy.max(initial=0.0) < _SILENT_ENERGY:
        return None
    # Per-frame normalization with log compression, so a few loud frames don't decide the key,
    # and near-silent frames (energy weight) count for little.
    frames = np.log1p(100.0 * chroma_frames / np.maximum(chroma_frames.max(axis=1, keepdims=True), 1e-9))
    weights = np.minimum(1.0, energy / max(float(np.percentile(energy, 90)), 1e-9))
    profile = (frames * weights[:, None]).sum(axis=0)
    if profile.std() < 1e-6 * max(profile.mean(), 1e-9):
        return None
    best_key, best_score = best_matching_key(profile, _MAJOR_PROFILE, _MINOR_PROFILE)
    if best_score < _MIN_STRENGTH:
        return None
    return KeyEstimate(best_key, round(best_score, 3), round(tuning_cents, 1))
