"""Loudness as EBU R128 defines it (ITU-R BS.1770-4): integrated loudness (LUFS), loudness range
(EBU Tech 3342) and true peak, measured on the channels as decoded, at their own sample rate,
while the audio streams by.

Integrated loudness and range come from FFmpeg's ``ebur128`` filter (PyAV's bundled FFmpeg: the
K-weighting, the gating and the histograms run in C, and the figures are those of
``ffmpeg -af ebur128``). The true peak is ours: the filter's own true-peak mode oversamples every
sample to 192 kHz and costs more than everything else in the pipeline together, while an
inter-sample peak can only rise next to a sample that is already near the peak.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import av
import av.error
import av.filter
import numpy as np
from scipy import signal

REPLAYGAIN_REFERENCE_LUFS = -18.0
_ABSOLUTE_GATE = -70.0  # what ebur128 reports when no block is above the absolute gate
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


class LoudnessMeter:
    """Feed native blocks ``(channels, n)`` float32 in order, then ``finish``.

    ``channel_names`` are FFmpeg's (FL, FR, FC, LFE, BL, BR, SL, SR, ...): they give BS.1770's
    channel weights (surround 1.41, LFE 0); unknown names count as front channels.
    """

    def __init__(self, sample_rate: int, channel_names: tuple[str, ...]) -> None:
        self.sample_rate = sample_rate
        self._channels = len(channel_names)
        self._layout = _layout(channel_names)
        self._graph = av.filter.Graph()
        source = self._graph.add_abuffer(format="fltp", sample_rate=sample_rate, layout=self._layout)
        meter = self._graph.add("ebur128", "metadata=1:framelog=quiet")
        self._sink = self._graph.add("abuffersink")
        source.link_to(meter)
        meter.link_to(self._sink)
        self._graph.configure()
        self._figures: dict[str, str] = {}  # the filter's latest running figures
        self._sample_peak = 0.0
        self._true_peak = 0.0
        self._history = np.zeros((self._channels, _TRUE_PEAK_HISTORY), np.float32)
        oversampler = signal.firwin(
            _TRUE_PEAK_OVERSAMPLING * 12, 0.9 / _TRUE_PEAK_OVERSAMPLING, window=("kaiser", 8.0)
        ) * _TRUE_PEAK_OVERSAMPLING
        self._taps_per_phase = oversampler.size // _TRUE_PEAK_OVERSAMPLING
        # Column p holds the taps of phase p, reversed to match a window of x[i-11 .. i].
        self._polyphase = np.stack(
            [oversampler[phase::_TRUE_PEAK_OVERSAMPLING][::-1] for phase in range(_TRUE_PEAK_OVERSAMPLING)], axis=1
        ).astype(np.float32)

    def feed(self, block: np.ndarray) -> None:
        """Add the next block of ``(channels, n)`` samples."""
        if block is None or block.size == 0:
            return
        block = np.ascontiguousarray(block, dtype=np.float32)
        self._measure_peaks(block)
        frame = av.AudioFrame.from_ndarray(block, format="fltp", layout=self._layout)
        frame.sample_rate = self.sample_rate
        self._graph.push(frame)
        self._read_figures()

    def _read_figures(self) -> None:
        """Drain the filter's output (a frame per 100 ms) and keep its latest figures: only the
        newest frames' metadata are read (making a dict of every frame's was ~10 % of the meter)."""
        newest: list = []
        while True:
            try:
                newest = [*newest[-1:], self._sink.pull()]
            except (av.error.BlockingIOError, av.error.EOFError):
                break
        for frame in reversed(newest):
            metadata = frame.metadata
            if "lavfi.r128.I" in metadata:
                self._figures = dict(metadata)
                return

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
            # Samples near the peak first (one pass), then which of those few are local maxima.
            loud = first + np.flatnonzero(values[first:last] >= threshold)
            candidates = loud[(values[loud] >= values[loud - 1]) & (values[loud] >= values[loud + 1])]
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
        self._graph.push(None)
        self._read_figures()
        integrated = float(self._figures.get("lavfi.r128.I", _ABSOLUTE_GATE))
        audible = integrated > _ABSOLUTE_GATE
        return Loudness(
            integrated_lufs=_round(integrated) if audible else None,
            range_lu=_round(float(self._figures["lavfi.r128.LRA"])) if audible else None,
            true_peak_dbtp=_round(_db(self._true_peak)),
            sample_peak_dbfs=_round(_db(self._sample_peak)),
        )


def _layout(channel_names: tuple[str, ...]) -> str:
    """An FFmpeg channel layout for the names, or the default layout of that many channels."""
    try:
        layout = av.AudioLayout("+".join(channel_names))
        if len(layout.channels) == len(channel_names):
            return layout.name
    except (ValueError, av.error.FFmpegError):
        pass
    return av.AudioLayout(f"{len(channel_names)}c").name


def _db(amplitude: float) -> float | None:
    return 20 * math.log10(amplitude) if amplitude > 0 else None


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 2)
