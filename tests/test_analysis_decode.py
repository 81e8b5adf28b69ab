"""Decoding: every common format, one decode feeding all stages, bounded memory, and a typed,
clear error for every kind of broken file."""

from __future__ import annotations

import sys
import subprocess
import tracemalloc

import av
import numpy as np
import pytest

from unprivileged import without_bypass
from audiogen import encode, synth_track, write_broken_variants
from cratesense.analysis.decode import ANALYSIS_RATE, AudioFile
from cratesense.analysis.pipeline import analyze_file
from cratesense.errors import (
    AnalysisError,
    DecodeError,
    SilentAudioError,
    TooShortError,
    TruncatedAudioError,
    UnreadableFileError,
)

EXPECTED_CODECS = {
    "mp3": "mp3",
    "flac": "flac",
    "ogg": "vorbis",
    "opus": "opus",
    "m4a": "aac",
    "wav": "pcm_s16le",
    "aiff": "pcm_s16be",
}


@pytest.mark.parametrize("ext", sorted(EXPECTED_CODECS))
def test_every_format_decodes_to_its_full_length(formats_dir, ext):
    result = analyze_file(formats_dir[ext])
    assert result.audio.codec.startswith(EXPECTED_CODECS[ext])
    assert result.audio.duration == pytest.approx(30.0, abs=0.1)
    assert result.audio.channels == 2
    assert result.fingerprint.chromaprint.startswith("AQA")


def test_blocks_carry_analysis_pcm_and_native_channels(formats_dir):
    with AudioFile(formats_dir["flac"]) as audio:
        assert audio.info.sample_rate == 44100 and audio.info.channels == 2
        analysis = native = 0
        for block in audio.blocks(native=True):
            assert block.analysis.dtype == np.int16 and block.analysis.ndim == 1
            if block.native is not None:
                assert block.native.dtype == np.float32 and block.native.shape[0] == 2
                assert np.max(np.abs(block.native)) <= 1.0
                native += block.native.shape[1]
            analysis += block.analysis.size
    assert native == 30 * 44100
    assert abs(analysis - 30 * ANALYSIS_RATE) <= 1


def test_max_seconds_stops_decoding_early(formats_dir):
    """The fingerprint-only pass: the analysis view of the head, and nothing else converted."""
    with AudioFile(formats_dir["mp3"]) as audio:
        blocks = list(audio.blocks(max_seconds=5))
    assert sum(block.analysis.size for block in blocks) == 5 * ANALYSIS_RATE
    assert all(block.native is None for block in blocks)


def test_blocks_are_large(formats_dir):
    """FFmpeg batches the views: a 30 s file is a handful of blocks, not ~1,300 codec frames."""
    with AudioFile(formats_dir["mp3"]) as audio:
        blocks = [block for block in audio.blocks(native=True) if block.analysis.size or block.native is not None]
    assert len(blocks) <= 40


def _traced_peak(path) -> tuple[object, int]:
    tracemalloc.start()
    try:
        result = analyze_file(path)
        return result, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_memory_does_not_grow_with_the_length_of_the_file(tmp_path):
    """The PCM is streamed, never held: going from 5 to 20 minutes may add only the compact
    frame features (well under the 2.6 MB per minute that the analysis PCM alone would take as
    float32, let alone the native channels)."""
    rng = np.random.default_rng(3)
    peaks = {}
    for minutes in (5, 20):
        samples = (rng.standard_normal((1, minutes * 60 * 22050)) * 0.1).astype(np.float32)
        path = encode(samples, 22050, tmp_path / f"{minutes}min.flac")
        del samples
        result, peaks[minutes] = _traced_peak(path)
        assert result.audio.duration == pytest.approx(minutes * 60, abs=0.1)
    growth_per_minute = (peaks[20] - peaks[5]) / 15
    assert growth_per_minute < 0.8e6, f"{growth_per_minute / 1e6:.2f} MB per minute of audio"


def test_broken_files_raise_typed_clear_errors(tmp_path, formats_dir):
    variants = write_broken_variants(tmp_path, formats_dir["flac"])
    expectations = {
        "zero_bytes": (UnreadableFileError, "empty"),
        "truncated": (TruncatedAudioError, "truncated"),
        "random_mp3": (DecodeError, ""),
        "text_as_flac": (DecodeError, "not valid FLAC audio"),  # the codec as people name it
    }
    for name, (error_type, words) in expectations.items():
        with pytest.raises(error_type) as caught:
            analyze_file(variants[name])
        assert words in str(caught.value), (name, str(caught.value))


def test_truncated_mp3_with_info_header_is_detected(tmp_path, formats_dir):
    data = formats_dir["mp3"].read_bytes()
    cut = tmp_path / "cut.mp3"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(TruncatedAudioError, match="still being copied"):
        analyze_file(cut)


def test_missing_and_unreadable_files(tmp_path, formats_dir):
    with pytest.raises(UnreadableFileError, match="not found"):
        analyze_file(tmp_path / "nope.mp3")
    locked = tmp_path / "locked.flac"
    locked.write_bytes(formats_dir["flac"].read_bytes())
    locked.chmod(0)
    # in a process that cannot bypass permissions (root in CI can): see unprivileged.py
    check = (f"from cratesense.analysis.pipeline import analyze_file\n"
             f"from cratesense.errors import UnreadableFileError\n"
             f"try:\n    analyze_file({str(locked)!r})\nexcept UnreadableFileError as exc:\n    print('unreadable:', exc)")
    result = subprocess.run(without_bypass([sys.executable, "-c", check]), capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and result.stdout.startswith("unreadable:"), result.stderr


def test_half_second_file_is_too_short(tmp_path):
    samples = synth_track(seconds=0.5)
    with pytest.raises(TooShortError, match="0.50 s"):
        analyze_file(encode(samples, 44100, tmp_path / "blip.wav"))


def test_silence_is_reported_not_fingerprinted(tmp_path):
    path = encode(np.zeros((2, 44100 * 10), np.float32), 44100, tmp_path / "silence.flac")
    with pytest.raises(SilentAudioError, match="silence"):
        analyze_file(path)


def test_file_without_audio_stream(tmp_path):
    path = tmp_path / "video_only.mp4"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=25)
        stream.width, stream.height, stream.pix_fmt = 64, 64, "yuv420p"
        for index in range(10):
            frame = av.VideoFrame.from_ndarray(np.full((64, 64, 3), index * 20, np.uint8), format="rgb24")
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    with pytest.raises(DecodeError, match="no audio stream"):
        analyze_file(path)


def test_extension_that_lies_is_decoded_by_content(tmp_path, formats_dir):
    """An MP3 named .flac is still an MP3: FFmpeg probes the content, and we report the codec."""
    liar = tmp_path / "actually_mp3.flac"
    liar.write_bytes(formats_dir["mp3"].read_bytes())
    result = analyze_file(liar)
    assert result.audio.codec.startswith("mp3")
    assert result.fingerprint.chromaprint == analyze_file(formats_dir["mp3"]).fingerprint.chromaprint


def test_corrupted_middle_is_tolerated(tmp_path, formats_dir):
    """A few damaged frames in the middle (an old rip) are skipped, like players do."""
    data = bytearray(formats_dir["mp3"].read_bytes())
    middle = len(data) // 2
    data[middle : middle + 600] = np.random.default_rng(5).bytes(600)
    damaged = tmp_path / "damaged.mp3"
    damaged.write_bytes(bytes(data))
    result = analyze_file(damaged)
    assert result.audio.duration == pytest.approx(30.0, abs=1.0)


def test_timeout_is_a_typed_error(formats_dir):
    with pytest.raises(AnalysisError, match="time limit"):
        analyze_file(formats_dir["wav"], timeout=0.0)
