"""Bars from the beat grid: how many beats a bar holds and where bar 1 starts.

Music marks its bar lines three ways that the streamed features can hear: the harmony changes on
the one (chords change at bar lines far more often than on other beats), the bass and the kick
land on it, and it is accented. Each beat gets a number for each cue; for every bar length
(2, 3 or 4 beats) and every phase the beats that would be downbeats are compared with the
others, and the bar length and phase where they stand out most win.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cratesense.analysis.features import CHROMA_FFT, CHROMA_HOP, MEL_DECIMATION, ONSET_HOP
from cratesense.analysis.decode import ANALYSIS_RATE

BAR_LENGTHS = (2, 3, 4)
_MIN_BARS = 4  # fewer bars than this say nothing about where the bars are
_BASS_BANDS = 3  # the lowest mel bands (30 to ~150 Hz): bass and kick
# How much each cue counts, and a preference for four beats a bar (most music, and what DJ
# software assumes) that another bar length must overcome.
_WEIGHTS = {"harmony": 1.0, "bass": 0.6, "accent": 0.4}
_BAR_PRIOR = {2: 0.0, 3: 0.0, 4: 0.15}
# Accents alternating beat by beat (a backbeat) prefer an even bar whichever beat they fall on; and
# bar 1 is preferred on the first beat of the music (a DJ tool opens on its downbeat; a pickup must
# outweigh it). Chosen on bench/accuracy.py's tuning folds: the first beat 0.4 (downbeat F 0.604 ->
# 0.669; 0.2 and 0.6 lower); the backbeat 1.0 level with none there (0.667), and what keeps a house
# track with claps on 2 and 4 from reading three beats a bar.
_DUPLE = 1.0
_FIRST_BEAT = 0.4


@dataclass(frozen=True, slots=True)
class Bars:
    beats_per_bar: int
    downbeat_offset: float  # seconds from the start of the decoded audio to the first downbeat
    confidence: float  # 0..1: how much the chosen downbeats stand out from the other beats


def estimate_bars(
    beat_times: np.ndarray,
    chroma_frames: np.ndarray,
    mel: np.ndarray,
    onset: np.ndarray,
    onset_rate: float,
) -> Bars | None:
    """Bar length and first downbeat for beats at ``beat_times`` (seconds), or None when the
    piece is too short to tell."""
    if beat_times.size < _MIN_BARS * max(BAR_LENGTHS) or chroma_frames.shape[0] < 2:
        return None
    period = float(np.median(np.diff(beat_times)))
    cues = {
        "harmony": _harmony_change(beat_times, period, chroma_frames),
        "bass": _rise(beat_times, period, _bass_energy(mel), ONSET_HOP * MEL_DECIMATION / ANALYSIS_RATE),
        "accent": _rise(beat_times, period, onset, 1.0 / onset_rate, peak=True),
    }
    # Accents that alternate beat by beat (a backbeat on 2 and 4) say the bar is even, whichever
    # beat they fall on.
    duple = abs(_contrast(cues["accent"], 2, 0))
    best: tuple[float, int, int] | None = None
    for beats in BAR_LENGTHS:
        for phase in range(beats):
            score = _BAR_PRIOR[beats] + sum(_WEIGHTS[name] * _contrast(values, beats, phase) for name, values in cues.items())
            score += _FIRST_BEAT if phase == 0 else 0.0
            score += _DUPLE * duple if beats in (2, 4) else 0.0
            if best is None or score > best[0]:
                best = (score, beats, phase)
    assert best is not None, "BAR_LENGTHS is not empty"
    score, beats, phase = best
    first = beat_times[phase]
    return Bars(beats, round(float(first), 3), round(float(np.clip(score / sum(_WEIGHTS.values()), 0.0, 1.0)), 3))


def _contrast(values: np.ndarray, beats: int, phase: int) -> float:
    """How far the would-be downbeats stand above the other beats, in standard deviations."""
    if values.size < beats * _MIN_BARS:
        return 0.0
    on = (np.arange(values.size) - phase) % beats == 0
    spread = values.std()
    if spread < 1e-9:
        return 0.0
    return float((values[on].mean() - values[~on].mean()) / spread)


def _frame_times(count: int, hop: int, size: int) -> np.ndarray:
    """Centres of analysis frames, seconds."""
    return (np.arange(count) * hop + size / 2) / ANALYSIS_RATE


def _harmony_change(beat_times: np.ndarray, period: float, chroma_frames: np.ndarray) -> np.ndarray:
    """Per beat: how different the harmony of the beat that starts there is from the one before
    (cosine distance of beat-long mean chroma)."""
    times = _frame_times(chroma_frames.shape[0], CHROMA_HOP, CHROMA_FFT)
    edges = np.searchsorted(times, np.append(beat_times, beat_times[-1] + period))
    sums = np.vstack([np.zeros((1, 12)), np.cumsum(chroma_frames, axis=0)])
    counts = np.maximum(edges[1:] - edges[:-1], 1)[:, None]
    per_beat = (sums[edges[1:]] - sums[edges[:-1]]) / counts
    norms = np.linalg.norm(per_beat, axis=1)
    unit = per_beat / np.maximum(norms, 1e-9)[:, None]
    change = np.zeros(beat_times.size)
    change[1:] = 1.0 - np.sum(unit[1:] * unit[:-1], axis=1)
    change[0] = change[1:].mean() if change.size > 1 else 0.0
    return change


def _bass_energy(mel: np.ndarray) -> np.ndarray:
    return mel[:, :_BASS_BANDS].mean(axis=1) if mel.size else np.zeros(0)


def _rise(beat_times: np.ndarray, period: float, envelope: np.ndarray, step: float, peak: bool = False) -> np.ndarray:
    """Per beat: how much ``envelope`` (sampled every ``step`` seconds) rises at the beat: its
    highest value in the first quarter of the beat, less its mean over the beat before (or just
    the peak, for an onset envelope)."""
    if envelope.size == 0:
        return np.zeros(beat_times.size)
    last = envelope.size - 1
    index = lambda t: np.clip(np.round(t / step).astype(int), 0, last)  # noqa: E731
    starts = index(beat_times - 0.03)
    ends = np.minimum(np.maximum(index(beat_times + period / 4), starts + 1), last) + 1  # exclusive
    # Every beat's window at once: reduceat over (start, end) pairs, the odd results discarded.
    bounds = np.column_stack([starts, ends]).ravel()
    high = np.maximum.reduceat(np.append(envelope, envelope[-1]), bounds)[::2].astype(float)
    if peak:
        return high
    lows = index(beat_times - period)
    highs = np.maximum(lows + 1, starts)
    sums = np.concatenate([[0.0], np.cumsum(envelope, dtype=float)])
    return high - (sums[highs] - sums[lows]) / (highs - lows)
