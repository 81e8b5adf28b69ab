"""The taste profile: what a library sounds like as a whole, never which tracks it holds.

``ProfileTotals`` keeps running sums (histogram counts, the embedding sum) that a track adds to
when it appears in the library and takes back when it leaves, so a change costs one track's
worth of work, not a pass over the whole library. ``profile()`` turns the sums into what the
wire contract allows: normalized histograms, an embedding centroid and a track count. Pure: the
journal decides when a track comes or goes and stores the totals.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import NamedTuple

# the wire's bins, shared with the catalog that compares profiles (owned in analysis/constants.py)
from cratesense.analysis.constants import KEY_BINS, LOUDNESS_BINS, LOUDNESS_RANGE, STAGE_VERSIONS, TEMPO_BINS, TEMPO_RANGE

TEMPO_LOW, TEMPO_SPAN = TEMPO_RANGE[0], TEMPO_RANGE[1] - TEMPO_RANGE[0]
LOUDNESS_LOW, LOUDNESS_SPAN = LOUDNESS_RANGE[0], LOUDNESS_RANGE[1] - LOUDNESS_RANGE[0]


class TrackTaste(NamedTuple):
    """What one track adds to the profile (any part may be unknown)."""

    bpm: float | None
    camelot: str | None
    loudness_lufs: float | None
    embedding: list[float] | None


@dataclass
class ProfileTotals:
    track_count: int = 0
    tempo: list[float] = field(default_factory=lambda: [0.0] * TEMPO_BINS)
    keys: list[float] = field(default_factory=lambda: [0.0] * KEY_BINS)
    loudness: list[float] = field(default_factory=lambda: [0.0] * LOUDNESS_BINS)
    embedding_sum: list[float] = field(default_factory=list)
    embedding_count: int = 0

    def add(self, track: TrackTaste, sign: int = 1) -> None:
        """Count ``track`` in (sign 1) or take it back out (sign -1)."""
        self.track_count += sign
        if track.bpm:
            self.tempo[_bin(track.bpm, TEMPO_LOW, TEMPO_SPAN, TEMPO_BINS)] += sign
        if track.camelot:
            number, letter = int(track.camelot[:-1]), track.camelot[-1]
            self.keys[(number - 1) * 2 + (letter == "B")] += sign
        if track.loudness_lufs is not None:
            self.loudness[_bin(track.loudness_lufs, LOUDNESS_LOW, LOUDNESS_SPAN, LOUDNESS_BINS)] += sign
        if track.embedding:
            if not self.embedding_sum:
                self.embedding_sum = [0.0] * len(track.embedding)
            self.embedding_sum = [total + sign * value for total, value in zip(self.embedding_sum, track.embedding)]
            self.embedding_count += sign
            if self.embedding_count == 0:
                self.embedding_sum = []  # no rounding residue survives an empty library

    def profile(self) -> dict:
        """The wire profile: histograms normalized to sum 1, the centroid as a unit vector."""
        centroid = None
        if self.embedding_count > 0:
            norm = math.sqrt(sum(v * v for v in self.embedding_sum)) or 1.0
            centroid = [round(max(-1.0, min(1.0, v / norm)), 6) for v in self.embedding_sum]
        return {
            "track_count": self.track_count,
            "tempo_histogram": _normalized(self.tempo),
            "key_histogram": _normalized(self.keys),
            "loudness_histogram": _normalized(self.loudness),
            "embedding_centroid": centroid,
            # the library rows carry embeddings of today's version only (trackview.library_row)
            "embedding_version": STAGE_VERSIONS["embedding"] if centroid is not None else None,
        }

    def to_json(self) -> str:
        return json.dumps(self.__dict__)

    @classmethod
    def from_json(cls, text: str) -> ProfileTotals:
        return cls(**json.loads(text))


def taste_profile(tracks: list[TrackTaste]) -> dict:
    """The profile of ``tracks``, computed from scratch (what the running totals must equal)."""
    totals = ProfileTotals()
    for track in tracks:
        totals.add(track)
    return totals.profile()


def _bin(value: float, low: float, span: float, bins: int) -> int:
    return min(bins - 1, max(0, int((value - low) / (span / bins))))


def _normalized(counts: list[float]) -> list[float]:
    total = sum(counts)
    # counts are whole numbers kept as floats; round() removes any -0.0 or 1e-16 residue
    return [round(c / total, 6) + 0.0 for c in counts] if total > 0.5 else [0.0] * len(counts)
