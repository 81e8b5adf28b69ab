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
from cratesense.analysis.embedding import timbre_embedding
from cratesense.analysis.energy import energy_curve, track_energy
from cratesense.analysis.fingerprint import FINGERPRINT_SECONDS, FingerprintBuilder
from cratesense.analysis.features import (
    CHROMA_HOP,
    ONSET_FFT,
    ONSET_RATE,
    FeatureExtractor,
    FrameFeatures,
    TimbreExtractor,
)
from cratesense.analysis.key import chroma, estimate_key, estimate_tuning
from cratesense.analysis.loudness import Loudness, LoudnessMeter
from cratesense.analysis.model import AudioFacts, Descriptors, Fingerprint, TrackAnalysis
from cratesense.analysis.phrases import bar_grid, find_phrases
from cratesense.analysis.tempo import estimate_tempo
from cratesense.analysis.waveform import overview
from cratesense.analysis.constants import ANALYZER_VERSION, DEFAULT_BPM_RANGE, NATIVE_STAGE_FIELDS, WITHOUT_MODEL_VERSION
from cratesense.analysis.learned import PATCHES, PatchCollector, SoundModel, shipped_model
from cratesense.analysis.sound_tags import describe as describe_sound
from cratesense.analysis.tags import read_tags
from cratesense.errors import DecodeError, ModelError, SilentAudioError, TooShortError, TruncatedAudioError

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
    sound_model: SoundModel | ModelError | None = None,
) -> TrackAnalysis:
    """Analyze one audio file.

    With ``descriptors=False`` only the fingerprinted head is decoded (fingerprint + tags), for
    tracks whose descriptors are already known. ``native_results``: fields of an earlier analysis
    of this same audio whose native stages (``NATIVE_STAGE_FIELDS``) are still current (an
    upgrade that changed other stages): those stages are not run again and their fields are
    kept; when every native stage is kept, the native-rate view is not decoded at all.
    ``sound_model``: the model that tags the track and makes its embedding with the timbre
    statistics (default: the shipped one); a ``ModelError`` (it could not be loaded) leaves those fields empty, says why in
    ``model_error`` and in the analyzer version (``WITHOUT_MODEL_VERSION``: analyzed again once
    the model loads), and everything else is analyzed as usual.
    Raises an ``AnalysisError`` subclass that says what is wrong with the file.
    """
    deadline = None if timeout is None else time.monotonic() + timeout
    kept = _kept_stages(native_results) if descriptors else {}
    run_loudness = "loudness" not in kept
    run_cutoff = "cutoff" not in kept
    run_model = "model" not in kept or "embedding" not in kept  # the embedding is made with the model's view
    loaded = (sound_model if sound_model is not None else shipped_model()) if descriptors and run_model else None
    model_error = loaded if isinstance(loaded, ModelError) else None
    model = None if isinstance(loaded, ModelError) else loaded
    tags = read_tags(path)
    with AudioFile(path) as audio:
        info = audio.info
        fingerprinter = FingerprintBuilder(ANALYSIS_RATE)
        features = FeatureExtractor() if descriptors else None
        meter: LoudnessMeter | None = None  # made from the first native block's real rate and channels
        patches: PatchCollector | None = None  # likewise
        edge: CutoffMeter | None = None  # likewise
        timbre: TimbreExtractor | None = None  # likewise: the embedding's other half, made with the model
        decoded = 0
        peak = 0
        for block in audio.blocks(
            native=descriptors and (run_loudness or run_cutoff or model is not None),
            max_seconds=None if descriptors else FINGERPRINT_SECONDS,
            deadline=deadline,
        ):
            if block.native is not None:
                if meter is None and run_loudness:
                    meter = LoudnessMeter(block.native_rate, _channel_names(info, block.native.shape[0]))
                if patches is None and model is not None:
                    patches = PatchCollector(block.native_rate, model.rate, model.window_samples, PATCHES)
                if edge is None and run_cutoff:
                    edge = CutoffMeter(block.native_rate)
                if timbre is None and model is not None:
                    timbre = TimbreExtractor(block.native_rate)
                if meter is not None:
                    meter.feed(block.native)
                if patches is not None:
                    patches.feed(block.native)
                if edge is not None:
                    edge.feed(block.native)
                if timbre is not None:
                    timbre.feed(block.native)
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
    described = Descriptors()
    if features is not None:
        described = _describe(features.finish(), meter.finish() if meter else Loudness(None, None, None, None),
                              bpm_range, cutoff_hz=edge.finish() if edge else None)
        described = msgspec.structs.replace(described, **_sound(model_error or model, patches, timbre))
        described = msgspec.structs.replace(
            described, **{name: value for fields in kept.values() for name, value in fields.items()})
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
        analyzer_version=WITHOUT_MODEL_VERSION if described.model_error is not None else ANALYZER_VERSION,
    )


def _kept_stages(native_results: dict | None) -> dict[str, dict]:
    """The native stages ``native_results`` holds every field of: stage -> its fields."""
    if not native_results:
        return {}
    kept = {}
    for stage, fields in NATIVE_STAGE_FIELDS.items():
        if all(name in native_results for name in fields):
            values = {name: native_results[name] for name in fields}
            kept[stage] = {name: tuple(value) if isinstance(value, list) else value for name, value in values.items()}
    return kept


def _sound(model: SoundModel | ModelError | None, patches: PatchCollector | None,
           timbre: TimbreExtractor | None) -> dict:
    """The sound model's fields: genres, moods, tags, and the embedding it makes with the timbre
    statistics (empty for silence; no embedding when either has too little sound to go by)."""
    if isinstance(model, ModelError):
        return {"model_error": str(model)}
    if model is None or patches is None:
        return {}
    windows = patches.finish()
    if not len(windows):
        return {}
    output = model.infer(windows)
    words = describe_sound(output.scores, model.reference)
    statistics = timbre_embedding(timbre.finish() if timbre is not None else None)
    return {
        "genres": words.genres,
        "moods": words.moods,
        "sound_tags": words.other,
        "tag_strengths": words.strengths,
        "embedding": model.embed(output.features, statistics) if statistics is not None else None,
    }


# The onset of a frame is registered when a sound enters its window, about half a window before
# the frame's centre: this shifts the beat grid back onto the sound.
_ONSET_LATENCY = ONSET_FFT / 2 / ANALYSIS_RATE


def _describe(
    features: FrameFeatures, loudness: Loudness, bpm_range: tuple[float, float], *, cutoff_hz: float | None = None
) -> Descriptors:
    """The descriptor stages that are pure functions of the streamed features and the loudness;
    ``cutoff_hz`` is the cutoff stage's measure, passed through."""
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
