"""Where a file's spectrum stops: the "brick wall" a lossy encoder leaves, which a transcode keeps.

A lossy encoder drops everything above its lowpass (an MP3 at 128 kb/s stops at about 17 kHz,
at 320 kb/s at about 20.5 kHz; Vorbis and Opus near 20-21 kHz), and anything made from that file
afterwards stops there too: a FLAC made from an MP3 ("lossy to lossless"), or a 320 kb/s MP3 made
from a 128 kb/s one ("lossy to lossy"). A real lossless recording rolls off gently or not at all
below the Nyquist frequency. So the long-term spectrum of the file's channels at their own rate
is measured (the median power of one 4096-sample frame every quarter second, over its sounding
frames), and the cutoff is the highest frequency above 10 kHz where the level falls by at least
``EDGE_DB`` within about a kilohertz and stays down above it.

Read at ``cratesense duplicates`` time from the copies of one recording (the pipeline does not
pay for it): ``measure_file`` decodes ``SECONDS`` of the file.
"""

from __future__ import annotations

import os

import numpy as np

from cratesense.analysis.decode import AudioFile

SECONDS = 60.0  # of audio read from the file (after its first ``SKIP`` seconds when it has them)
SKIP = 15.0
FRAME = 4096
EDGE_DB = 25.0  # how far the level falls across the edge
FLOOR_DB = 50.0  # above the edge it stays this far below the body of the spectrum
LOWEST = 10_000.0  # Hz: lower "cutoffs" are the music's own
_QUIET = 1e-3  # RMS of a frame that counts as sounding


def cutoff(spectrum_db: np.ndarray, rate: int) -> float | None:
    """The frequency (Hz) where a long-term spectrum (dB, ``FRAME // 2 + 1`` bins) stops, or None
    when it runs on to the top (no lossy encoder's edge)."""
    frequencies = np.fft.rfftfreq(FRAME, 1.0 / rate)
    smooth = np.convolve(spectrum_db, np.ones(9) / 9, mode="same")
    body = np.percentile(smooth[(frequencies > 1000) & (frequencies < 8000)], 90)
    step = frequencies[1]
    wide, narrow = int(600 / step), int(100 / step)
    # The mean level just below and just above every bin, and above it to the top, at once.
    sums = np.concatenate([[0.0], np.cumsum(smooth)])
    bins = np.arange(max(int(np.searchsorted(frequencies, LOWEST)), wide), smooth.size - wide - 1)
    below = (sums[bins - narrow] - sums[bins - wide]) / (wide - narrow)
    above = (sums[bins + wide] - sums[bins + narrow]) / (wide - narrow)
    rest = (sums[-1] - sums[bins + narrow]) / (smooth.size - bins - narrow)
    edges = bins[(below - above >= EDGE_DB) & (rest < body - FLOOR_DB) & (below > body - FLOOR_DB)]
    return float(frequencies[edges[-1]]) if edges.size else None


def long_term_spectrum(blocks, rate: int) -> np.ndarray | None:
    """The median power spectrum (dB) of the sounding frames of mono float blocks."""
    frames = []
    hop = rate // 4
    pending = np.zeros(0, np.float32)
    for block in blocks:
        pending = np.concatenate([pending, block])
        while pending.size >= FRAME:
            frames.append(pending[:FRAME])
            pending = pending[hop:] if hop < pending.size else np.zeros(0, np.float32)
    if not frames:
        return None
    stacked = np.array(frames)
    stacked = stacked[np.sqrt(np.mean(stacked**2, axis=1)) > _QUIET]
    if not len(stacked):
        return None
    power = np.abs(np.fft.rfft(stacked * np.hanning(FRAME), axis=1)) ** 2
    return 10.0 * np.log10(np.median(power, axis=0) + 1e-20)


def measure_file(path: str | os.PathLike) -> tuple[float | None, int] | None:
    """(cutoff Hz or None, sample rate) of a file, from ``SECONDS`` of its audio; None when it
    cannot be decoded or holds no sound."""
    rate = 0
    skipped = 0
    blocks = []
    try:
        with AudioFile(path) as audio:
            for block in audio.blocks(native=True, max_seconds=SKIP + SECONDS):
                if block.native is None or block.native.shape[-1] == 0:
                    continue
                rate = block.native_rate
                mono = block.native.mean(axis=0).astype(np.float32)
                if skipped < SKIP * rate and audio.info.declared_duration and audio.info.declared_duration > SKIP + 20:
                    skipped += mono.size
                    continue
                blocks.append(mono)
    except Exception:  # a file that will not decode has no spectrum to speak of
        return None
    spectrum = long_term_spectrum(blocks, rate) if rate else None
    if spectrum is None:
        return None
    return cutoff(spectrum, rate), rate
