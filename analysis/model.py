"""The frozen result of analyzing one file, and the allow-list that turns it into the only
fields an observation may carry on the wire (see shared/design.md, "The wire contract")."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from cratesense.analysis.fingerprint import Fingerprint
from cratesense.analysis.tags import Tags
from cratesense.analysis.constants import ANALYZER_VERSION, STAGE_VERSIONS  # noqa: F401 (re-exported)



@dataclass(frozen=True, slots=True)
class AudioFacts:
    container: str
    codec: str
    sample_rate: int
    channels: int
    duration: float  # seconds
    fully_decoded: bool  # False when only the fingerprinted head was read


@dataclass(frozen=True, slots=True)
class Descriptors:
    """What the audio sounds like; every field is None when it could not be determined."""

    bpm: float | None = None
    bpm_confidence: float | None = None
    beat_offset: float | None = None  # seconds to the first beat of the grid
    downbeat_offset: float | None = None  # seconds from the start of the decoded audio to bar 1's downbeat
    beats_per_bar: int | None = None  # beats of the grid in one bar (2, 3 or 4)
    key: str | None = None  # "A minor"
    camelot: str | None = None  # "8A"
    open_key: str | None = None  # "1m"
    key_strength: float | None = None
    tuning_cents: float | None = None  # deviation of the reference pitch from A4 = 440 Hz
    loudness_lufs: float | None = None  # EBU R128 integrated loudness
    loudness_range: float | None = None  # LU
    true_peak_dbtp: float | None = None
    replaygain_db: float | None = None  # gain to the ReplayGain 2.0 reference of -18 LUFS
    embedding: tuple[float, ...] | None = None


@dataclass(frozen=True, slots=True)
class TrackAnalysis:
    fingerprint: Fingerprint
    tags: Tags
    audio: AudioFacts
    descriptors: Descriptors = field(default_factory=Descriptors)
    analyzer_version: str = ANALYZER_VERSION

    def to_dict(self) -> dict:
        """Everything, for local use (the CLI's JSON, the journal). Not for the wire."""
        return asdict(self)


def observation_fields(track: TrackAnalysis) -> dict:
    """The allow-list: exactly the fields an observation may carry (the catalog's contract
    validates them again). Built field by field, so nothing new can leak by being added to
    ``TrackAnalysis``."""
    tags, descriptors = track.tags, track.descriptors
    return {
        "fingerprint": {
            "chromaprint": track.fingerprint.chromaprint,
            "duration": track.fingerprint.duration,
        },
        "metadata": {
            "artist": tags.artist,
            "title": tags.title,
            "album": tags.album,
            "isrc": tags.isrc,
            "catalog_number": tags.catalog_number,
            "duration": track.audio.duration,
        },
        "analysis": {
            "bpm": descriptors.bpm,
            "key": descriptors.key,
            "camelot": descriptors.camelot,
            "loudness_lufs": descriptors.loudness_lufs,
            "embedding": list(descriptors.embedding) if descriptors.embedding else None,
            "analyzer_version": track.analyzer_version,
        },
    }
