"""A compact description of how a track sounds, for "more like this": 64 floats, L2-normalized,
so that cosine similarity ranks similar tracks first. Deterministic, and built from features a
lossy encode keeps (below ~4.4 kHz, where the analysis stream lives), so an MP3 and a FLAC of one
master land close together.

Dimension groups (``EMBEDDING_VERSION`` 1):

====== ==== ====================================================================
dims   size what
====== ==== ====================================================================
0-23   24   timbre: mean log-mel energy per band, centred (the spectral shape)
24-39  16   timbre dynamics: spread over time of 16 merged mel bands, centred
40-51  12   harmony: mean chroma (C first), tuning-aligned, centred
52-63  12   rhythm: onset autocorrelation at 12 log-spaced tempi (60-240 BPM), centred
====== ==== ====================================================================

Each group is centred (so the overall level does not count), scaled to unit length, weighted,
and the whole vector is normalized to unit length.
"""

from __future__ import annotations

import numpy as np

from cratesense.analysis.features import ONSET_RATE, FrameFeatures
from cratesense.analysis.tempo import autocorrelation
from cratesense.analysis.constants import EMBEDDING_LENGTH

EMBEDDING_VERSION = 1
EMBEDDING_SIZE = EMBEDDING_LENGTH
_GROUP_WEIGHTS = {"timbre": 1.0, "dynamics": 0.6, "harmony": 0.7, "rhythm": 0.8}
_RHYTHM_TEMPI = np.geomspace(60.0, 240.0, 12)


def _unit(vector: np.ndarray) -> np.ndarray:
    centred = vector - vector.mean()
    norm = np.linalg.norm(centred)
    return centred / norm if norm > 1e-12 else np.zeros_like(centred)


def compute_embedding(features: FrameFeatures, chroma_frames: np.ndarray) -> tuple[float, ...] | None:
    """The embedding, or None when there is too little audio to describe."""
    if features.mel.shape[0] < 4 or features.onset.size < 4:
        return None
    mel = features.mel
    timbre = mel.mean(axis=0)
    dynamics = np.array([bands.mean(axis=1).std() for bands in np.array_split(mel, 16, axis=1)])
    harmony = chroma_frames.mean(axis=0) if chroma_frames.size else np.zeros(12)
    harmony = harmony / max(harmony.sum(), 1e-12)
    rhythm = _rhythm_profile(features.onset)
    parts = [
        _unit(timbre) * _GROUP_WEIGHTS["timbre"],
        _unit(dynamics) * _GROUP_WEIGHTS["dynamics"],
        _unit(harmony) * _GROUP_WEIGHTS["harmony"],
        _unit(rhythm) * _GROUP_WEIGHTS["rhythm"],
    ]
    vector = np.concatenate(parts)
    norm = np.linalg.norm(vector)
    if norm < 1e-12:
        return None
    return tuple(round(float(value), 5) for value in vector / norm)


def _rhythm_profile(onset: np.ndarray) -> np.ndarray:
    envelope = onset - onset.mean()
    if envelope.std() < 1e-12:
        return np.zeros(_RHYTHM_TEMPI.size)
    acf = autocorrelation(envelope)
    lags = 60.0 * ONSET_RATE / _RHYTHM_TEMPI
    return np.interp(lags, np.arange(acf.size), acf, right=0.0)


def cosine(first, second) -> float:
    return float(np.dot(first, second) / (np.linalg.norm(first) * np.linalg.norm(second)))
