"""``analyze_file``: decode a file once and feed every stage from that one decode."""

from __future__ import annotations

import os
import time

import numpy as np

from cratesense.analysis.decode import ANALYSIS_RATE, AudioFile
from cratesense.analysis.fingerprint import FINGERPRINT_SECONDS, Fingerprint, FingerprintBuilder
from cratesense.analysis.model import AudioFacts, TrackAnalysis
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
) -> TrackAnalysis:
    """Analyze one audio file.

    With ``descriptors=False`` only the fingerprinted head is decoded (fingerprint + tags), for
    tracks whose descriptors are already known. Raises an ``AnalysisError`` subclass that says
    what is wrong with the file.
    """
    deadline = None if timeout is None else time.monotonic() + timeout
    tags = read_tags(path)
    with AudioFile(path) as audio:
        info = audio.info
        fingerprinter = FingerprintBuilder(ANALYSIS_RATE)
        decoded = 0
        peak = 0
        for block in audio.blocks(
            native=descriptors,
            max_seconds=None if descriptors else FINGERPRINT_SECONDS,
            deadline=deadline,
        ):
            if block.analysis.size:
                fingerprinter.feed(block.analysis)
                decoded += block.analysis.size
                peak = max(peak, int(np.max(np.abs(block.analysis.astype(np.int32)))))
    if decoded == 0:
        raise DecodeError(
            f"no audio could be decoded: the content is not valid {info.codec} audio "
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
    return TrackAnalysis(
        fingerprint=Fingerprint(fingerprinter.finish(), duration),
        tags=tags,
        audio=AudioFacts(
            container=info.container,
            codec=info.codec,
            sample_rate=info.sample_rate,
            channels=info.channels,
            duration=duration,
            fully_decoded=fully_decoded,
        ),
    )


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
