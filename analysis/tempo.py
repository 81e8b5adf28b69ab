"""Tempo (BPM): the metrical level a listener taps, from the onset envelope's autocorrelation.

Every candidate beat period (40-260 BPM) is scored by how the autocorrelation looks around it,
as a listener's sense of the beat would weigh it: the beat itself recurs, whole bars of two,
three or four beats recur, the beat divides into two or three, and the periods a wrong reading
would rest on (two thirds, three halves, three quarters of it) recur less; with a broad
preference for tempi near 120 BPM. The weights were fitted on bench/accuracy.py's development
set (every subset: dance music, folk melodies, dance tunes in 2/4, 6/8 and 9/8, quartets and
piano music, pop, waltz and 6/8 arrangements) and checked on pieces never fitted on. The
listener's tempo is then brought into the DJ's range (doubled or halved), so a steady piece
always has a tempo, and refined to a hundredth of a BPM.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from cratesense.analysis.constants import DEFAULT_BPM_RANGE

_MIN_SECONDS = 6.0
_MIN_CONFIDENCE = 0.05
_CANDIDATE_RANGE = (40.0, 260.0)  # where a listener's beat can be, before the DJ's range applies
_CANDIDATE_STEP = 0.004  # log step of the candidate grid (0.4 %)
_PRIOR_CENTER_BPM = 120.0  # where listeners' preferred tempo clusters (a broad log-normal prior)
# (multiple of the candidate period, weight): the metrical evidence and its weights.
_EVIDENCE = (
    (1.0, 3.0),  # the beat recurs
    (2.0, 1.9),  # two-beat groups / half bars
    (3.0, 0.5),  # three-beat bars
    (4.0, 2.6),  # four-beat bars
    (1 / 2, 0.6),  # beats divide in two
    (1 / 3, 0.9),  # beats divide in three
    (1 / 4, 0.1),
    (2 / 3, -0.2),  # what a reading one metrical family off rests on
    (3 / 2, -0.3),
    (4 / 3, -0.5),
    (3 / 4, -0.6),
    (6.0, -1.5),  # slower than a bar: the candidate is too slow
    (8.0, -1.6),
)
_PRIOR_WEIGHT = 2.0
_SOUNDED = 0.3  # a beat is a pulse that sounds: its own periodicity at least this share of the best
# Dance music puts its beat in the kick: the low band's own periodicity at a candidate beat, and
# where a swung hat or a 3-against-4 riff suggests a beat two thirds as fast, the kick does not.
_LOW_EVIDENCE = ((1.0, 0.0), (2 / 3, 0.0), (3 / 2, 0.0))
_KICK_PULSE = 0.7  # the kick's periodicity at twice a slow listened tempo above which it is counted there


@dataclass(frozen=True, slots=True)
class Tempo:
    bpm: float  # one decimal
    confidence: float  # 0..1: how periodic the onsets are at this tempo
    beat_offset: float  # seconds to the first beat


def estimate_tempo(
    onset: np.ndarray | Sequence[np.ndarray],
    frame_rate: float,
    bpm_range: tuple[float, float] = DEFAULT_BPM_RANGE,
    phase_onset: np.ndarray | None = None,
    low_onset: np.ndarray | None = None,
    high_onset: np.ndarray | None = None,
) -> Tempo | None:
    """The tempo a DJ would count, or None when the audio has no steady beat (silence, drones).

    ``onset`` is one onset envelope or several of the same frames (a sharp and a slow one: their
    autocorrelations are averaged, so both crisp and soft attacks count). ``phase_onset``, when
    given, helps place the beat grid: an envelope that favours the low end puts the beat on the
    kick, not on off-beat hi-hats. ``low_onset``, when given, is the low band's onset envelope
    (kick and bass): where it pulses is where dance music puts its beat; ``high_onset`` the high
    band's (hats), whose fastest steady pulse is the beat's subdivision."""
    envelopes = [onset] if isinstance(onset, np.ndarray) else list(onset)
    if envelopes[0].size < _MIN_SECONDS * frame_rate or not np.any(envelopes[0] > 0):
        return None
    normalized = [e for e in (_normalize(x, frame_rate) for x in envelopes if x.size == envelopes[0].size) if e is not None]
    if not normalized:
        return None
    acf = np.mean([autocorrelation(e) for e in normalized], axis=0)
    low_acf, high_acf = (_band_acf(band, envelopes[0].size, frame_rate) for band in (low_onset, high_onset))
    listened = _refine(acf, frame_rate, listener_tempo(acf, frame_rate, low_acf))
    bands = None
    if low_onset is not None and high_onset is not None and low_onset.size == high_onset.size == envelopes[0].size:
        bands = (low_onset, high_onset)
    counted = _counted(acf, frame_rate, listened, bpm_range, low_acf, high_acf, bands)
    bpm = _refine(acf, frame_rate, into_range(counted, bpm_range))
    period = 60.0 * frame_rate / bpm
    # How periodic the onsets are at the tempo listened to (a DJ range that doubles a slow piece
    # does not make it less steady).
    confidence = float(np.clip(_interpolate(acf, 60.0 * frame_rate / listened), 0.0, 1.0))
    if confidence < _MIN_CONFIDENCE:
        return None
    placing = normalized[0]
    if phase_onset is not None and phase_onset.size == envelopes[0].size:
        other = _normalize(phase_onset, frame_rate)
        placing = placing if other is None else placing + other
    return Tempo(round(bpm, 1), round(confidence, 3), round(_beat_offset(placing, period) / frame_rate, 3))


def _band_acf(onset: np.ndarray | None, size: int, frame_rate: float) -> np.ndarray | None:
    normalized = _normalize(onset, frame_rate) if onset is not None and onset.size == size else None
    return autocorrelation(normalized) if normalized is not None else None


def listener_tempo(acf: np.ndarray, frame_rate: float, low_acf: np.ndarray | None = None) -> float:
    """The candidate tempo whose metrical evidence (see ``_EVIDENCE``, and ``_LOW_EVIDENCE`` for
    the low band's autocorrelation when given) scores highest."""
    grid = np.exp(np.arange(np.log(_CANDIDATE_RANGE[0]), np.log(_CANDIDATE_RANGE[1]), _CANDIDATE_STEP))
    lags = 60.0 * frame_rate / grid
    score = _PRIOR_WEIGHT * -np.log2(grid / _PRIOR_CENTER_BPM) ** 2
    for multiple, weight in _EVIDENCE:
        score = score + weight * _acf_at(acf, lags * multiple)
    if low_acf is not None:
        for multiple, weight in _LOW_EVIDENCE:
            if weight:
                score = score + weight * _acf_at(low_acf, lags * multiple)
    own = _acf_at(acf, lags)
    score = np.where(own >= _SOUNDED * own.max(), score, -np.inf)
    return float(grid[int(np.argmax(score))])


_TATUM_RANGE = (150.0, 450.0)  # pulses per minute where eighth and sixteenth layers live
_TATUM_SHARE = 0.6  # a faster peak this strong (relative to the strongest) is the tatum
_MIN_TATUM_PERIODICITY = 0.15
_SURE_ZONE = (90.0, 160.0)  # a listened tempo in here is counted as it is
_USE_HIGH_TATUM = True


def _counted(
    acf: np.ndarray,
    frame_rate: float,
    listened: float,
    bpm_range: tuple[float, float],
    low_acf: np.ndarray | None = None,
    high_acf: np.ndarray | None = None,
    backbeat: tuple[np.ndarray, np.ndarray] | None = None,
) -> float:
    """The octave a DJ counts: a slow or fast listened tempo (outside ``_SURE_ZONE``) whose
    double or half is the fastest steady pulse (the hats' eighths) halved, and in the range, is
    counted at that (drum & bass at 174, not 87; hip-hop at 90, not 180); a slow one whose
    double the kick pulses at is counted there (trance at 140, not 70)."""
    if low_acf is not None and listened < _SURE_ZONE[0] and listened * 2 <= bpm_range[1]:
        lag = 60.0 * frame_rate / (2 * listened)
        if _interpolate(low_acf, lag) >= _KICK_PULSE:
            return listened * 2
        if backbeat is not None and _offbeat_share(*backbeat, lag * 2) >= _OFFBEAT_BACKBEAT:
            return listened * 2
    tatum = _tatum(acf, frame_rate)
    if high_acf is not None and _USE_HIGH_TATUM:
        tatum = _tatum(high_acf, frame_rate) or tatum
    if tatum is None or _SURE_ZONE[0] <= listened <= _SURE_ZONE[1]:
        return listened
    beat = tatum / 2.0
    low, high = bpm_range
    for octave in (2.0, 0.5):
        if abs(np.log(beat / (listened * octave))) < 0.04 and low <= beat <= high:
            return beat
    return listened


_OFFBEAT_BACKBEAT = 2.0  # how much more the high band strikes on the off-beats than on the beats: then the beat is twice as fast


def _offbeat_share(low: np.ndarray, high: np.ndarray, period: float) -> float:
    """How much more the high band (snare, clap) strikes half a beat after the kick's beat than
    on it, folded over the piece at ``period`` frames: a slow reading of drum & bass hears its
    snares on the off-beats, where a backbeat never falls at the tempo a DJ counts."""
    bins = 16
    count = int(low.size / period)
    if count < 8:
        return 0.0
    positions = (np.arange(count * int(period)) % period) / period * bins
    low_fold = np.bincount(positions.astype(int) % bins, low[: positions.size], bins)
    high_fold = np.bincount(positions.astype(int) % bins, high[: positions.size], bins)
    phase = int(np.argmax(low_fold))
    near = lambda at: max(high_fold[(at + d) % bins] for d in (-1, 0, 1))  # noqa: E731
    return float(near(phase + bins // 2) / max(near(phase), 1e-9))


def _tatum(acf: np.ndarray, frame_rate: float) -> float | None:
    """The fastest strong pulse (per minute) within ``_TATUM_RANGE``, or None."""
    fastest, slowest = 60.0 * frame_rate / _TATUM_RANGE[1], 60.0 * frame_rate / _TATUM_RANGE[0]
    lags = np.arange(max(2, int(fastest)), min(acf.size - 1, int(slowest) + 1))
    if lags.size < 3:
        return None
    values = acf[lags]
    peaks = [i for i in range(1, values.size - 1) if values[i] >= values[i - 1] and values[i] > values[i + 1]]
    if not peaks or max(values[i] for i in peaks) < _MIN_TATUM_PERIODICITY:
        return None
    strongest = max(values[i] for i in peaks)
    first = next(i for i in peaks if values[i] >= _TATUM_SHARE * strongest)
    return 60.0 * frame_rate / _peak_lag(acf, int(lags[first]))


def _peak_lag(acf: np.ndarray, index: int) -> float:
    """Parabolic interpolation of an autocorrelation peak."""
    left, centre, right = acf[index - 1], acf[index], acf[index + 1]
    denominator = left - 2 * centre + right
    return index + (0.5 * (left - right) / denominator if denominator < 0 else 0.0)


def into_range(bpm: float, bpm_range: tuple[float, float]) -> float:
    """Double or halve into the DJ's range; a range narrower than an octave keeps the nearest."""
    low, high = bpm_range
    while bpm > high and bpm / 2 >= low * 0.999:
        bpm /= 2.0
    while bpm < low and bpm * 2 <= high * 1.001:
        bpm *= 2.0
    return float(np.clip(bpm, low, high))


def _acf_at(acf: np.ndarray, lags: np.ndarray) -> np.ndarray:
    """The autocorrelation at fractional lags, allowing a frame of slack either way (onsets are
    quantized to frames); 0 beyond the signal."""
    index = np.floor(lags).astype(int)
    inside = (index >= 1) & (index + 2 < acf.size)
    index = np.clip(index, 1, max(1, acf.size - 3))
    fraction = lags - index
    linear = acf[index] * (1 - fraction) + acf[index + 1] * fraction
    window = np.maximum.reduce([acf[index - 1], acf[index], acf[index + 1], acf[index + 2]])
    return np.where(inside, np.maximum(linear, 0.98 * window), 0.0)


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
    return float(_acf_at(acf, np.array([lag]))[0])


def _refine(acf: np.ndarray, frame_rate: float, bpm: float) -> float:
    """Sharpen to 0.01 BPM using many beat multiples: a long lag pins the period precisely."""
    beats = max(4, min(64, int(acf.size / (60.0 * frame_rate / bpm) * 0.5)))
    fine = np.arange(bpm * 0.97, bpm * 1.03, 0.01)
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
