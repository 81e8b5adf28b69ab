"""A compact description of how a track sounds, for "more like this": 64 floats, L2-normalized,
so that cosine similarity ranks similar tracks first. Deterministic, a pure function of the
streamed timbre statistics (``features.TimbreExtractor``), and built from what a lossy encode
keeps (the spectrum to 6 kHz, the stereo image to 4.5 kHz: a 64 kb/s Opus drops the rest), so an
MP3, an Opus and a FLAC of one master land close together.

Dimension groups (embedding stage version 2):

====== ==== ====================================================================
dims   size what
====== ==== ====================================================================
0-19   20   spectral envelope: mean mel cepstrum c1-c20 (c0, the level, left out)
20-39  20   its spread over the track: log std of c0-c19 (c0: the dynamics)
40-55  16   its motion: log RMS change of c0-c15 between frames 23 ms apart
56-63  8    stereo width: mean side/mid energy (dB) in 8 bands, 62 Hz-4.5 kHz
====== ==== ====================================================================

Each dimension is standardized with the mean and spread measured over a development set of
real soundtracks (``bench/similar.py --fit``), so every dimension counts alike and the vector is
centred where real music lies (a cosine near 0 means unrelated, which the sound sketch's random
projections rely on), clipped at 3 standard deviations; each group then gets the same total
weight, and the whole vector is scaled to unit length.
"""

from __future__ import annotations

import numpy as np

from cratesense.analysis.constants import EMBEDDING_LENGTH, STAGE_VERSIONS
from cratesense.analysis.features import TimbreFeatures

EMBEDDING_VERSION = STAGE_VERSIONS["embedding"]
EMBEDDING_SIZE = EMBEDDING_LENGTH
GROUP_SIZES = (20, 20, 16, 8)
MIN_FRAMES = 20  # two seconds of sound
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


def compute_embedding(timbre: TimbreFeatures | None) -> tuple[float, ...] | None:
    """The embedding, or None when there is too little sound to describe."""
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
    return tuple(round(float(value), 5) for value in vector / norm)


def cosine(first, second) -> float:
    return float(np.dot(first, second) / (np.linalg.norm(first) * np.linalg.norm(second)))

