"""A compact waveform overview coloured by band, as DJ programs draw one: for each of at most
``COLUMNS`` columns across the track, the level of the lows (30-234 Hz: kick and bass), the mids
(234 Hz-1.8 kHz) and the highs (1.8-5 kHz), from the streamed mel frames (no second decode).

Each level is one byte, the band's RMS amplitude relative to the loudest column of any band
(0-255, on a square-root scale so quiet passages stay visible), three bytes a column, stored
base64 beside the track's analysis: about 1.6 kB a track. It is for the local page only, and
never leaves the machine (it is not in the observation allow-list, ``model.py``).
"""

from __future__ import annotations

import base64
import numpy as np

from cratesense.analysis.energy import FRAME_SECONDS, HIGH_BANDS, LOW_BANDS
from cratesense.analysis.model import Waveform

COLUMNS = 400
BANDS = ("low", "mid", "high")


def overview(mel: np.ndarray, duration: float) -> Waveform | None:
    frames = mel.shape[0]
    if frames == 0 or duration <= 0:
        return None
    power = np.expm1(mel.astype(np.float64)) / 1000.0
    mid_bands = np.setdiff1d(np.arange(mel.shape[1]), np.concatenate([LOW_BANDS, HIGH_BANDS]))
    bands = np.stack([power[:, LOW_BANDS].sum(axis=1), power[:, mid_bands].sum(axis=1),
                      power[:, HIGH_BANDS].sum(axis=1)], axis=1)
    columns = min(COLUMNS, frames)
    edges = np.linspace(0, frames, columns + 1).astype(int)
    sums = np.vstack([np.zeros((1, 3)), np.cumsum(bands, axis=0)])
    widths = np.maximum(edges[1:] - edges[:-1], 1)[:, None]
    amplitude = np.sqrt((sums[edges[1:]] - sums[edges[:-1]]) / widths)
    loudest = amplitude.max()
    if loudest <= 0:
        return None
    levels = np.round(255 * np.sqrt(amplitude / loudest)).astype(np.uint8)
    return Waveform(column_seconds=round(frames * FRAME_SECONDS / columns, 5),
                    data=base64.b64encode(levels.tobytes()).decode("ascii"))


def levels(waveform: Waveform) -> np.ndarray:
    """(columns, 3) bytes: the low, mid and high level of each column."""
    return np.frombuffer(base64.b64decode(waveform.data), np.uint8).reshape(-1, len(BANDS))
