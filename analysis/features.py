"""Frame features computed while the audio streams by, so tempo, key and the embedding never need
the whole PCM in memory (a 2-hour mix keeps a few MB of features, not 300 MB of samples).

``FeatureExtractor`` reads the mono analysis stream (11025 Hz) and keeps:

* an onset-strength envelope (log-mel spectral flux) at ``ONSET_RATE`` frames per second;
* a finer one (log-magnitude flux of every FFT bin up to ``FLUX_FMAX``), for tempo and beats: a
  bowed or legato note that changes pitch inside one mel band is heard by it, not by the mel flux;
  and the same flux over ``SLOW_FLUX_FRAMES`` frames (~93 ms), which hears the soft attacks of
  voices, organs and slow strings that rise too slowly for one frame's difference;
* a low-band onset envelope (the rise of the lowest ``LOW_BANDS`` mel bands, ~30-300 Hz): the
  kick and the bass, which is where dance music puts its beat; and a high-band one (the top
  ``HIGH_BANDS`` mel bands, ~2.8-5 kHz): the hats and shakers that mark the beat's subdivisions;
* log-mel band energies, every ``MEL_DECIMATION``-th onset frame (for the bars, ``downbeat.py``);
* a pitch spectrum folded to one octave at 20-cent resolution (60 bins), every chroma hop, so the
  tuning can be estimated once at the end and the chroma aligned to it;
* beside it a bass chroma (12 semitones of 40-200 Hz, from the same spectrum): the root of a
  cadence's chords, which the treble's folded spectrum mixes with the melody;
* and the same spectrum unfolded, ``NOTE_OCTAVES`` octaves from A1 in thirds of a semitone,
  averaged over ``NOTE_DECIMATION`` chroma frames (float16): the key stage takes each note's
  harmonics away from the notes above it there (a saw bass's fifth harmonic is a major third
  that no one played), which a spectrum folded to one octave cannot.

``TimbreExtractor`` reads the decoded channels at their own rate (the analysis stream holds
nothing above ~4.4 kHz, and no stereo) and keeps running statistics only, for the embedding:
the spectral envelope (mel cepstrum to 6 kHz) and the stereo image (side/mid energy to 4.5 kHz).

The extractors are deterministic and do no I/O; ``finish`` returns frozen arrays.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.fft

from cratesense.analysis.decode import ANALYSIS_RATE

ONSET_FFT = 1024
ONSET_HOP = 256
ONSET_RATE = ANALYSIS_RATE / ONSET_HOP  # ~43 frames per second
MEL_BANDS = 24
MEL_DECIMATION = 4
LOW_BANDS = 3  # mel bands of the low-band onset envelope (~30-300 Hz: kick and bass)
HIGH_BANDS = 5  # mel bands of the high-band one (~2.8-5 kHz: hats)
CHROMA_FFT = 4096
CHROMA_HOP = 1024
SUBBINS_PER_SEMITONE = 5  # 20-cent pitch resolution, for tuning estimation
PITCH_BINS = 12 * SUBBINS_PER_SEMITONE
CHROMA_FMIN, CHROMA_FMAX = 55.0, 2000.0
BASS_FMIN, BASS_FMAX = 40.0, 200.0
NOTE_LOW_MIDI = 33  # A1, 55 Hz
NOTE_OCTAVES = 5  # to A6
NOTE_SUBBINS = 3  # a third of a semitone: the tuning can still be applied
NOTE_BINS = 12 * NOTE_OCTAVES * NOTE_SUBBINS
NOTE_DECIMATION = 4  # chroma frames averaged into one (~0.37 s): the key needs no finer time
_NOTE_SCALE = np.float32(1 / 16)  # keeps the loudest sums well inside float16
FLUX_FMAX = 5000.0
SLOW_FLUX_FRAMES = 4
_FLUX_GAIN = 100.0  # log(1 + gain * magnitude): compresses so quiet notes' onsets count too
_BATCH_FRAMES = 256


def _mel(frequency):
    return 2595.0 * np.log10(1.0 + np.asarray(frequency) / 700.0)


def _mel_filterbank(
    n_fft: int, bands: int, fmin: float = 30.0, fmax: float = 5000.0, rate: int = ANALYSIS_RATE
) -> np.ndarray:
    """Triangular mel filters, shape (n_fft // 2 + 1, bands), each averaging its bins."""
    frequencies = np.fft.rfftfreq(n_fft, 1.0 / rate)
    edges_mel = np.linspace(_mel(fmin), _mel(fmax), bands + 2)
    edges = 700.0 * (10 ** (edges_mel / 2595.0) - 1.0)
    bank = np.zeros((frequencies.size, bands), np.float32)
    for band in range(bands):
        low, center, high = edges[band : band + 3]
        rising = (frequencies - low) / (center - low)
        falling = (high - frequencies) / (high - center)
        bank[:, band] = np.clip(np.minimum(rising, falling), 0.0, None)
    return bank / np.maximum(bank.sum(axis=0, keepdims=True), 1e-9)


def _pitch_map(n_fft: int) -> tuple[np.ndarray, np.ndarray]:
    """FFT bins within the chroma range, and a 0/1 matrix folding them into 20-cent pitch bins
    of one octave (bin 0 is C, in equal temperament at A4 = 440 Hz)."""
    frequencies = np.fft.rfftfreq(n_fft, 1.0 / ANALYSIS_RATE)
    selected = np.nonzero((frequencies >= CHROMA_FMIN) & (frequencies <= CHROMA_FMAX))[0]
    midi = 69.0 + 12.0 * np.log2(frequencies[selected] / 440.0)
    pitch_bin = np.round(midi * SUBBINS_PER_SEMITONE).astype(int) % PITCH_BINS
    fold = np.zeros((selected.size, PITCH_BINS), np.float32)
    fold[np.arange(selected.size), pitch_bin] = 1.0
    return selected, fold


def _note_map(n_fft: int) -> tuple[np.ndarray, np.ndarray]:
    """FFT bins of the note range and a 0/1 matrix placing each in its third of a semitone
    (bin 0 centred on A1 at A4 = 440 Hz)."""
    frequencies = np.fft.rfftfreq(n_fft, 1.0 / ANALYSIS_RATE)
    midi = np.full(frequencies.size, -1.0)
    midi[1:] = 69.0 + 12.0 * np.log2(frequencies[1:] / 440.0)
    position = np.round((midi - NOTE_LOW_MIDI) * NOTE_SUBBINS).astype(int)
    selected = np.nonzero((midi > 0) & (position >= 0) & (position < NOTE_BINS))[0]
    fold = np.zeros((selected.size, NOTE_BINS), np.float32)
    fold[np.arange(selected.size), position[selected]] = 1.0
    return selected, fold


def _bass_map(n_fft: int) -> tuple[np.ndarray, np.ndarray]:
    """FFT bins of the bass range and a 0/1 matrix folding them to 12 semitones (C first; a
    semitone is only one or two bins wide down there, so no finer grid)."""
    frequencies = np.fft.rfftfreq(n_fft, 1.0 / ANALYSIS_RATE)
    selected = np.nonzero((frequencies >= BASS_FMIN) & (frequencies <= BASS_FMAX))[0]
    semitone = np.round(69.0 + 12.0 * np.log2(frequencies[selected] / 440.0)).astype(int) % 12
    fold = np.zeros((selected.size, 12), np.float32)
    fold[np.arange(selected.size), semitone] = 1.0
    return selected, fold


@dataclass(frozen=True, slots=True)
class FrameFeatures:
    onset: np.ndarray  # (n,) onset strength at ONSET_RATE (log-mel flux)
    onset_fine: np.ndarray  # (n,) onset strength at ONSET_RATE (log-magnitude flux of FFT bins)
    onset_slow: np.ndarray  # (n,) the same flux over SLOW_FLUX_FRAMES frames
    onset_low: np.ndarray  # (n,) the rise of the lowest LOW_BANDS mel bands (kick and bass)
    onset_high: np.ndarray  # (n,) the rise of the highest HIGH_BANDS mel bands (hats)
    mel: np.ndarray  # (m, MEL_BANDS) log-mel energies at ONSET_RATE / MEL_DECIMATION
    pitch: np.ndarray  # (k, PITCH_BINS) folded pitch spectrum at ANALYSIS_RATE / CHROMA_HOP
    bass: np.ndarray  # (k, 12) bass chroma (BASS_FMIN-BASS_FMAX), same frames
    notes: np.ndarray  # (k // NOTE_DECIMATION, NOTE_BINS) float16 unfolded spectrum from A1, thirds of a semitone
    energy: np.ndarray  # (k,) RMS per chroma frame, for weighting
    duration: float


class FeatureExtractor:
    """Feed the analysis stream in order (int16 or float blocks), then ``finish``."""

    def __init__(self) -> None:
        self._window_onset = np.hanning(ONSET_FFT).astype(np.float32)
        self._window_chroma = np.hanning(CHROMA_FFT).astype(np.float32)
        self._mel_bank = _mel_filterbank(ONSET_FFT, MEL_BANDS)
        self._flux_bins = int(FLUX_FMAX * ONSET_FFT / ANALYSIS_RATE) + 1
        self._previous_log_magnitude: np.ndarray | None = None
        self._onset_fine: list[np.ndarray] = []
        self._onset_slow: list[np.ndarray] = []
        self._pitch_bins, self._pitch_fold = _pitch_map(CHROMA_FFT)
        self._bass_bins, self._bass_fold = _bass_map(CHROMA_FFT)
        self._bass: list[np.ndarray] = []
        self._note_bins, self._note_fold = _note_map(CHROMA_FFT)
        self._notes: list[np.ndarray] = []
        self._note_carry = np.zeros((0, NOTE_BINS), np.float32)  # chroma frames not yet averaged
        self._buffer = np.zeros(0, np.float32)
        self._consumed = 0  # samples dropped from the front of the buffer so far
        self._next_onset = 0  # absolute sample index of the next onset frame's start
        self._next_chroma = 0
        self._previous_mel: np.ndarray | None = None
        self._onset: list[np.ndarray] = []
        self._onset_low: list[np.ndarray] = []
        self._onset_high: list[np.ndarray] = []
        self._mel: list[np.ndarray] = []
        self._mel_phase = 0
        self._pitch: list[np.ndarray] = []
        self._energy: list[np.ndarray] = []
        self._samples = 0

    def feed(self, samples: np.ndarray) -> None:
        if samples.size == 0:
            return
        if samples.dtype == np.int16:
            samples = samples.astype(np.float32) / 32768.0
        self._samples += samples.size
        self._buffer = np.concatenate([self._buffer, samples.astype(np.float32, copy=False)])
        if self._buffer.size >= CHROMA_FFT + _BATCH_FRAMES * ONSET_HOP:
            self._process()

    def finish(self) -> FrameFeatures:
        # Pad so the last partial frames are analyzed, as a player would hear them out.
        self._buffer = np.concatenate([self._buffer, np.zeros(CHROMA_FFT, np.float32)])
        self._process(final_limit=self._samples)
        onset = np.concatenate(self._onset) if self._onset else np.zeros(0, np.float32)
        onset_fine = np.concatenate(self._onset_fine) if self._onset_fine else np.zeros(0, np.float32)
        onset_slow = np.concatenate(self._onset_slow) if self._onset_slow else np.zeros(0, np.float32)
        onset_low = np.concatenate(self._onset_low) if self._onset_low else np.zeros(0, np.float32)
        onset_high = np.concatenate(self._onset_high) if self._onset_high else np.zeros(0, np.float32)
        mel = np.concatenate(self._mel) if self._mel else np.zeros((0, MEL_BANDS), np.float32)
        pitch = np.concatenate(self._pitch) if self._pitch else np.zeros((0, PITCH_BINS), np.float32)
        bass = np.concatenate(self._bass) if self._bass else np.zeros((0, 12), np.float32)
        energy = np.concatenate(self._energy) if self._energy else np.zeros(0, np.float32)
        if len(self._note_carry):
            self._notes.append(self._note_carry.mean(axis=0, keepdims=True).astype(np.float16))
        notes = np.concatenate(self._notes) if self._notes else np.zeros((0, NOTE_BINS), np.float16)
        return FrameFeatures(
            onset, onset_fine, onset_slow, onset_low, onset_high, mel, pitch, bass, notes, energy, self._samples / ANALYSIS_RATE
        )

    def _frames(self, start: int, size: int, hop: int, limit: int | None) -> tuple[np.ndarray, int]:
        """Frames starting at absolute sample ``start`` that fit in the buffer (and start before
        ``limit``), and the start of the next one."""
        offset = start - self._consumed
        available = self._buffer.size - offset - size
        if available < 0:
            return np.zeros((0, size), np.float32), start
        count = available // hop + 1
        if limit is not None:
            count = min(count, max(0, -(-(limit - start) // hop)))
        if count <= 0:
            return np.zeros((0, size), np.float32), start
        frames = np.lib.stride_tricks.sliding_window_view(self._buffer[offset:], size)[::hop][:count]
        return frames, start + count * hop

    def _process(self, final_limit: int | None = None) -> None:
        frames, self._next_onset = self._frames(self._next_onset, ONSET_FFT, ONSET_HOP, final_limit)
        if len(frames):
            spectrum = np.abs(scipy.fft.rfft(frames * self._window_onset, axis=1))
            log_mel = np.log1p(1000.0 * (spectrum**2 @ self._mel_bank))
            previous = self._previous_mel if self._previous_mel is not None else log_mel[:1]
            flux = np.diff(np.concatenate([previous, log_mel]), axis=0)
            self._onset.append(np.maximum(flux, 0.0).mean(axis=1))
            self._onset_low.append(np.maximum(flux[:, :LOW_BANDS].mean(axis=1), 0.0))
            self._onset_high.append(np.maximum(flux[:, -HIGH_BANDS:], 0.0).mean(axis=1))
            self._previous_mel = log_mel[-1:]
            # The log magnitudes after the frames before these (the first frame's own copies at the
            # very start), in one buffer; the rises computed in place (this runs for every frame).
            history = np.empty((SLOW_FLUX_FRAMES + len(spectrum), self._flux_bins - 1), np.float32)
            current = history[SLOW_FLUX_FRAMES:]
            np.multiply(spectrum[:, 1 : self._flux_bins], np.float32(_FLUX_GAIN), out=current)
            np.log1p(current, out=current)
            if self._previous_log_magnitude is None:
                self._previous_log_magnitude = np.repeat(current[:1], SLOW_FLUX_FRAMES, axis=0)
            history[:SLOW_FLUX_FRAMES] = self._previous_log_magnitude
            rise = np.subtract(current, history[SLOW_FLUX_FRAMES - 1 : -1])
            self._onset_fine.append(np.maximum(rise, 0.0, out=rise).mean(axis=1))
            np.subtract(current, history[:-SLOW_FLUX_FRAMES], out=rise)
            self._onset_slow.append(np.maximum(rise, 0.0, out=rise).mean(axis=1))
            self._previous_log_magnitude = history[-SLOW_FLUX_FRAMES:].copy()
            take = np.arange((-self._mel_phase) % MEL_DECIMATION, len(log_mel), MEL_DECIMATION)
            self._mel.append(log_mel[take])
            self._mel_phase = (self._mel_phase + len(log_mel)) % MEL_DECIMATION
        frames, self._next_chroma = self._frames(self._next_chroma, CHROMA_FFT, CHROMA_HOP, final_limit)
        if len(frames):
            spectrum = np.abs(scipy.fft.rfft(frames * self._window_chroma, axis=1))
            self._pitch.append(spectrum[:, self._pitch_bins].astype(np.float32) @ self._pitch_fold)
            self._bass.append(spectrum[:, self._bass_bins].astype(np.float32) @ self._bass_fold)
            notes = np.concatenate([self._note_carry, spectrum[:, self._note_bins].astype(np.float32) @ self._note_fold * _NOTE_SCALE])
            whole = len(notes) // NOTE_DECIMATION * NOTE_DECIMATION
            if whole:
                averaged = notes[:whole].reshape(-1, NOTE_DECIMATION, NOTE_BINS).mean(axis=1)
                self._notes.append(averaged.astype(np.float16))
            self._note_carry = notes[whole:]
            self._energy.append(np.sqrt(np.mean(frames**2, axis=1)).astype(np.float32))
        keep_from = min(self._next_onset, self._next_chroma) - self._consumed
        if keep_from > 0:
            self._buffer = self._buffer[keep_from:]
            self._consumed += keep_from


# The timbre statistics. Bands stop where a 64 kb/s stereo Opus stops keeping them (measured on
# real soundtracks, bench/similar.py): libopus often codes only up to ~8 kHz there, losing energy
# from ~6 kHz up, and trades the stereo image above ~5 kHz for bits; MP3 128k keeps both.
TIMBRE_WINDOW_SECONDS = 0.0464  # 2048 samples at 44.1 kHz; the same duration at every rate
# One pair of half-overlapping frames every 0.3 s: statistics need no more (0.1 until embedding
# version 4, which pays for them in the CPU budget: on the development soundtracks the blend's
# precision@5 was 0.524, 0.526 and 0.512 at 0.1, 0.2 and 0.3 s, at 0.136, 0.091 and 0.075 s of CPU).
TIMBRE_PAIR_SECONDS = 0.3
TIMBRE_BANDS = 40
TIMBRE_FMIN, TIMBRE_FMAX = 30.0, 6000.0
CEPSTRA = 21
STEREO_EDGES = np.geomspace(62.5, 4500.0, 9)  # 8 bands, each ~0.6 octave
TIMBRE_GATE_RMS = 1e-3  # -60 dBFS: silence between cues says nothing about timbre
STEREO_RANGE_DB = (-40.0, 10.0)  # side/mid: -40 is mono, 0 is as wide as it gets short of out-of-phase
TIMBRE_RANGE_DB = 60.0  # bands further below the frame's loudest count as this far: what lies
# there (a lossy codec's noise, the room between notes) is not the timbre, and the level must not
# decide where a floor cuts
_POWER_FLOOR = 1e-10  # -100 dB


def _power(spectrum: np.ndarray) -> np.ndarray:
    return spectrum.real**2 + spectrum.imag**2  # |x|² without the square root


@dataclass(frozen=True, slots=True)
class TimbreFeatures:
    """Statistics over a track's sounding frames (``frames`` of them)."""

    cepstrum_mean: np.ndarray  # (CEPSTRA,) mean mel cepstrum (c0 is the level)
    cepstrum_std: np.ndarray  # (CEPSTRA,) its spread over time
    cepstrum_change: np.ndarray  # (CEPSTRA,) RMS change between frames 23 ms apart
    stereo: np.ndarray  # (8,) mean side/mid energy per band, dB
    frames: int


class TimbreExtractor:
    """Feed the decoded channels (float32 ``(channels, n)`` at ``rate``) in order, then ``finish``.

    Every ``TIMBRE_PAIR_SECONDS`` it looks at two frames half a window apart: the first gives the
    spectrum and the stereo image, the pair the spectral change. Only sums are kept, so memory
    does not grow with the track. Stereo is the first two channels; mono counts as fully narrow.
    """

    def __init__(self, rate: int) -> None:
        self._size = scipy.fft.next_fast_len(round(TIMBRE_WINDOW_SECONDS * rate))
        self._half = self._size // 2
        self._hop = round(TIMBRE_PAIR_SECONDS * rate)
        window = np.hanning(self._size)
        self._window = window.astype(np.float32)
        frequencies = np.fft.rfftfreq(self._size, 1.0 / rate)
        # Power per bin divided by the window's energy: broadband levels do not depend on the rate.
        self._mel_bank = _mel_filterbank(self._size, TIMBRE_BANDS, TIMBRE_FMIN, TIMBRE_FMAX, rate) / np.float32(
            (window**2).sum()
        )
        band = np.searchsorted(STEREO_EDGES, frequencies, side="right") - 1
        inside = np.nonzero((band >= 0) & (band < STEREO_EDGES.size - 1))[0]
        self._stereo_bank = np.zeros((frequencies.size, STEREO_EDGES.size - 1), np.float32)
        self._stereo_bank[inside, band[inside]] = 1.0
        # Only the bins below TIMBRE_FMAX count: powers are taken of those alone.
        self._bins = int(max(np.nonzero(self._mel_bank.any(axis=1))[0][-1], inside[-1])) + 1
        self._mel_bank, self._stereo_bank = self._mel_bank[: self._bins], self._stereo_bank[: self._bins]
        self._buffer = np.zeros((2, 0), np.float32)
        self._consumed = 0  # samples dropped from the front of the buffer so far
        self._next_pair = 0  # absolute sample index where the next pair starts
        self._frames = 0
        self._sums = np.zeros(3 * CEPSTRA + STEREO_EDGES.size - 1)  # float64 accumulators

    def feed(self, channels: np.ndarray) -> None:
        if channels.shape[-1] == 0:
            return
        stereo = channels[:2] if channels.shape[0] >= 2 else np.repeat(channels[:1], 2, axis=0)
        self._buffer = np.concatenate([self._buffer, stereo.astype(np.float32, copy=False)], axis=1)
        offset = self._next_pair - self._consumed
        room = self._buffer.shape[1] - offset - (self._size + self._half)
        if room >= 0:
            count = room // self._hop + 1
            self._add_pairs(offset, count)
            self._next_pair += count * self._hop
        drop = min(self._next_pair - self._consumed, self._buffer.shape[1])
        self._buffer = self._buffer[:, drop:]
        self._consumed += drop

    def _pairs(self, signal: np.ndarray, count: int) -> np.ndarray:
        """(count, 2, size) frames of ``signal`` (one pair every hop), a view: nothing copied."""
        step = signal.strides[0]
        shape, strides = (count, 2, self._size), (self._hop * step, self._half * step, step)
        return np.lib.stride_tricks.as_strided(signal, shape, strides, writeable=False)

    def _add_pairs(self, offset: int, count: int) -> None:
        left, right = self._buffer[:, offset : offset + self._hop * (count - 1) + self._size + self._half]
        # mid and side of the frames' samples only (a pair spans 1.5 windows of every hop's 4)
        left_pairs, right_pairs = self._pairs(left, count), self._pairs(right, count)
        mid = 0.5 * (left_pairs + right_pairs)
        sounding = np.sqrt(np.mean(mid**2, axis=2)).min(axis=1) >= TIMBRE_GATE_RMS
        if not sounding.any():
            return
        mid = mid[sounding]
        side = 0.5 * (left_pairs[sounding, 0] - right_pairs[sounding, 0])
        mid_power = _power(scipy.fft.rfft(mid * self._window, axis=2)[..., : self._bins])
        side_power = _power(scipy.fft.rfft(side * self._window, axis=1)[..., : self._bins])
        log_mel = 10.0 * np.log10(mid_power @ self._mel_bank + _POWER_FLOOR)
        log_mel = np.maximum(log_mel, log_mel.max(axis=2, keepdims=True) - TIMBRE_RANGE_DB)
        cepstrum = scipy.fft.dct(log_mel, type=2, norm="ortho", axis=2)[..., :CEPSTRA].astype(np.float64)
        stereo = 10.0 * np.log10(
            (side_power @ self._stereo_bank + _POWER_FLOOR) / (mid_power[:, 0] @ self._stereo_bank + _POWER_FLOOR)
        )
        stereo = np.clip(stereo, *STEREO_RANGE_DB).astype(np.float64)
        first = cepstrum[:, 0]
        self._sums += np.concatenate(
            [
                first.sum(axis=0),
                (first**2).sum(axis=0),
                ((cepstrum[:, 1] - first) ** 2).sum(axis=0),
                stereo.sum(axis=0),
            ]
        )
        self._frames += len(first)

    def finish(self) -> TimbreFeatures:
        total, squares, change, stereo = np.split(self._sums / max(self._frames, 1), [CEPSTRA, 2 * CEPSTRA, 3 * CEPSTRA])
        return TimbreFeatures(
            cepstrum_mean=total,
            cepstrum_std=np.sqrt(np.maximum(squares - total**2, 0.0)),
            cepstrum_change=np.sqrt(change),
            stereo=stereo,
            frames=self._frames,
        )
