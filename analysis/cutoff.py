"""Where a file's spectrum stops: the brick wall a lossy encoder leaves, which every transcode keeps.

A lossy encoder drops everything above its lowpass (LAME's MP3 at 128 kb/s stops near 17 kHz, at
320 kb/s near 20 kHz; Vorbis, Opus and AAC somewhere between 15 and 20 kHz by bitrate), and
anything made from its output stops there too: a FLAC decoded from an MP3 ("lossy to lossless"),
a 320 kb/s MP3 made from a 128 kb/s one ("lossy to lossy"). A lossless recording rolls off gently,
or not at all, up to the Nyquist frequency. ``dj/duplicates.py`` reads the edge to keep the
original of a recording over its transcodes, and says why.

The stage is cheap on purpose (it shares the CPU budget of the whole pipeline): every
``HOP_SECONDS`` it takes one ``FRAME``-sample frame of the first two channels at their own rate,
and only while the music sounds; the frames' power spectra are summed into one long-term
spectrum (about 500 FFTs for a 4-minute track). The edge is then looked for above ``LOWEST`` Hz:
the highest frequency where the level falls by at least ``EDGE_DB`` within a few hundred hertz
and stays far below the body of the spectrum up to the top.
"""

from __future__ import annotations

import numpy as np
import scipy.fft

FRAME = 2048  # samples at the file's own rate: ~21 Hz bins at 44.1 kHz
HOP_SECONDS = 2.0
BATCH = 64  # frames transformed at once
GATE_RMS = 1e-3  # -60 dBFS: a frame of silence says nothing about the encoder
LOWEST = 11_000.0  # Hz: an "edge" below this is the music's own (a lowpassed mix, a dull recording)
EDGE_DB = 20.0  # how far the level falls across the edge (a lowpass: 25-100 dB; a roll-off: far less)
NEAR_HZ, FAR_HZ = 150.0, 1000.0  # the edge is judged between these distances on either side
REST_DB = 12.0  # above the edge, the level stays this far under the level below it
BODY_DB = 70.0  # below the edge there is music: within this of the body of the spectrum
SMOOTH_BINS = 25  # ~500 Hz: the body of the spectrum is read smoothed
MIN_FRAMES = 8  # fewer sounding frames than this: no measure


class CutoffMeter:
    """Feed the decoded channels (float32 ``(channels, n)`` at ``rate``) in order, then ``finish``.

    Only the sampled frames are ever copied (a block of 65,536 samples is looked at, not copied),
    and they are transformed ``BATCH`` at a time: a few microseconds per block and per frame."""

    def __init__(self, rate: int) -> None:
        self.rate = rate
        self._hop = max(FRAME, round(HOP_SECONDS * rate))
        self._window = np.hanning(FRAME).astype(np.float32)
        self._tail = np.zeros(0, np.float32)  # the end of what was fed (mono): a frame may start in it
        self._fed = 0  # samples fed so far
        self._next = 0  # where the next frame starts
        self._batch: list[np.ndarray] = []
        self._power = np.zeros(FRAME // 2 + 1)
        self._frames = 0

    def feed(self, channels: np.ndarray) -> None:
        count = channels.shape[-1]
        first, end = self._fed, self._fed + count
        self._fed = end
        if self._next + FRAME > end:
            if self._next < end:  # the next frame starts in this block: keep what it needs of it
                self._tail = np.concatenate([self._tail, _mono(channels[:, self._next - end :])])[-FRAME:]
            return
        while self._next + FRAME <= end:
            offset = self._next - first
            if offset >= 0:
                self._batch.append(_mono(channels[:, offset : offset + FRAME]))
            else:  # it started in the last block
                self._batch.append(np.concatenate([self._tail[offset:], _mono(channels[:, : FRAME + offset])]))
            self._next += self._hop
        self._tail = _mono(channels[:, max(self._next - end, -count) :]) if self._next < end else self._tail[:0]
        if len(self._batch) >= BATCH:
            self._transform()

    def _transform(self) -> None:
        frames = np.stack(self._batch)
        self._batch = []
        frames = frames[np.einsum("ij,ij->i", frames, frames) >= GATE_RMS**2 * FRAME]
        if len(frames):
            spectra = scipy.fft.rfft(frames * self._window, axis=1)
            self._power += (spectra.real**2 + spectra.imag**2).sum(axis=0)
            self._frames += len(frames)

    def finish(self) -> float | None:
        """The cutoff in Hz, ``rate / 2`` when the spectrum runs to the top, None when too little
        of the file sounded to tell."""
        if self._batch:
            self._transform()
        if self._frames < MIN_FRAMES:
            return None
        return spectrum_cutoff(10.0 * np.log10(self._power / self._frames + 1e-30), self.rate)


def _mono(channels: np.ndarray) -> np.ndarray:
    """The mid of the first two channels (the one channel of a mono file)."""
    return channels[0] if channels.shape[0] == 1 else 0.5 * (channels[0] + channels[1])


def spectrum_cutoff(spectrum_db: np.ndarray, rate: int) -> float:
    """The frequency (Hz) where a long-term spectrum (dB, ``FRAME // 2 + 1`` bins from 0 Hz to
    ``rate / 2``) stops, or ``rate / 2`` when it has no encoder's edge above ``LOWEST``.

    An edge is a frequency where the mean level of the ``NEAR_HZ``-``FAR_HZ`` just above lies
    ``EDGE_DB`` under that just below, where the mean level of everything further up to the top
    stays ``REST_DB`` under the level below (a brick wall lets nothing through; after a dip
    between partials the music comes back), and where there is music below (within ``BODY_DB``
    of the spectrum's body). Of the
    highest stretch of such frequencies (a transcode keeps its source's edge under its own), the
    edge is the middle of where the level falls most (within a decibel)."""
    nyquist = rate / 2
    bins = spectrum_db.size
    step = nyquist / (bins - 1)
    near, far = max(1, round(NEAR_HZ / step)), max(2, round(FAR_HZ / step))
    padded = np.pad(spectrum_db, SMOOTH_BINS // 2, mode="edge")  # zeros would be loud, in dB
    smooth = np.convolve(padded, np.ones(SMOOTH_BINS) / SMOOTH_BINS, mode="valid")
    body = float(np.percentile(smooth[round(1000 / step) : round(8000 / step)], 90))
    candidates = np.arange(max(round(LOWEST / step), far), bins - far)
    if candidates.size == 0:
        return nyquist
    sums = np.concatenate([[0.0], np.cumsum(spectrum_db)])
    below = (sums[candidates - near] - sums[candidates - far]) / (far - near)
    above = (sums[candidates + far] - sums[candidates + near]) / (far - near)
    # the mean level of everything further up: a codec's stray tones up there are no hole in the wall
    rest = (sums[-1] - sums[candidates + far]) / (bins - candidates - far)
    drop = below - above
    edges = np.nonzero((drop >= EDGE_DB) & (below - rest >= REST_DB) & (below >= body - BODY_DB))[0]
    if edges.size == 0:
        return nyquist
    gaps = np.nonzero(np.diff(edges) > 1)[0]
    stretch = edges[gaps[-1] + 1 :] if gaps.size else edges  # the highest run of candidates
    steepest = stretch[drop[stretch] >= drop[stretch].max() - 1.0]  # where both sides lie clear of it
    return round(float(candidates[steepest].mean() * step), 1)
