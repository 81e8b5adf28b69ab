"""Loudness as EBU R128 defines it (ITU-R BS.1770-4): integrated loudness (LUFS), loudness range
(EBU Tech 3342) and true peak (4x oversampled), measured on the channels as decoded, at their own
sample rate, while the audio streams by.

The meter keeps only 100 ms mean-square values per channel (a 2-hour mix: ~70,000 numbers), and
the gating is a pure function of those.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import signal

_ABSOLUTE_GATE = -70.0
_RELATIVE_GATE_INTEGRATED = -10.0
_RELATIVE_GATE_RANGE = -20.0
_SUBBLOCK_SECONDS = 0.1  # gating blocks (400 ms) and short-term windows (3 s) are made of these
REPLAYGAIN_REFERENCE_LUFS = -18.0
_SURROUND = {"SL", "SR", "BL", "BR", "LS", "RS"}
_TRUE_PEAK_OVERSAMPLING = 4
_TRUE_PEAK_HISTORY = 32  # samples carried between blocks so the oversampling filter is continuous
_TRUE_PEAK_LOOKAHEAD = 9  # samples after a candidate the filter needs


@dataclass(frozen=True, slots=True)
class Loudness:
    integrated_lufs: float | None  # None for silence (everything below the absolute gate)
    range_lu: float | None
    true_peak_dbtp: float | None
    sample_peak_dbfs: float | None

    @property
    def replaygain_db(self) -> float | None:
        if self.integrated_lufs is None:
            return None
        return round(REPLAYGAIN_REFERENCE_LUFS - self.integrated_lufs, 2)


def k_weighting(sample_rate: int) -> np.ndarray:
    """The two K-weighting biquads (high shelf, then RLB high-pass) for any rate, as second-order
    sections, from the analog prototypes BS.1770 specifies at 48 kHz."""
    # Stage 1: high shelf, +4 dB above ~1.5 kHz (models the head).
    gain_db, q, f0 = 3.999843853973347, 0.7071752369554196, 1681.974450955533
    k = math.tan(math.pi * f0 / sample_rate)
    vh = 10 ** (gain_db / 20)
    vb = vh**0.4996667741545416
    a0 = 1 + k / q + k * k
    shelf = [
        (vh + vb * k / q + k * k) / a0,
        2 * (k * k - vh) / a0,
        (vh - vb * k / q + k * k) / a0,
        1.0,
        2 * (k * k - 1) / a0,
        (1 - k / q + k * k) / a0,
    ]
    # Stage 2: RLB high-pass at ~38 Hz.
    q, f0 = 0.5003270373238773, 38.13547087602444
    k = math.tan(math.pi * f0 / sample_rate)
    a0 = 1 + k / q + k * k
    highpass = [1.0, -2.0, 1.0, 1.0, 2 * (k * k - 1) / a0, (1 - k / q + k * k) / a0]
    return np.array([shelf, highpass])


def channel_weights(names: tuple[str, ...]) -> np.ndarray:
    """BS.1770 channel weights: 1.41 for surround channels, 0 for LFE, 1 otherwise."""
    return np.array(
        [0.0 if name.upper() == "LFE" else 1.41 if name.upper() in _SURROUND else 1.0 for name in names]
    )


class LoudnessMeter:
    """Feed native blocks ``(channels, n)`` float32 in order, then ``finish``."""

    def __init__(self, sample_rate: int, channel_names: tuple[str, ...]) -> None:
        self._channels = len(channel_names)
        self._weights = channel_weights(channel_names)
        self._set_rate(sample_rate)
        self._subblock_power: list[np.ndarray] = []  # (n, channels) mean squares per 100 ms
        self._sample_peak = 0.0
        self._true_peak = 0.0
        self._history = np.zeros((self._channels, _TRUE_PEAK_HISTORY))
        oversampler = signal.firwin(
            _TRUE_PEAK_OVERSAMPLING * 12, 0.9 / _TRUE_PEAK_OVERSAMPLING, window=("kaiser", 8.0)
        ) * _TRUE_PEAK_OVERSAMPLING
        self._taps_per_phase = oversampler.size // _TRUE_PEAK_OVERSAMPLING
        # Column p holds the taps of phase p, reversed to match a window of x[i-11 .. i].
        self._polyphase = np.stack(
            [oversampler[phase::_TRUE_PEAK_OVERSAMPLING][::-1] for phase in range(_TRUE_PEAK_OVERSAMPLING)], axis=1
        )

    def _set_rate(self, sample_rate: int) -> None:
        """Filters for ``sample_rate``. Measurements so far are 100 ms powers, which do not depend
        on the rate, so a stream that changes rate mid-way keeps them."""
        self.sample_rate = sample_rate
        self._sos = k_weighting(sample_rate)
        self._state = np.zeros((self._sos.shape[0], self._channels, 2))
        self._subblock = int(round(_SUBBLOCK_SECONDS * sample_rate))
        self._carry = np.zeros((self._channels, 0))

    def feed(self, block: np.ndarray, sample_rate: int | None = None) -> None:
        """Add the next block; ``sample_rate`` only when it differs from the meter's."""
        if block is None or block.size == 0:
            return
        if sample_rate is not None and sample_rate != self.sample_rate:
            self._set_rate(sample_rate)
        if block.shape[0] != self._channels:  # channel count changed mid-stream: keep the first ones
            block = block[: self._channels] if block.shape[0] > self._channels else np.vstack(
                [block, np.zeros((self._channels - block.shape[0], block.shape[1]), block.dtype)]
            )
        block = block.astype(np.float64)
        self._measure_peaks(block)
        filtered, self._state = signal.sosfilt(self._sos, block, axis=1, zi=self._state)
        pending = np.concatenate([self._carry, filtered], axis=1)
        whole = pending.shape[1] // self._subblock
        if whole:
            squares = pending[:, : whole * self._subblock].reshape(self._channels, whole, self._subblock) ** 2
            self._subblock_power.append(squares.mean(axis=2).T)
        self._carry = pending[:, whole * self._subblock :]

    def _measure_peaks(self, block: np.ndarray) -> None:
        """Sample peak, and the true peak (BS.1770 annex 2: 4x oversampling, 48-tap filter).

        Oversampling every sample would cost more than all other descriptors together, and an
        inter-sample peak can only rise next to a local maximum that is already near the peak;
        so the filter is evaluated only around local maxima within 6 dB of the running peak.
        """
        joined = np.concatenate([self._history, block], axis=1)
        absolute = np.abs(joined)
        self._sample_peak = max(self._sample_peak, float(absolute[:, self._history.shape[1] :].max()))
        # Candidates from the previous call's unfinished tail up to this call's (filter lookahead).
        first = self._history.shape[1] - _TRUE_PEAK_LOOKAHEAD
        last = joined.shape[1] - _TRUE_PEAK_LOOKAHEAD
        self._history = joined[:, -_TRUE_PEAK_HISTORY:]
        threshold = 0.5 * max(self._true_peak, self._sample_peak)
        for channel in range(self._channels):
            values = absolute[channel]
            middle = values[first:last]
            before = values[first - 1 : last - 1]
            after = values[first + 1 : last + 1]
            candidates = first + np.nonzero((middle >= threshold) & (middle >= before) & (middle >= after))[0]
            if candidates.size:
                self._true_peak = max(self._true_peak, self._oversampled_peak(joined[channel], candidates))
        self._true_peak = max(self._true_peak, self._sample_peak)

    def _oversampled_peak(self, samples: np.ndarray, candidates: np.ndarray) -> float:
        # Output sample 4i+p of the oversampler is sum_k x[i-k] h[p+4k]; with the filter's delay
        # of ~6 input samples, i = c+4 .. c+8 cover the intervals on both sides of sample c.
        windows = np.lib.stride_tricks.sliding_window_view(samples, self._taps_per_phase)
        ends = (candidates[:, None] + np.arange(4, 9)[None, :]).ravel()
        values = windows[ends - self._taps_per_phase + 1] @ self._polyphase
        return float(np.abs(values).max())

    def finish(self) -> Loudness:
        power = (
            np.concatenate(self._subblock_power) if self._subblock_power else np.zeros((0, self._channels))
        )
        return Loudness(
            integrated_lufs=_round(integrated_loudness(power, self._weights)),
            range_lu=_round(loudness_range(power, self._weights)),
            true_peak_dbtp=_round(_db(self._true_peak)),
            sample_peak_dbfs=_round(_db(self._sample_peak)),
        )


def _db(amplitude: float) -> float | None:
    return 20 * math.log10(amplitude) if amplitude > 0 else None


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 2)


def _loudness(power: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore"):
        return -0.691 + 10 * np.log10(power)


def _windows(power: np.ndarray, weights: np.ndarray, subblocks: int, step: int) -> np.ndarray:
    """Channel-weighted mean square of windows of ``subblocks`` 100 ms sub-blocks."""
    weighted = power @ weights
    if weighted.size < subblocks:
        return np.zeros(0)
    sums = np.convolve(weighted, np.ones(subblocks), mode="valid") / subblocks
    return sums[::step]


def integrated_loudness(power: np.ndarray, weights: np.ndarray) -> float | None:
    """Gated integrated loudness from 100 ms per-channel mean squares (400 ms blocks, 75% overlap)."""
    blocks = _windows(power, weights, subblocks=4, step=1)
    blocks = blocks[_loudness(blocks) > _ABSOLUTE_GATE]
    if blocks.size == 0:
        return None
    relative_gate = _loudness(np.array([blocks.mean()]))[0] + _RELATIVE_GATE_INTEGRATED
    gated = blocks[_loudness(blocks) > relative_gate]
    return float(_loudness(np.array([gated.mean()]))[0])


def loudness_range(power: np.ndarray, weights: np.ndarray) -> float | None:
    """EBU Tech 3342: spread (10th to 95th percentile) of gated 3 s short-term loudness."""
    windows = _windows(power, weights, subblocks=30, step=1)
    levels = _loudness(windows)
    levels = levels[levels > _ABSOLUTE_GATE]
    if levels.size == 0:
        return None
    relative_gate = _loudness(np.array([np.mean(10 ** ((levels + 0.691) / 10))]))[0] + _RELATIVE_GATE_RANGE
    levels = levels[levels > relative_gate]
    if levels.size == 0:
        return None
    return float(np.percentile(levels, 95) - np.percentile(levels, 10))
