"""Typed tracks for tests that write a journal without analyzing audio."""

from __future__ import annotations

from cratesense.analysis.constants import ANALYZER_VERSION
from cratesense.analysis.model import AudioFacts, Descriptors, Fingerprint, Tags, TrackAnalysis


def track_analysis(version: str = ANALYZER_VERSION, *, source: str = "local", chromaprint: str = "", duration: float = 200.0,
          tags: Tags | None = None, **descriptors) -> TrackAnalysis:
    """A track as an analysis of ``version`` would record it, with these descriptors."""
    return TrackAnalysis(
        fingerprint=Fingerprint(chromaprint=chromaprint, duration=duration), tags=tags or Tags(),
        audio=AudioFacts(container="flac", codec="flac", sample_rate=44100, channels=2, duration=duration,
                         fully_decoded=True),
        descriptors=Descriptors(**descriptors), analyzer_version=version, descriptors_from=source)
