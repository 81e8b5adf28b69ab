"""Tempo (BPM) from the onset-strength envelope: autocorrelation, a comb over beat multiples, the
metrical level chosen within the DJ's range, then refined to a tenth of a BPM."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cratesense.analysis.constants import DEFAULT_BPM_RANGE

_PRIOR_CENTER_BPM = 120.0  # where listeners' preferred tempo clusters (a broad log-normal prior)
_PRIOR_OCTAVES = 1.0
_MIN_SECONDS = 6.0
_MIN_CONFIDENCE = 0.08
_TATUM_RANGE = (150.0, 450.0)  # pulses per minute where eighth and sixteenth layers live
_TATUM_SHARE = 0.6  # a faster peak this strong (relative to the strongest) is the tatum
_MIN_TATUM_PERIODICITY = 0.15


@dataclass(frozen=True, slots=True)
class Tempo:
    bpm: float  # one decimal
    confidence: float  # 0..1: how periodic the onsets are at this tempo
    beat_offset: float  # seconds to the first beat


def estimate_tempo(
    onset: np.ndarray, frame_rate: float, bpm_range: tuple[float, float] = DEFAULT_BPM_RANGE
) -> Tempo | None:
    """The tempo a DJ would count, or None when the audio has no steady beat (silence, drones)."""
    low, high = bpm_range
    if onset.size < _MIN_SECONDS * frame_rate or not np.any(onset > 0):
        return None
    envelope = _normalize(onset, frame_rate)
    if envelope is None:
        return None
    acf = autocorrelation(envelope)
    coarse = _beat_from_tatum(acf, frame_rate, low, high) or _beat_from_comb(acf, frame_rate, low, high)
    bpm = _refine(acf, frame_rate, coarse)
    period = 60.0 * frame_rate / bpm
    confidence = float(np.clip(_interpolate(acf, period), 0.0, 1.0))
    if confidence < _MIN_CONFIDENCE:
        return None
    return Tempo(round(bpm, 1), round(confidence, 3), round(_beat_offset(envelope, period) / frame_rate, 3))


def _beat_from_tatum(acf: np.ndarray, frame_rate: float, low: float, high: float) -> float | None:
    """The beat a DJ counts, from the fastest regular pulse (the hats' eighths or sixteenths).

    The autocorrelation alone favours whole bars (a breakbeat repeats every two beats, so drum &
    bass looks like 87 BPM); the fastest strong pulse is a fixed subdivision of the beat, so the
    beat is that pulse halved (or quartered) into the range.
    """
    fastest, slowest = 60.0 * frame_rate / _TATUM_RANGE[1], 60.0 * frame_rate / _TATUM_RANGE[0]
    lags = np.arange(max(2, int(fastest)), min(acf.size - 1, int(slowest) + 1))
    if lags.size < 3:
        return None
    values = acf[lags]
    peaks = [i for i in range(1, values.size - 1) if values[i] >= values[i - 1] and values[i] > values[i + 1]]
    if not peaks:
        return None
    strongest = max(values[i] for i in peaks)
    if strongest < _MIN_TATUM_PERIODICITY:
        return None
    first = next(i for i in peaks if values[i] >= _TATUM_SHARE * strongest)
    lag = _peak_lag(acf, int(lags[first]))
    rate = 60.0 * frame_rate / lag
    beat = rate / 2.0
    while beat > high:
        beat /= 2.0
    while beat < low:
        beat *= 2.0
    return beat if beat <= high else None


def _beat_from_comb(acf: np.ndarray, frame_rate: float, low: float, high: float) -> float:
    """Fallback without a clear fast pulse: beat-multiple comb salience with a tempo prior."""
    grid = np.exp(np.arange(np.log(low), np.log(high), 0.002))
    salience = np.array([_comb(acf, 60.0 * frame_rate / bpm, beats=4) for bpm in grid])
    octaves = np.log2(grid / _PRIOR_CENTER_BPM) / _PRIOR_OCTAVES
    return float(grid[int(np.argmax(salience * np.exp(-0.5 * octaves**2)))])


def _peak_lag(acf: np.ndarray, index: int) -> float:
    """Parabolic interpolation of an autocorrelation peak."""
    left, centre, right = acf[index - 1], acf[index], acf[index + 1]
    denominator = left - 2 * centre + right
    return index + (0.5 * (left - right) / denominator if denominator < 0 else 0.0)


def _normalize(onset: np.ndarray, frame_rate: float) -> np.ndarray | None:
    """Remove the slow trend (a crescendo is not a beat) and scale to unit variance."""
    width = max(3, int(frame_rate))
    trend = np.convolve(onset, np.ones(width) / width, mode="same")
    envelope = np.maximum(onset - trend, 0.0)
    deviation = envelope.std()
    if deviation < 1e-9:
        return None
    return (envelope - envelope.mean()) / deviation


def autocorrelation(envelope: np.ndarray) -> np.ndarray:
    """Unbiased autocorrelation (via FFT), normalized to 1 at lag 0."""
    size = 1 << int(np.ceil(np.log2(2 * envelope.size)))
    spectrum = np.fft.rfft(envelope, size)
    acf = np.fft.irfft(spectrum * np.conj(spectrum), size)[: envelope.size]
    # Unbiased: each lag averages over the overlap it has.
    acf /= np.arange(envelope.size, 0, -1)
    return acf / acf[0]


def _interpolate(acf: np.ndarray, lag: float) -> float:
    index = int(lag)
    if index + 1 >= acf.size:
        return 0.0
    fraction = lag - index
    # The highest value near the lag: onsets quantized to frames smear peaks over +-1 frame.
    window = acf[max(0, index - 1) : index + 3]
    linear = acf[index] * (1 - fraction) + acf[index + 1] * fraction
    return float(max(linear, window.max() * 0.98))


def _comb(acf: np.ndarray, period: float, beats: int) -> float:
    return float(np.mean([_interpolate(acf, period * k) for k in range(1, beats + 1)]))


def _refine(acf: np.ndarray, frame_rate: float, bpm: float) -> float:
    """Sharpen to 0.01 BPM using many beat multiples: a long lag pins the period precisely."""
    beats = max(4, min(64, int(acf.size / (60.0 * frame_rate / bpm) * 0.5)))
    fine = np.arange(bpm * 0.98, bpm * 1.02, 0.01)
    # Every candidate at once: the mean autocorrelation at its beat multiples within the signal.
    lags = (60.0 * frame_rate / fine)[:, None] * np.arange(1, beats + 1)[None, :]
    inside = lags < acf.size - 1
    values = np.where(inside, np.interp(lags, np.arange(acf.size), acf), 0.0)
    counts = inside.sum(axis=1)
    scores = np.where(counts > 0, values.sum(axis=1) / np.maximum(counts, 1), 0.0)
    return float(fine[int(np.argmax(scores))])


def _beat_offset(envelope: np.ndarray, period: float) -> float:
    """The phase (in frames) whose beat grid collects the most onset strength."""
    count = int((envelope.size - 1) / period)
    if count < 1:
        return 0.0
    phases = np.arange(0.0, period, 0.5)
    positions = phases[:, None] + period * np.arange(count)[None, :]
    scores = np.interp(positions, np.arange(envelope.size), envelope).sum(axis=1)
    return float(phases[int(np.argmax(scores))])
