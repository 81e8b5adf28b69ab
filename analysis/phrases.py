"""Phrases on the bar grid: where the arrangement changes, and what each part is.

Dance music and most songs are built in phrases of 8, 16 or 32 bars, and a part changes where
a phrase starts: the drums drop out, the bass comes in, the harmony or the sound turns. So the
analysis works bar by bar on the grid the exports write (the beat grid counted from bar 1's
downbeat): each bar gets its sound (the mean log-mel bands), its harmony (the mean chroma), its
levels (loudness, low end, top; ``energy.py``) and its attacks (the mean onset strength). The
phrases are the piecewise-constant fit of those bars that costs least, found at once over every
bar line by dynamic programming: a phrase pays the spread of its bars about its own mean (a
change inside it costs), ``PENALTY`` for existing (a small change is not worth a new phrase), and
more for an unusual length (8, 16 and 32 bars nothing; 24, 48 and 64 a little; other multiples
of 4 more; anything else most). So the cut falls on the bar where the change is *and* on the
phrase grid, never between two bars; a short part between two others (an 8-bar build) is one
phrase, since its bars are alike even when the bars around it differ; and a gradual rise (a
build's snare roll doubling) is not cut unless it changes the bars as much as a new part does.

Labels follow the energy of the phrases against the track's own range: the first phrase is the
intro and the last the outro; the fullest phrases, with their low end, are drops (a song's
chorus); one that leads into a drop while rising is a build; one without the low end, or low
after a fuller one, is a breakdown; the rest are verses. Each phrase carries a confidence: how
clearly its start stands out (what the fit gains by cutting there, against ``PENALTY``) and how
clearly its label fits.

Measured on bench/phrases.py's development set (docs/notes-2026-12/issue-26.md).
"""

from __future__ import annotations

import numpy as np

from cratesense.analysis.constants import GRID_SLACK
from cratesense.analysis.decode import ANALYSIS_RATE
from cratesense.analysis.energy import FRAME_SECONDS, EnergyCurve, level_of, measures, raw_score
from cratesense.analysis.features import CHROMA_FFT, CHROMA_HOP, FrameFeatures
from cratesense.analysis.model import Phrase

LABELS = ("intro", "verse", "build", "drop", "breakdown", "outro")
MAX_PHRASE_BARS = 128
MIN_BARS = 8  # a piece shorter than this has no phrases to speak of
# Each group of a bar's features in units where 1.0 is a clear change (the sound moving by ~3 dB
# across the bands, the harmony by a cosine distance of 0.25, a level by 6 dB, the attacks by
# 0.5), and how much it counts.
_SCALES = {"sound": 0.7, "harmony": 0.25, "levels": 6.0, "onsets": 0.5}
_WEIGHTS = {"sound": 1.0, "harmony": 0.6, "levels": 1.0, "onsets": 0.8}
NOISE_FLOOR = 0.8  # the least bar-to-bar wobble a track is taken to have (scaled units)
PENALTY = 8.0  # what a phrase costs, in squared units of the track's wobble: a cut must gain this much
LENGTH_WEIGHT = 12.0  # what an unusual length costs, in the same units (times _length_cost)
BASS_DROP_DB = 8.0  # a phrase whose low end is this far below the track's fullest has dropped its bass
DROP_GAP = 0.06  # a drop is within this much of the track's fullest phrase (raw energy)
RISING = 0.05  # a build's second half is at least this much fuller than its first (raw energy)
SILENT_DB = 30.0  # a bar this far below the track's loud bars is silence before the music
_SILENT = {"loudness": -60.0, "low": -60.0, "bright": -60.0, "onsets": 0.0}


def bar_beats(beats_per_bar: int | None) -> int:
    """Beats in one bar of the exported grid: 3 for a triple meter, else 4 (DJ programs count
    4/4; a bar of two is half of one)."""
    return 3 if beats_per_bar == 3 else 4


def bar_grid(bpm: float | None, beat_offset: float | None, downbeat_offset: float | None,
             beats_per_bar: int | None, duration: float | None) -> np.ndarray | None:
    """The bar lines (seconds) of the beat grid the exports write: beats every 60/bpm s from
    ``beat_offset``, bars counted from the beat nearest ``downbeat_offset``, every bar line from
    the first at or after 0 s (bars before bar 1 too: a drum intro the downbeat stage passed
    over is still in bars; one a hair before 0 s, as a grid estimated from the music can put it,
    is the one at 0 s) to the last one before the end. None without a tempo, a first beat,
    a downbeat or a duration: no grid, no phrases, no cues."""
    if not bpm or bpm <= 0 or beat_offset is None or downbeat_offset is None or not duration:
        return None
    period = 60.0 / bpm
    bar = bar_beats(beats_per_bar) * period
    downbeat = beat_offset + round((downbeat_offset - beat_offset) / period) * period
    first = downbeat - bar * np.floor((downbeat + GRID_SLACK) / bar)  # the earliest bar line from 0 s on
    count = int(np.floor((duration - first) / bar - 1e-9)) + 1 if first < duration else 0
    return np.maximum(first + bar * np.arange(max(count, 0)), 0.0)


def find_phrases(features: FrameFeatures, chroma_frames: np.ndarray, curve: EnergyCurve, lines: np.ndarray | None,
                 duration: float) -> tuple[Phrase, ...] | None:
    """The phrases of a track whose bar lines are ``lines`` (``bar_grid``), or None when there is
    no grid or too few bars."""
    if lines is None or lines.size == 0:
        return None
    levels = _bar_levels(curve, lines, np.append(lines[1:], duration))
    sounding = np.nonzero(levels[:, 0] > np.percentile(levels[:, 0], 90) - SILENT_DB)[0]
    if sounding.size == 0:
        return None
    lines, levels = lines[sounding[0]:], levels[sounding[0]:]  # a leading silence holds no phrase
    if lines.size < MIN_BARS:
        return None
    ends = np.append(lines[1:], duration)
    bar = float(np.median(np.diff(lines)))
    # A last bar cut short (the ring-out after the music) is the last phrase's, never a change.
    whole = lines.size - (1 if ends[-1] - lines[-1] < 0.99 * bar else 0)
    values = _scaled(_bar_features(features, chroma_frames, levels, lines, ends))
    # In units of the track's own bar-to-bar wobble (a busy mix changes more from bar to bar than
    # a loop, and the same change means less in it); a loop that barely moves counts as if it
    # moved NOISE_FLOOR, so a filter sweep over a static loop is not a dozen phrases.
    steps = np.sqrt(np.sum(np.diff(values[:whole], axis=0) ** 2, axis=1))
    values = values / max(float(np.median(steps)) / np.sqrt(2), NOISE_FLOOR) if steps.size else values
    cuts = _segment(values[:whole])
    starts, stops = [0, *cuts], [*cuts, lines.size]
    spans = [(float(lines[first]), float(ends[last - 1])) for first, last in zip(starts, stops)]
    found = [measures(curve, start, end) or _SILENT for start, end in spans]
    raws = np.array([raw_score(values) for values in found])
    rising = [_rising(curve, start, end) for start, end in spans]
    labels, fits = _labels(raws, np.array([values["low"] for values in found]), rising)
    phrases = []
    for index, (first, last) in enumerate(zip(starts, stops)):
        edge = 1.0 if index == 0 else _strength(values[:whole], starts[index - 1], first, min(last, whole))
        phrases.append(Phrase(start=round(float(lines[first]), 3), end=round(float(ends[last - 1]), 3),
                              bar=first + 1, bars=last - first, label=labels[index], energy=level_of(raws[index]),
                              confidence=round(min(edge, fits[index]), 2)))
    return tuple(phrases)


def _bar_levels(curve: EnergyCurve, lines: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """Per bar: loudness, low end and top (dB) and the mean attack strength (``energy.py``'s
    measures, for every bar at once)."""
    first = np.clip(np.floor(lines / FRAME_SECONDS).astype(int), 0, curve.frames)
    last = np.clip(np.floor(ends / FRAME_SECONDS).astype(int), 0, curve.frames)
    last = np.maximum(last, np.minimum(first + 1, curve.frames))
    count = np.maximum(last - first, 1)

    def level(cumulative: np.ndarray) -> np.ndarray:
        return 10.0 * np.log10(np.maximum((cumulative[last] - cumulative[first]) / count, 1e-6))

    return np.column_stack([level(curve.total), level(curve.low), level(curve.high),
                            (curve.onsets[last] - curve.onsets[first]) / count])


def _bar_features(features: FrameFeatures, chroma_frames: np.ndarray, levels: np.ndarray, lines: np.ndarray,
                  ends: np.ndarray) -> dict[str, np.ndarray]:
    """Per bar: the mean log-mel bands, the mean chroma (unit length), the three levels (dB) and
    the mean attack strength."""
    mel = features.mel.astype(np.float64)
    sound = _means(mel, (np.arange(mel.shape[0]) + 0.5) * FRAME_SECONDS, lines, ends)
    chroma_times = (np.arange(chroma_frames.shape[0]) * CHROMA_HOP + CHROMA_FFT / 2) / ANALYSIS_RATE
    harmony = _means(np.asarray(chroma_frames, np.float64), chroma_times, lines, ends)
    harmony /= np.maximum(np.linalg.norm(harmony, axis=1, keepdims=True), 1e-9)
    return {"sound": sound, "harmony": harmony, "levels": levels[:, :3], "onsets": levels[:, 3:]}


def _means(frames: np.ndarray, times: np.ndarray, lines: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """The mean of the frames whose centres fall in each bar (the nearest frame when none do)."""
    if frames.shape[0] == 0:
        return np.zeros((lines.size, frames.shape[1] if frames.ndim == 2 else 1))
    sums = np.vstack([np.zeros((1, frames.shape[1])), np.cumsum(frames, axis=0)])
    first = np.searchsorted(times, lines)
    last = np.maximum(np.searchsorted(times, ends), np.minimum(first + 1, frames.shape[0]))
    first = np.minimum(first, last - 1)
    return (sums[last] - sums[first]) / (last - first)[:, None]


def _scaled(bars: dict[str, np.ndarray]) -> np.ndarray:
    """The bars' features as one matrix, each group divided by its scale and weighted so that a
    bar's squared distance from a mean is the weighted mean of its groups' squared changes."""
    return np.hstack([values * np.sqrt(_WEIGHTS[name] / values.shape[1]) / _SCALES[name]
                      for name, values in bars.items()])


def _spread(values: np.ndarray, start: int, end: int) -> float:
    """How far the bars [start, end) spread about their mean (sum of squared distances)."""
    part = values[start:end]
    return float(np.sum((part - part.mean(axis=0)) ** 2)) if end > start else 0.0


def _strength(values: np.ndarray, before: int, cut: int, after: int) -> float:
    """0-1: how clearly a cut stands out: what the fit gains by it, against twice ``PENALTY``."""
    gain = _spread(values, before, after) - _spread(values, before, cut) - _spread(values, cut, after)
    return float(np.clip(gain / (2 * PENALTY), 0.0, 1.0))


def _length_cost(length: np.ndarray, last: bool) -> np.ndarray:
    """What a phrase of ``length`` bars pays (times ``LENGTH_WEIGHT``): 8, 16 and 32 nothing;
    24, 48 and 64 a little; other multiples of 4 more (4 too: a part rarely changes after only
    4 bars); anything else most. The last phrase is judged a bar either way."""
    if last:  # the audio may end a bar early or late (a ring-out, a last hit): the kindest of three
        return np.minimum.reduce([_length_cost(length + shift, False) for shift in (-1, 0, 1)])
    cost = np.full(length.shape, 2.5)
    cost[length % 4 == 0] = 1.0
    cost[np.isin(length, (24, 48, 64))] = 0.5
    cost[np.isin(length, (8, 16, 32))] = 0.0
    return cost


def _segment(values: np.ndarray) -> list[int]:
    """The bar lines (indices) that start a new phrase: the piecewise-constant fit of the bars'
    ``values`` that costs least (dynamic programming over every bar line, with running sums: a
    phrase's spread costs O(1)). No phrase of one bar at the start, none under 4 at the end."""
    count = values.shape[0]
    sums = np.vstack([np.zeros((1, values.shape[1])), np.cumsum(values, axis=0)])
    squares = np.concatenate([[0.0], np.cumsum(np.sum(values**2, axis=1))])
    allowed = np.zeros(count + 1, bool)
    allowed[0] = True
    allowed[2 : max(2, count - 3)] = True
    best = np.full(count + 1, np.inf)
    best[0] = 0.0
    choice = np.zeros(count + 1, int)
    lengths = np.arange(MAX_PHRASE_BARS + 2)
    costs = {last: PENALTY + LENGTH_WEIGHT * _length_cost(lengths, last) for last in (False, True)}  # by length
    for end in range(1, count + 1):
        starts = np.arange(max(0, end - MAX_PHRASE_BARS), end)
        starts = starts[allowed[starts]]
        length = end - starts
        spread = squares[end] - squares[starts] - np.sum((sums[end] - sums[starts]) ** 2, axis=1) / length
        scores = best[starts] + spread + costs[end == count][length]
        pick = int(np.argmin(scores))
        best[end], choice[end] = scores[pick], starts[pick]
    cuts = []
    end = count
    while end > 0:
        end = int(choice[end])
        if end > 0:
            cuts.append(end)
    return sorted(cuts)


def _rising(curve: EnergyCurve, start: float, end: float) -> float:
    """How much fuller the second half of a stretch is than its first (raw energy units)."""
    middle = (start + end) / 2
    first, second = measures(curve, start, middle), measures(curve, middle, end)
    if not first or not second:
        return 0.0
    return raw_score(second) - raw_score(first)


def _labels(raws: np.ndarray, lows: np.ndarray, rising: list[float]) -> tuple[list[str], list[float]]:
    """A label for each phrase, and how clearly it fits (0-1), from the phrases' energies (raw
    scores) and low ends (dB) relative to the track's own range: the first phrase is the intro,
    the last the outro; the fullest (within ``DROP_GAP``), with the low end in, are drops; one that leads into a drop
    from below while rising (or without its low end) is a build; one without the low end after
    a fuller one is a breakdown; the rest are verses."""
    count = raws.size
    if count == 1:
        return ["verse"], [0.5]
    low, high = float(raws.min()), float(raws.max())
    spread = high - low
    level = (raws - low) / spread if spread > 0.05 else np.full(count, 0.5)
    bass_out = lows < lows.max() - BASS_DROP_DB
    drop = (raws >= high - DROP_GAP) & ~bass_out if spread > DROP_GAP else np.zeros(count, bool)
    labels, fits = [], []
    for index in range(count):
        here = float(level[index])
        before = float(level[:index].max(initial=0.0))
        if index == 0:
            labels.append("intro")
            fits.append(1.0 - 0.7 * here)
        elif index == count - 1 and count >= 3:
            labels.append("outro")
            fits.append(1.0 - 0.7 * here)
        elif drop[index]:
            labels.append("drop")
            fits.append(0.5 + 0.5 * min(1.0, spread / (4 * DROP_GAP)))
        elif index + 1 < count and drop[index + 1] and rising[index] > RISING:
            labels.append("build")
            fits.append(0.6 + min(rising[index], 0.4))
        elif bass_out[index] or (here <= 0.4 and before >= here + 0.3):
            labels.append("breakdown")
            fits.append(0.5 + 0.5 * min(1.0, (before - here) / 0.6))
        else:
            labels.append("verse")
            fits.append(0.5)
    return labels, [round(float(np.clip(fit, 0.3, 1.0)), 2) for fit in fits]
