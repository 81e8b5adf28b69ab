"""The typed track: one msgspec model of what CrateSense knows about a track, from the analysis
worker to the journal, the library's read model, every face and the wire.

Free of numpy and of the analysis stack, so the agent and a cold CLI load it cheaply; the worker
builds it, the journal stores it as its JSON (``encode``/``decode``), and every reader gets it
back as this model, never as a dict. The catalog's consensus on a track (``Consensus``: what a
look-up answers) is here too: the catalog's contract answers with it and the agent keeps it
beside its own analysis. A field is named once, here; a new field is added here with a default,
so a journal written before it still reads.

``observation_fields`` is the allow-list: exactly the fields an observation may carry to the
catalog (see shared/design.md, "The wire contract"), built field by field so nothing new can
leak by being added to the model.
"""

from __future__ import annotations

from pathlib import PurePath
from typing import Annotated, Any, Literal

import msgspec

from cratesense.analysis.constants import (
    current_native_stages,
    ANALYZER_VERSION,
    MAX_SHORT_TEXT_LENGTH,
    MAX_TEXT_LENGTH,
    NATIVE_STAGE_FIELDS,
    STAGE_VERSIONS,
    wire_version,
)

__all__ = [
    "ANALYZER_VERSION", "STAGE_VERSIONS", "AudioFacts", "Consensus", "ConsensusAnalysis", "ConsensusMetadata",
    "Cue", "Descriptors", "Fingerprint", "Phrase", "Tags", "TrackAnalysis", "Waveform", "decode_track", "encode_track",
    "observation_fields",
]


class _Model(msgspec.Struct, frozen=True, kw_only=True):
    """Frozen and keyword-only; unknown fields are ignored when decoding, so a journal or a
    catalog a version ahead still reads."""


class Fingerprint(_Model, frozen=True, kw_only=True):
    chromaprint: str  # compressed and base64-encoded, as fpcalc prints it
    duration: float  # seconds of audio in the file (not only the fingerprinted part)


class Tags(_Model, frozen=True, kw_only=True):
    """Tags the file carries, cleaned (analysis/tags.py)."""

    artist: str | None = None
    title: str | None = None
    album: str | None = None
    album_artist: str | None = None
    track_number: int | None = None
    duration: float | None = None  # seconds, from the file's header
    isrc: str | None = None
    catalog_number: str | None = None
    bpm: float | None = None  # as tagged
    key: str | None = None  # as tagged, canonical ("A minor")
    genre: str | None = None  # as tagged (the user's own genre: never replaced, never sent)
    # The length the header states exactly (FLAC, WAV, AIFF, MP4, MP3 with a Xing/Info header);
    # None when it is only an estimate. Lets the analysis tell a truncated file from a short one.
    exact_length: float | None = None


def shown_title(title: str | None, path: str) -> str:
    """The title every face shows: the tag's, or the file's name without its extension when the
    file has no title tag (with or without an artist tag). The one title fallback."""
    return title or PurePath(path).stem


class AudioFacts(_Model, frozen=True, kw_only=True):
    container: str
    codec: str
    sample_rate: int
    channels: int
    duration: float  # seconds
    fully_decoded: bool  # False when only the fingerprinted head was read
    # bits per second of the audio stream as its header states it (tags and cover art not
    # counted); None when the format does not say (FLAC, WAV, Opus: see ``dj/duplicates.py``)
    bitrate: int | None = None


class Phrase(_Model, frozen=True, kw_only=True):
    """A part of the arrangement on the bar grid (analysis/phrases.py)."""

    start: float  # seconds: a bar line of the grid
    end: float  # the next phrase's start, or the end of the track
    bar: int  # the bar it starts on, bar 1 being the first that sounds (where the intro starts)
    bars: int  # its length in bars (the last: the bars that start before the end)
    label: str  # intro, verse, build, drop, breakdown or outro
    energy: int  # 1-10 (analysis/energy.py)
    confidence: float  # 0-1: how clearly its start stands out and its label fits


class Cue(_Model, frozen=True, kw_only=True):
    """A cue point on the grid (analysis/cues.py): a hot cue in slot 0-3 (A-D), or a memory cue."""

    start: float  # seconds from the start of the decoded audio, a bar line of the grid
    bar: int  # the bar it marks (bar 1: the first that sounds, as for phrases)
    name: str  # "Mix in", "Drop", "Breakdown", "Mix out"; a memory cue: its phrase's label
    colour: str  # "#RRGGBB"
    hot: int | None = None  # hot cue slot 0-3 (A-D); None: a memory cue


class Waveform(_Model, frozen=True, kw_only=True):
    """The page's band-coloured overview (analysis/waveform.py): local only, never on the wire."""

    column_seconds: float  # the stretch of audio each column stands for
    data: str  # base64 of columns x (low, mid, high) level bytes


class Descriptors(_Model, frozen=True, kw_only=True):
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
    energy: int | None = None  # 1-10 (analysis/energy.py)
    phrases: tuple[Phrase, ...] | None = None  # on the bar grid, in order (analysis/phrases.py)
    cues: tuple[Cue, ...] | None = None  # hot and memory cues on the grid (analysis/cues.py)
    waveform: Waveform | None = None  # the page's overview; local only, never on the wire
    # Hz where the spectrum stops (analysis/cutoff.py): a lossy encoder's lowpass, which any
    # transcode of its output keeps; half the sample rate when it runs to the top
    cutoff_hz: float | None = None
    genres: tuple[str, ...] | None = None  # the sound model's genre words, best first
    moods: tuple[str, ...] | None = None
    sound_tags: tuple[str, ...] | None = None  # its other words that apply (voice, instruments)
    tag_strengths: dict[str, float] | None = None  # every vocabulary word's strength, 0-1
    model_error: str | None = None  # why the sound model could not tag this track


class TrackAnalysis(_Model, frozen=True, kw_only=True):
    fingerprint: Fingerprint
    tags: Tags
    audio: AudioFacts
    descriptors: Descriptors = Descriptors()
    analyzer_version: str = ANALYZER_VERSION
    # whose descriptors these are: ours, or none of ours because the catalog's consensus stood in
    # for them (daemon/known_tracks.py); set by the agent when it records the analysis
    descriptors_from: Literal["local", "catalog"] = "local"

    def native_results(self) -> dict[str, Any]:
        """The fields of this analysis's native stages that are today's (``NATIVE_STAGE_FIELDS``),
        to be kept by a re-analysis: it runs only the other native stages. The sound model's
        stages are never kept from an analysis the model could not make (its words and embedding
        are missing, not computed): a re-analysis tries the model again."""
        current = current_native_stages(self.analyzer_version)
        if self.descriptors.model_error is not None:
            current = tuple(stage for stage in current if stage not in ("model", "embedding"))
        return {name: getattr(self.descriptors, name) for stage in current for name in NATIVE_STAGE_FIELDS[stage]}


# --- the catalog's consensus on a recording (what a look-up answers) -----------------------

# Texts as long as an observation's may be: an agent never keeps more than a contributor could send.
_Text = Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_TEXT_LENGTH)]
_ShortText = Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_SHORT_TEXT_LENGTH)]


class ConsensusMetadata(_Model, frozen=True, kw_only=True):
    artist: _Text | None = None
    title: _Text | None = None
    album: _Text | None = None
    isrc: Annotated[str, msgspec.Meta(max_length=12)] | None = None
    catalog_number: _ShortText | None = None
    duration: float | None = None


class ConsensusAnalysis(_Model, frozen=True, kw_only=True):
    bpm: float | None = None
    key: Annotated[str, msgspec.Meta(max_length=16)] | None = None
    camelot: Annotated[str, msgspec.Meta(max_length=3)] | None = None
    loudness_lufs: float | None = None
    # the sound model's words most contributors heard (vocabulary words: constants.GENRE_WORDS...)
    genres: Annotated[tuple[Annotated[str, msgspec.Meta(max_length=32)], ...], msgspec.Meta(max_length=3)] | None = None
    moods: Annotated[tuple[Annotated[str, msgspec.Meta(max_length=32)], ...], msgspec.Meta(max_length=3)] | None = None


class Consensus(_Model, frozen=True, kw_only=True):
    """A recording a fingerprint matched at the catalog, with what its contributors agree on."""

    # the look-up's match score; None: brought by the change feed (our own observation is in it)
    score: Annotated[float, msgspec.Meta(ge=0.0, le=1.0)] | None = None
    recording: int
    contributors: Annotated[int, msgspec.Meta(ge=0)]
    metadata: ConsensusMetadata = ConsensusMetadata()
    analysis: ConsensusAnalysis = ConsensusAnalysis()


_track_decoder = msgspec.json.Decoder(TrackAnalysis)
_consensus_decoder = msgspec.json.Decoder(Consensus | None)
_encoder = msgspec.json.Encoder()


def encode_track(track: TrackAnalysis) -> bytes:
    return _encoder.encode(track)


def decode_track(data: bytes | str) -> TrackAnalysis:
    return _track_decoder.decode(data)


def encode_consensus(consensus: Consensus | None) -> bytes:
    return _encoder.encode(consensus)


def decode_consensus(data: bytes | str) -> Consensus | None:
    return _consensus_decoder.decode(data)


def observation_fields(track: TrackAnalysis) -> dict[str, Any]:
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
            "genres": list(descriptors.genres) if descriptors.genres else None,
            "moods": list(descriptors.moods) if descriptors.moods else None,
            "analyzer_version": wire_version(track.analyzer_version),
        },
    }
