"""Energy 1-10: how hard a track (or one phrase of it) pushes a dance floor, from the streamed
features alone (no second decode, nothing from the native-rate view: an upgrade that keeps the
loudness and embedding computes the same energy).

Four measures, each over a stretch of the mel frames (30 Hz - 5 kHz of the analysis stream):

* **loudness**: the level of all bands, dB;
* **low end**: the level of the bass and kick bands (30-234 Hz), dB;
* **brightness**: the level of the top bands (1.8-5 kHz: hats, cymbals, the edge of a lead), dB;
* **onset density**: the mean fine onset strength (how many and how hard the attacks are).

Each is a level, never a share of the whole: muting the drums or the bass can only lower every
one of them, and playing more parts, more notes or louder can only raise them, so a
stretch's energy is monotone in what it holds. Each measure is taken relative to a reference library
of real recordings (Debian's game soundtracks: orchestral, ambient, electronic, techno; half of
them fit the constants, the other half checks the spread: bench/phrases.py --fit-energy), and
the weighted sum is mapped onto 1-10 in equal steps, so a broad library uses the whole scale:

  1-2   near silence, a solo instrument or an ambient pad at a low level, no beat
  3-4   gentle: soft acoustic or orchestral passages, sparse percussion, a quiet intro
  5-6   a steady groove at a moderate level: a verse, a deep-house groove, a full orchestra
  7-8   driving: full drums and bass, loud and bright: peak-hour house, a rock chorus
  9-10  everything at once: loud, dense attacks, heavy low end and bright top: a big-room drop
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cratesense.analysis.decode import ANALYSIS_RATE
from cratesense.analysis.features import CHROMA_HOP, MEL_BANDS, MEL_DECIMATION, FrameFeatures, _mel

FRAME_SECONDS = CHROMA_HOP / ANALYSIS_RATE  # one mel frame: 1024 samples, ~93 ms


def _band_centres() -> np.ndarray:
    edges = np.linspace(_mel(30.0), _mel(5000.0), MEL_BANDS + 2)
    return 700.0 * (10 ** (edges[1:-1] / 2595.0) - 1.0)


_CENTRES = _band_centres()
LOW_BANDS = np.nonzero(_CENTRES <= 200.0)[0]  # 30-234 Hz: kick and bass
HIGH_BANDS = np.nonzero(_CENTRES >= 2000.0)[0]  # 1.8-5 kHz
_FLOOR = 1e-6  # power floor (about -60 dB below a quiet band): silence reads as this

# Each measure relative to the reference library's median, in units of its spread there (10th to
# 90th percentile of 8-second stretches: bench/phrases.py --fit-energy), and how much it counts:
# the raw score is sum(weight * (measure - median) / spread). The weights are all positive,
# which is what makes energy monotone in what a stretch holds.
MEDIANS = {"loudness": 24.2, "low": 22.1, "bright": 2.4, "onsets": 0.27}
SPREADS = {"loudness": 11.7, "low": 14.8, "bright": 19.2, "onsets": 0.13}
WEIGHTS = {"loudness": 0.35, "low": 0.25, "bright": 0.15, "onsets": 0.25}
# Raw scores at the boundaries between levels 1|2, 2|3, ... 9|10: equal steps from the 10th to
# the 90th percentile of the tracks of the reference library's fitting half (so each level is
# the same step of energy, and a broad library spreads over all ten).
BREAKPOINTS = (-0.231, -0.155, -0.079, -0.004, 0.072, 0.148, 0.224, 0.299, 0.375)


@dataclass(frozen=True, slots=True)
class EnergyCurve:
    """Running sums of the four measures' powers over the mel frames, so that any stretch's
    energy costs O(1) (phrases, bars and the whole track are read from the same sums)."""

    total: np.ndarray  # cumulative power of all bands, one more entry than frames
    low: np.ndarray
    high: np.ndarray
    onsets: np.ndarray  # cumulative onset strength per mel frame

    @property
    def frames(self) -> int:
        return self.total.size - 1


def energy_curve(features: FrameFeatures) -> EnergyCurve:
    mel = features.mel
    power = np.expm1(mel.astype(np.float64)) / 1000.0  # the features keep log1p(1000 * power)
    frames = mel.shape[0]
    onset = features.onset_fine
    usable = min(frames, onset.size // MEL_DECIMATION)
    per_frame = np.zeros(frames)
    if usable:
        per_frame[:usable] = onset[: usable * MEL_DECIMATION].reshape(usable, MEL_DECIMATION).mean(axis=1)

    def running(values: np.ndarray) -> np.ndarray:
        return np.concatenate([[0.0], np.cumsum(values)])

    return EnergyCurve(
        total=running(power.sum(axis=1)) if frames else np.zeros(1),
        low=running(power[:, LOW_BANDS].sum(axis=1)) if frames else np.zeros(1),
        high=running(power[:, HIGH_BANDS].sum(axis=1)) if frames else np.zeros(1),
        onsets=running(per_frame),
    )


def frame_index(seconds: float | np.ndarray) -> np.ndarray:
    """The mel frame that holds ``seconds`` (a frame covers [i, i + 1) * FRAME_SECONDS)."""
    return np.floor(np.asarray(seconds) / FRAME_SECONDS).astype(int)


def measures(curve: EnergyCurve, start: float, end: float) -> dict[str, float] | None:
    """The four measures over [start, end) seconds, or None for a stretch without frames."""
    first, last = np.clip(frame_index(np.array([start, end])), 0, curve.frames)
    if last <= first:
        return None
    count = last - first

    def level(cumulative: np.ndarray) -> float:
        return float(10.0 * np.log10(max((cumulative[last] - cumulative[first]) / count, _FLOOR)))

    return {"loudness": level(curve.total), "low": level(curve.low), "bright": level(curve.high),
            "onsets": float((curve.onsets[last] - curve.onsets[first]) / count)}


def raw_score(values: dict[str, float]) -> float:
    return sum(WEIGHTS[name] * (values[name] - MEDIANS[name]) / SPREADS[name] for name in WEIGHTS)


def level_of(raw: float) -> int:
    """The 1-10 level of a raw score."""
    return 1 + int(np.searchsorted(BREAKPOINTS, raw, side="right"))


def stretch_energy(curve: EnergyCurve, start: float, end: float) -> int | None:
    found = measures(curve, start, end)
    return level_of(raw_score(found)) if found else None


TRACK_SECONDS = 8.0  # a track's energy is that of its fuller stretches of this length ...
TRACK_PERCENTILE = 70  # ... the level that 30 % of them reach (a quiet intro does not pull it down)


def track_raw(curve: EnergyCurve, duration: float) -> float | None:
    """The raw score of a whole track: the 70th percentile of its 8-second stretches' (the body
    of the track, as a DJ hears it, not its intro or its fade)."""
    if curve.frames == 0:
        return None
    span = max(1, int(round(TRACK_SECONDS / FRAME_SECONDS)))
    if curve.frames <= span:
        found = measures(curve, 0.0, duration)
        return raw_score(found) if found else None
    starts = np.arange(0, curve.frames - span + 1, max(1, span // 2))
    ends = starts + span

    def level(cumulative: np.ndarray) -> np.ndarray:
        return 10.0 * np.log10(np.maximum((cumulative[ends] - cumulative[starts]) / span, _FLOOR))

    values = {"loudness": level(curve.total), "low": level(curve.low), "bright": level(curve.high),
              "onsets": (curve.onsets[ends] - curve.onsets[starts]) / span}
    scores = sum(WEIGHTS[name] * (values[name] - MEDIANS[name]) / SPREADS[name] for name in WEIGHTS)
    return float(np.percentile(scores, TRACK_PERCENTILE))


def track_energy(curve: EnergyCurve, duration: float) -> int | None:
    raw = track_raw(curve, duration)
    return None if raw is None else level_of(raw)
