"""A compact description of how a track sounds, for "more like this": ``EMBEDDING_LENGTH`` (64)
floats of unit length, so that cosine similarity ranks similar tracks first.

Embedding version 4 is a blend of two views of the sound, side by side:

====== ==== ====================================================================
dims   size what
====== ==== ====================================================================
0-31   32   the sound model's: its penultimate layers on a few 3-s patches
              (``learned.Projection``: centred and projected on their first 32
              principal directions), scaled to length sqrt(MODEL_WEIGHT)
32-63  32   the timbre statistics of the whole track (version 2, below), projected
              on their first 32 principal directions, scaled to length
              sqrt(1 - MODEL_WEIGHT)
====== ==== ====================================================================

so the cosine of two embeddings is the weighted mean of the two views' cosines (each part is a
unit vector before its scaling). The two measure different things: the model knows what the
music is (instruments, style) from 9 s of it; the statistics know the production of the whole
track (its spectrum, dynamics, motion, stereo image); on soundtracks never used to fit or choose
anything the blend finds a track's own soundtrack among its 5 nearest neighbours far more often
than either alone (docs/notes-2026-12/issue-27.md). The projections are fitted on development data
only (``bench/similar.py --fit``) and stored beside the model (``sound-model/embedding.npz``): a
track gets an embedding when the model can run, and none when it cannot (or there is too little
sound to describe).

The timbre statistics (embedding version 2, #18): a pure function of the streamed
``features.TimbreExtractor``, built from what a lossy encode keeps (the spectrum to 6 kHz, the
stereo image to 4.5 kHz: a 64 kb/s Opus drops the rest), so an MP3, an Opus and a FLAC of one
master land close together:

====== ==== ====================================================================
dims   size what
====== ==== ====================================================================
0-19   20   spectral envelope: mean mel cepstrum c1-c20 (c0, the level, left out)
20-39  20   its spread over the track: log std of c0-c19 (c0: the dynamics)
40-55  16   its motion: log RMS change of c0-c15 between frames 23 ms apart
56-63  8    stereo width: mean side/mid energy (dB) in 8 bands, 62 Hz-4.5 kHz
====== ==== ====================================================================

Each dimension is standardized with the mean and spread measured over a development set of
real soundtracks, so every dimension counts alike and the vector is centred where real music
lies, clipped at 3 standard deviations; each group then gets the same total weight, and the
whole vector is scaled to unit length.
"""

from __future__ import annotations

import numpy as np

from cratesense.analysis.constants import EMBEDDING_LENGTH, STAGE_VERSIONS
from cratesense.analysis.features import TimbreFeatures

EMBEDDING_VERSION = STAGE_VERSIONS["embedding"]
EMBEDDING_SIZE = EMBEDDING_LENGTH
MODEL_DIMENSIONS = EMBEDDING_LENGTH // 2  # the sound model's part; the rest is the timbre statistics'
TIMBRE_DIMENSIONS = EMBEDDING_LENGTH - MODEL_DIMENSIONS
# The model's view's weight in the blend: the cosine of two embeddings is MODEL_WEIGHT x the
# model's cosine + (1 - MODEL_WEIGHT) x the statistics'. Chosen on the development soundtracks
# (0.25, 0.5 and 0.75 tried: bench/similar.py).
MODEL_WEIGHT = 0.5
TIMBRE_SIZE = 64  # the timbre statistics' own vector (embedding version 2)
GROUP_SIZES = (20, 20, 16, 8)
MIN_FRAMES = 7  # two seconds of sound (a pair of frames every 0.3 s)
CLIP = 3.0  # standardized values beyond this are clipped: no one feature may outweigh the rest

# Standardization measured by ``bench/similar.py --fit`` on the development soundtracks.
_CENTRE = np.array([
    68.03, 4.914, 8.684, 0.8194, 2.181, -0.0835, 0.8452, -0.3299,
    0.342, 0.3542, 0.1432, -0.08443, -0.007547, -0.2659, -0.1617, -0.693,
    0.07291, 0.1524, 0.06262, -0.11, 3.84, 2.973, 2.7, 2.361,
    2.205, 2.089, 2.013, 1.957, 1.921, 1.914, 1.896, 1.897,
    1.864, 1.823, 1.811, 1.783, 1.78, 1.77, 1.737, 1.712,
    2.742, 2.139, 1.911, 1.716, 1.64, 1.604, 1.567, 1.545,
    1.519, 1.498, 1.49, 1.47, 1.449, 1.423, 1.409, 1.388,
    -10.48, -8.189, -6.087, -5.32, -4.732, -4.753, -4.783, -5.26,
])
_SCALE = np.array([
    15.22, 13.44, 6.598, 6.622, 4.175, 4.013, 3.671, 3.127,
    3.117, 2.698, 2.687, 2.455, 2.225, 2.404, 2.174, 2.361,
    2.381, 1.997, 1.895, 1.69, 0.2659, 0.2813, 0.3229, 0.2573,
    0.2762, 0.2419, 0.2354, 0.2387, 0.2511, 0.2776, 0.2674, 0.2762,
    0.2781, 0.2719, 0.2889, 0.2849, 0.2739, 0.2914, 0.2799, 0.2983,
    0.5248, 0.3969, 0.2754, 0.2171, 0.1975, 0.1794, 0.1684, 0.165,
    0.1548, 0.1449, 0.1448, 0.1435, 0.1405, 0.1326, 0.1323, 0.1378,
    7.884, 6.628, 5.513, 5.067, 4.722, 4.601, 4.666, 4.962,
])


def raw_features(timbre: TimbreFeatures) -> np.ndarray:
    """The 64 numbers before standardization (logs where a spread is a ratio of scales)."""
    return np.concatenate(
        [
            timbre.cepstrum_mean[1:21],
            np.log(timbre.cepstrum_std[:20] + 0.5),  # + 0.5 dB: finer variation than that is
            np.log(timbre.cepstrum_change[:16] + 0.5),  # a lossy codec's noise, not the music's
            timbre.stereo,
        ]
    )


def timbre_embedding(timbre: TimbreFeatures | None) -> np.ndarray | None:
    """The timbre statistics' own unit vector (what embedding version 2 was), or None when there
    is too little sound to describe."""
    if timbre is None or timbre.frames < MIN_FRAMES:
        return None
    vector = np.clip((raw_features(timbre) - _CENTRE) / _SCALE, -CLIP, CLIP)
    start = 0
    for size in GROUP_SIZES:  # each group weighs the same, whatever its size
        vector[start : start + size] /= np.sqrt(size)
        start += size
    norm = np.linalg.norm(vector)
    if not np.isfinite(norm) or norm < 1e-12:
        return None
    return vector / norm


def blend(model_part: np.ndarray, timbre_part: np.ndarray) -> tuple[float, ...] | None:
    """The embedding from its two projected parts (``MODEL_DIMENSIONS`` and
    ``TIMBRE_DIMENSIONS`` floats, any length): each made a unit vector and weighed."""
    parts = []
    for part, weight in ((model_part, MODEL_WEIGHT), (timbre_part, 1.0 - MODEL_WEIGHT)):
        norm = np.linalg.norm(part)
        if not np.isfinite(norm) or norm < 1e-12:
            return None
        parts.append(np.sqrt(weight) * np.asarray(part, np.float64) / norm)
    return tuple(round(float(value), 5) for value in np.concatenate(parts))


def cosine(first, second) -> float:
    return float(np.dot(first, second) / (np.linalg.norm(first) * np.linalg.norm(second)))

