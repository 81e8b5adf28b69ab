"""``analyze_file``: decode a file once and feed every stage from that one decode."""

from __future__ import annotations

import os
import time

import msgspec
import numpy as np

from cratesense.analysis.codecs import codec_name
from cratesense.analysis.cutoff import CutoffMeter
from cratesense.analysis.decode import ANALYSIS_RATE, AudioFile
from cratesense.analysis.cues import place_cues
from cratesense.analysis.downbeat import estimate_bars
from cratesense.analysis.energy import energy_curve, track_energy
from cratesense.analysis.fingerprint import FINGERPRINT_SECONDS, FingerprintBuilder
from cratesense.analysis.embedding import compute_embedding
from cratesense.analysis.features import (
    CHROMA_HOP,
    ONSET_FFT,
    ONSET_RATE,
    FeatureExtractor,
    FrameFeatures,
    TimbreExtractor,
    TimbreFeatures,
)
from cratesense.analysis.key import chroma, estimate_key, estimate_tuning
from cratesense.analysis.loudness import Loudness, LoudnessMeter
from cratesense.analysis.model import AudioFacts, Descriptors, Fingerprint, TrackAnalysis
from cratesense.analysis.phrases import bar_grid, find_phrases
from cratesense.analysis.tempo import estimate_tempo
from cratesense.analysis.waveform import overview
from cratesense.analysis.constants import DEFAULT_BPM_RANGE, NATIVE_FIELDS
from cratesense.analysis.tags import read_tags
from cratesense.errors import DecodeError, SilentAudioError, TooShortError, TruncatedAudioError

MIN_SECONDS = 3.0  # below this Chromaprint yields no items and tempo/key mean nothing
SILENCE_PEAK = 4  # int16 peak of the analysis stream (about -78 dBFS): digital silence
TRUNCATION_SHARE = 0.9  # decoded audio shorter than this share of the stated length is truncated
_MIN_LENGTH_FOR_TRUNCATION_CHECK = 10.0


def analyze_file(
    path: str | os.PathLike,
    *,
    descriptors: bool = True,
    timeout: float | None = None,
    bpm_range: tuple[float, float] = DEFAULT_BPM_RANGE,
    native_results: dict | None = None,
) -> TrackAnalysis:
    """Analyze one audio file.

    With ``descriptors=False`` only the fingerprinted head is decoded (fingerprint + tags), for
    tracks whose descriptors are already known. ``native_results``: the ``NATIVE_FIELDS`` of an
    earlier analysis of this same audio whose native stages are still current (an upgrade that
    changed only tempo, key or bars): the native-rate view is not decoded and they are kept.
    Raises an ``AnalysisError`` subclass that says what is wrong with the file.
    """
    deadline = None if timeout is None else time.monotonic() + timeout
    tags = read_tags(path)
    with AudioFile(path) as audio:
        info = audio.info
        fingerprinter = FingerprintBuilder(ANALYSIS_RATE)
        features = FeatureExtractor() if descriptors else None
        meter: LoudnessMeter | None = None  # made from the first native block's real rate and channels
        timbre: TimbreExtractor | None = None  # likewise
        edge: CutoffMeter | None = None  # likewise
        decoded = 0
        peak = 0
        for block in audio.blocks(
            native=descriptors and native_results is None,
            max_seconds=None if descriptors else FINGERPRINT_SECONDS,
            deadline=deadline,
        ):
            if block.native is not None:
                if meter is None:
                    meter = LoudnessMeter(block.native_rate, _channel_names(info, block.native.shape[0]))
                    timbre = TimbreExtractor(block.native_rate)
                    edge = CutoffMeter(block.native_rate)
                assert timbre is not None and edge is not None, "made with the meter"
                meter.feed(block.native)
                timbre.feed(block.native)
                edge.feed(block.native)
            if block.analysis.size:
                if features is not None:
                    features.feed(block.analysis)
                fingerprinter.feed(block.analysis)
                decoded += block.analysis.size
                peak = max(peak, int(np.max(np.abs(block.analysis.astype(np.int32)))))
    if decoded == 0:
        raise DecodeError(
            f"no audio could be decoded: the content is not valid {codec_name(info.codec)} audio "
            f"(the {info.container} format was guessed from its name or header)"
        )
    decoded_seconds = decoded / ANALYSIS_RATE
    fully_decoded = descriptors or decoded_seconds < FINGERPRINT_SECONDS - 1.0
    stated_length = tags.exact_length
    _check_length(decoded_seconds, stated_length, fully_decoded)
    if peak < SILENCE_PEAK:
        raise SilentAudioError(f"the audio is digital silence ({decoded_seconds:.1f} s decoded)")
    if fully_decoded:
        duration = decoded_seconds
    else:
        duration = stated_length or info.declared_duration or tags.duration or decoded_seconds
    duration = round(duration, 2)
    described = (
        _describe(
            features.finish(),
            meter.finish() if meter else Loudness(None, None, None, None),
            bpm_range,
            timbre=timbre.finish() if timbre else None,
            cutoff_hz=edge.finish() if edge else None,
        )
        if features is not None
        else Descriptors()
    )
    if features is not None and native_results is not None:
        kept = {name: native_results.get(name) for name in NATIVE_FIELDS}
        kept["embedding"] = tuple(kept["embedding"]) if kept["embedding"] else None
        described = msgspec.structs.replace(described, **kept)
    return TrackAnalysis(
        fingerprint=Fingerprint(chromaprint=fingerprinter.finish(), duration=duration),
        tags=tags,
        audio=AudioFacts(
            container=info.container,
            codec=info.codec,
            sample_rate=info.sample_rate,
            channels=info.channels,
            duration=duration,
            fully_decoded=fully_decoded,
            bitrate=info.bitrate,
        ),
        descriptors=described,
    )


# The onset of a frame is registered when a sound enters its window, about half a window before
# the frame's centre: this shifts the beat grid back onto the sound.
_ONSET_LATENCY = ONSET_FFT / 2 / ANALYSIS_RATE


def _describe(
    features: FrameFeatures,
    loudness: Loudness,
    bpm_range: tuple[float, float],
    *,
    timbre: TimbreFeatures | None = None,
    cutoff_hz: float | None = None,
) -> Descriptors:
    """The descriptor stages, each a pure function of the streamed features (no ``timbre``: no
    embedding); ``cutoff_hz`` is the cutoff stage's measure, passed through."""
    tempo = estimate_tempo(
        (features.onset_fine, features.onset_slow), ONSET_RATE, bpm_range, phase_onset=features.onset,
        low_onset=features.onset_low, high_onset=features.onset_high,
    )
    tuning = estimate_tuning(features.pitch) if features.pitch.size else 0.0
    chroma_frames = chroma(features.pitch, tuning)
    key = estimate_key(chroma_frames, features.energy, tuning, features.bass, features.notes)
    beat_offset = bars = None
    if tempo is not None:
        period = 60.0 / tempo.bpm
        beat_offset = round((tempo.beat_offset + _ONSET_LATENCY) % period, 3)
        bars = estimate_bars(
            _beats_from_first_sound(features, beat_offset, period), chroma_frames, features.mel,
            features.onset_fine, ONSET_RATE,
        )
    curve = energy_curve(features)
    lines = bar_grid(tempo.bpm if tempo else None, beat_offset, bars.downbeat_offset if bars else None,
                     bars.beats_per_bar if bars else None, features.duration)
    phrases = find_phrases(features, chroma_frames, curve, lines, features.duration)
    return Descriptors(
        bpm=tempo.bpm if tempo else None,
        bpm_confidence=tempo.confidence if tempo else None,
        beat_offset=beat_offset,
        downbeat_offset=bars.downbeat_offset if bars else None,
        beats_per_bar=bars.beats_per_bar if bars else None,
        key=key.key.name if key else None,
        camelot=key.key.camelot if key else None,
        open_key=key.key.open_key if key else None,
        key_strength=key.strength if key else None,
        tuning_cents=key.tuning_cents if key else None,
        loudness_lufs=loudness.integrated_lufs,
        loudness_range=loudness.range_lu,
        true_peak_dbtp=loudness.true_peak_dbtp,
        replaygain_db=loudness.replaygain_db,
        embedding=compute_embedding(timbre),
        energy=track_energy(curve, features.duration),
        phrases=phrases,
        cues=place_cues(phrases, features.duration),
        waveform=overview(features.mel, features.duration),
        cutoff_hz=cutoff_hz,
    )


def _beats_from_first_sound(features: FrameFeatures, beat_offset: float, period: float) -> np.ndarray:
    """The beat grid from the first beat where the music has started (bar 1 is not in a
    leading silence) to the end; a beat estimated a hair before 0 s is the one at 0 s."""
    energy = features.energy
    loud = float(np.percentile(energy, 90)) if energy.size else 0.0
    sounding = np.nonzero(energy > 0.05 * loud)[0] if loud > 0 else np.zeros(0, int)
    start = sounding[0] * CHROMA_HOP / ANALYSIS_RATE if sounding.size else 0.0  # the earliest it can be
    first = beat_offset - period if beat_offset > 0.75 * period else beat_offset
    first += period * max(0.0, np.ceil((start - first - 0.25 * period) / period))
    return np.maximum(np.arange(first, features.duration, period), 0.0)


def _channel_names(info, channels: int) -> tuple[str, ...]:
    if len(info.channel_names) == channels:
        return info.channel_names
    return tuple(f"C{index}" for index in range(channels))


def _check_length(decoded_seconds: float, stated_length: float | None, fully_decoded: bool) -> None:
    if (
        fully_decoded
        and stated_length is not None
        and stated_length >= _MIN_LENGTH_FOR_TRUNCATION_CHECK
        and decoded_seconds < TRUNCATION_SHARE * stated_length
    ):
        raise TruncatedAudioError(
            f"the audio ends at {decoded_seconds:.1f} s of the {stated_length:.1f} s its header "
            "states (truncated, or still being copied)"
        )
    if fully_decoded and decoded_seconds < MIN_SECONDS:
        raise TooShortError(
            f"the audio is {decoded_seconds:.2f} s long; at least {MIN_SECONDS:.0f} s is needed"
        )
