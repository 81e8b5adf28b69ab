"""Tempo, key, loudness and embedding, pinned on generated signals with known answers."""

from __future__ import annotations

import re
import shutil
import subprocess

import av
import numpy as np
import pytest

from audiogen import cadence, encode, metric_piece, synth_track
from cratesense.analysis.decode import AudioFile
from cratesense.analysis.embedding import EMBEDDING_SIZE, cosine, timbre_embedding
from cratesense.analysis.features import ONSET_RATE, FeatureExtractor, TimbreExtractor
from cratesense.analysis.key import chroma, estimate_key, estimate_tuning
from cratesense.analysis.keys import Key
from cratesense.analysis.loudness import LoudnessMeter
from cratesense.analysis.pipeline import analyze_file
from cratesense.analysis.tempo import estimate_tempo

ANALYSIS_SR = 11025


def features_of(samples: np.ndarray):
    extractor = FeatureExtractor()
    mono = samples.mean(axis=0) if samples.ndim == 2 else samples
    for start in range(0, mono.size, 7000):  # odd block size: streaming must not depend on it
        extractor.feed((mono[start : start + 7000] * 32767).astype(np.int16))
    return extractor.finish()


def key_of(features):
    tuning = estimate_tuning(features.pitch)
    return estimate_key(chroma(features.pitch, tuning), features.energy, tuning, features.bass, features.notes)


def tempo_of(features, bpm_range=(70.0, 180.0)):
    """As the pipeline asks for it: the fine onset envelope, the beat placed with the mel one."""
    return estimate_tempo((features.onset_fine, features.onset_slow), ONSET_RATE, bpm_range, phase_onset=features.onset)


# --- tempo -------------------------------------------------------------------------------------


def test_128_bpm_kick_pattern_is_128():
    features = features_of(synth_track(bpm=128, seconds=30, sr=ANALYSIS_SR))
    tempo = tempo_of(features)
    assert tempo.bpm == pytest.approx(128, abs=0.5)
    assert 0 < tempo.confidence <= 1


@pytest.mark.parametrize(
    "bpm, pattern",
    [(124.0, "four"), (137.5, "four"), (174.0, "breakbeat"), (172.0, "breakbeat"), (88.0, "boombap"), (94.0, "boombap")],
)
def test_genre_tempi_at_the_level_a_dj_counts(bpm, pattern):
    """Drum & bass is counted at ~174 (not its half-time 87), hip-hop at ~90 (not 180)."""
    features = features_of(synth_track(bpm=bpm, seconds=30, pattern=pattern, seed=int(bpm), sr=ANALYSIS_SR))
    assert tempo_of(features).bpm == pytest.approx(bpm, abs=0.5)


def test_range_is_respected_for_a_slow_ballad():
    features = features_of(synth_track(bpm=64, seconds=30, pattern="ballad", sr=ANALYSIS_SR))
    assert tempo_of(features, (55, 180)).bpm == pytest.approx(64, abs=0.5)
    slow_excluded = tempo_of(features, (70, 180))
    assert slow_excluded is None or slow_excluded.bpm == pytest.approx(128, abs=1)


def test_beat_grid_lands_on_the_kicks(tmp_path):
    path = encode(synth_track(bpm=120, seconds=30), 44100, tmp_path / "grid.flac")
    descriptors = analyze_file(path).descriptors
    period = 60 / descriptors.bpm
    distance = min(descriptors.beat_offset % period, period - descriptors.beat_offset % period)
    assert distance < 0.03  # the synthesized kicks start at 0 s, on every beat


def test_no_tempo_for_silence_or_a_drone():
    assert estimate_tempo(np.zeros(3000), ONSET_RATE) is None
    drone = np.sin(2 * np.pi * 220 * np.arange(30 * ANALYSIS_SR) / ANALYSIS_SR) * 0.5
    assert tempo_of(features_of(drone)) is None


# --- key ---------------------------------------------------------------------------------------


def test_a_minor_progression_is_a_minor_8a():
    estimate = key_of(features_of(synth_track(tonic=9, minor=True, seconds=30, sr=ANALYSIS_SR)))
    assert (estimate.key.name, estimate.key.camelot) == ("A minor", "8A")


@pytest.mark.parametrize("tonic, minor", [(0, False), (7, False), (2, True), (6, True), (10, False), (3, True)])
def test_keys_across_the_wheel(tonic, minor):
    estimate = key_of(features_of(synth_track(tonic=tonic, minor=minor, seconds=30, seed=tonic, sr=ANALYSIS_SR)))
    assert estimate.key == Key(tonic, minor)


@pytest.mark.parametrize("cents", [-40.0, 30.0])
def test_detuned_recording_is_found_by_tuning_estimation(cents):
    features = features_of(synth_track(tonic=5, minor=False, seconds=30, tuning_cents=cents, sr=ANALYSIS_SR))
    estimate = key_of(features)
    assert estimate.key == Key(5, False)
    assert estimate.tuning_cents == pytest.approx(cents, abs=12)


def test_no_key_for_silence_or_noise():
    assert key_of(features_of(np.zeros(20 * ANALYSIS_SR))) is None
    noise = np.random.default_rng(1).standard_normal(20 * ANALYSIS_SR) * 0.3
    estimate = key_of(features_of(noise))
    assert estimate is None or estimate.strength < 0.5


# --- loudness (EBU Tech 3341 / 3342 test signals) ------------------------------------------------


def sine_at(dbfs: float, seconds: float, rate: int = 48000, freq: float = 1000.0) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return (10 ** (dbfs / 20) * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def meter(channels: list[np.ndarray], names=("FL", "FR"), rate: int = 48000):
    block = np.stack(channels)
    loudness = LoudnessMeter(rate, names)
    for start in range(0, block.shape[1], 4801):
        loudness.feed(block[:, start : start + 4801])
    return loudness.finish()


def stereo_sequence(levels_and_seconds):
    signal = np.concatenate([sine_at(level, seconds) for level, seconds in levels_and_seconds])
    return [signal, signal]


@pytest.mark.parametrize(
    "name, sequence, expected",
    [
        ("3341 case 1", [(-23, 20)], -23.0),
        ("3341 case 2", [(-33, 20)], -33.0),
        ("3341 case 3", [(-36, 10), (-23, 60), (-36, 10)], -23.0),
        ("3341 case 4", [(-72, 10), (-36, 10), (-23, 60), (-36, 10), (-72, 10)], -23.0),
        ("3341 case 5", [(-26, 20), (-20, 20.1), (-26, 20)], -23.0),
    ],
)
def test_ebu_tech_3341_integrated_loudness(name, sequence, expected):
    assert meter(stereo_sequence(sequence)).integrated_lufs == pytest.approx(expected, abs=0.1), name


def test_ebu_tech_3341_case_6_five_channels():
    channels = [sine_at(level, 20) for level in (-28.0, -28.0, -24.0, -30.0, -30.0)]
    result = meter(channels, names=("FL", "FR", "FC", "BL", "BR"))
    assert result.integrated_lufs == pytest.approx(-23.0, abs=0.1)


def test_ebu_tech_3342_loudness_range():
    # Tech 3342 case 1: 20 s at -20 dBFS then 20 s at -30 dBFS: LRA 10 LU.
    assert meter(stereo_sequence([(-20, 20), (-30, 20)])).range_lu == pytest.approx(10.0, abs=1.0)


def test_true_peak_catches_intersample_overs():
    # A quarter-rate sine sampled at 45 degrees: samples sit at 0.707 of the real peak.
    rate = 48000
    t = np.arange(rate * 5)
    wave = (0.9 * np.sin(2 * np.pi * t / 4 + np.pi / 4)).astype(np.float32)
    result = meter([wave, wave])
    assert result.sample_peak_dbfs == pytest.approx(20 * np.log10(0.9 * 0.7071), abs=0.05)
    assert result.true_peak_dbtp == pytest.approx(20 * np.log10(0.9), abs=0.3)


def _mp3(samples: np.ndarray, rate: int, path) -> bytes:
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libmp3lame", rate=rate, layout="stereo")
        frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(samples), format="fltp", layout="stereo")
        frame.sample_rate = rate
        for packet in [*stream.encode(frame), *stream.encode(None)]:
            container.mux(packet)
    return path.read_bytes()


def test_rate_change_mid_stream_keeps_what_was_measured(tmp_path):
    """Some MP3 streams switch sample rate mid-way: the native view stays at the first rate (the
    rest is resampled to it), both parts count towards the loudness, and none is lost."""
    first = sine_at(-20, 10, rate=48000)
    second = sine_at(-26, 10, rate=44100)
    parts = [_mp3(np.stack([first, first]), 48000, tmp_path / "a.mp3"),
             _mp3(np.stack([second, second]), 44100, tmp_path / "b.mp3")]
    joined = tmp_path / "joined.mp3"
    joined.write_bytes(b"".join(parts))
    with AudioFile(joined) as audio:
        blocks = list(audio.blocks(native=True))
    native = [block.native for block in blocks if block.native is not None]
    assert {block.native_rate for block in blocks} == {48000}
    assert sum(piece.shape[1] for piece in native) == pytest.approx(20 * 48000, abs=0.05 * 48000)
    assert sum(block.analysis.size for block in blocks) == pytest.approx(20 * ANALYSIS_SR, abs=0.05 * ANALYSIS_SR)
    # The energy mean of the two halves (about -22.0: 10 log10((10^-2 + 10^-2.6) / 2); the second
    # alone would be -26), each half measured on its own file.
    halves = [analyze_file(tmp_path / name).descriptors.loudness_lufs for name in ("a.mp3", "b.mp3")]
    expected = 10 * np.log10(np.mean([10 ** (level / 10) for level in halves]))
    assert halves[1] - halves[0] == pytest.approx(-6.0, abs=0.1)
    assert analyze_file(joined).descriptors.loudness_lufs == pytest.approx(expected, abs=0.05)


def test_silence_has_no_loudness():
    silent = np.zeros(48000 * 5, np.float32)
    result = meter([silent, silent])
    assert result.integrated_lufs is None and result.replaygain_db is None


def test_loudness_of_a_decoded_file_uses_its_channels(tmp_path):
    """Loudness is measured on the channels as decoded: a signal in one channel only is 3 dB
    quieter than in both, which a mono downmix would get wrong by 3 dB more."""
    wave = sine_at(-20, 20, rate=44100)
    both = analyze_file(encode(np.stack([wave, wave]), 44100, tmp_path / "both.wav")).descriptors
    one = analyze_file(encode(np.stack([wave, np.zeros_like(wave)]), 44100, tmp_path / "one.wav")).descriptors
    assert both.loudness_lufs - one.loudness_lufs == pytest.approx(3.01, abs=0.1)
    assert both.replaygain_db == pytest.approx(-18 - both.loudness_lufs, abs=0.01)


def ffmpeg_ebur128(path) -> tuple[float, float]:
    """Integrated loudness and loudness range as Debian's ``ffmpeg -af ebur128`` measures them
    (its own decoders and FFmpeg 5.1: an independent build of the reference)."""
    result = subprocess.run(
        ["ffmpeg", "-nostats", "-hide_banner", "-i", str(path), "-af",
         "ebur128=metadata=1,ametadata=mode=print:key=lavfi.r128.I,ametadata=mode=print:key=lavfi.r128.LRA",
         "-f", "null", "-"],
        capture_output=True, text=True, check=True, timeout=300,
    )
    values = {key: float(value) for key, value in re.findall(r"lavfi\.r128\.(I|LRA)=(-?[\d.]+)", result.stderr)}
    return values["I"], values["LRA"]


requires_ffmpeg = pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="ffmpeg not installed")


@requires_ffmpeg
def test_loudness_agrees_with_ffmpeg_ebur128(tmp_path):
    """A music-like stereo track with quiet and loud parts: integrated loudness within 0.1 LU and
    loudness range within 0.2 LU of ``ffmpeg -af ebur128``."""
    loud = synth_track(bpm=124, seconds=20, seed=3)
    quiet = synth_track(bpm=124, seconds=20, seed=4) * 0.2
    path = encode(np.concatenate([quiet, loud, quiet], axis=1), 44100, tmp_path / "dynamic.flac")
    reference_integrated, reference_range = ffmpeg_ebur128(path)
    ours = analyze_file(path).descriptors
    assert ours.loudness_lufs == pytest.approx(reference_integrated, abs=0.1)
    assert ours.loudness_range == pytest.approx(reference_range, abs=0.2)
    assert ours.loudness_range > 5  # the quiet parts count: this is not a constant signal


@requires_ffmpeg
@pytest.mark.real_recordings
def test_loudness_agrees_with_ffmpeg_ebur128_on_real_music():
    """Every real recording of the Debian music packages (opt-in: ``pytest -m real_recordings``)."""
    from realaudio import fetch

    from cratesense.errors import AnalysisError

    compared = 0
    for path in fetch():
        try:
            ours = analyze_file(path).descriptors
        except AnalysisError:
            continue
        if ours.loudness_lufs is None:
            continue
        integrated, loudness_range = ffmpeg_ebur128(path)
        assert ours.loudness_lufs == pytest.approx(integrated, abs=0.1), path.name
        assert ours.loudness_range == pytest.approx(loudness_range, abs=0.2), path.name
        compared += 1
    assert compared >= 20


# --- embedding ----------------------------------------------------------------------------------


def test_embedding_is_unit_length_deterministic_and_versioned(formats_dir):
    first = analyze_file(formats_dir["flac"]).descriptors.embedding
    again = analyze_file(formats_dir["flac"]).descriptors.embedding
    assert len(first) == EMBEDDING_SIZE
    assert np.linalg.norm(first) == pytest.approx(1.0, abs=1e-3)
    assert first == again


def test_embedding_is_stable_across_formats_and_separates_tracks(formats_dir, tmp_path):
    """Every lossy encode stays next to the lossless one. (FFmpeg's AAC moves this synthetic
    track's fine spectral motion most, to ~0.96; on real recordings every format stays above 0.96,
    AAC above 0.99: bench/similar.py, and the opt-in real-recordings test.)"""
    reference = analyze_file(formats_dir["flac"]).descriptors.embedding
    for ext in ("mp3", "opus", "m4a", "ogg"):
        assert cosine(reference, analyze_file(formats_dir[ext]).descriptors.embedding) > 0.95, ext
    other = encode(
        synth_track(bpm=172, tonic=2, minor=False, seconds=30, pattern="breakbeat", seed=9), 44100, tmp_path / "o.flac"
    )
    assert cosine(reference, analyze_file(other).descriptors.embedding) < 0.8


def timbre_of(samples: np.ndarray, rate: int = 44100, block: int = 7000):
    extractor = TimbreExtractor(rate)
    for start in range(0, samples.shape[1], block):
        extractor.feed(samples[:, start : start + block])
    return extractor.finish()


def test_embedding_of_nothing_is_none():
    assert timbre_embedding(None) is None
    assert timbre_embedding(timbre_of(np.zeros((2, 44100 * 5), np.float32))) is None  # silence is no sound


def test_timbre_statistics_do_not_depend_on_how_the_stream_is_cut():
    samples = synth_track(bpm=120, seconds=12, seed=3)
    whole = timbre_of(samples, block=samples.shape[1])
    for block in (1000, 4410, 65536):
        cut = timbre_of(samples, block=block)
        assert cut.frames == whole.frames
        np.testing.assert_allclose(cut.cepstrum_mean, whole.cepstrum_mean, rtol=1e-6)
        np.testing.assert_allclose(cut.stereo, whole.stereo, rtol=1e-6, atol=1e-9)


def test_embedding_ignores_the_playback_level_and_the_sample_rate(tmp_path):
    samples = synth_track(bpm=126, seconds=20, seed=4)
    reference = analyze_file(encode(samples, 44100, tmp_path / "track.flac")).descriptors.embedding
    quieter = analyze_file(encode(samples * 0.25, 44100, tmp_path / "quiet.flac")).descriptors.embedding
    assert cosine(reference, quieter) > 0.99  # 12 dB quieter
    at_48k = encode(samples, 44100, tmp_path / "track.opus")  # Opus is always 48 kHz
    assert cosine(reference, analyze_file(at_48k).descriptors.embedding) > 0.95


def test_embedding_of_a_mono_file_is_a_unit_vector(tmp_path):
    mono = encode(synth_track(bpm=126, seconds=20, seed=4)[:1], 44100, tmp_path / "mono.flac")
    embedding = analyze_file(mono).descriptors.embedding
    assert embedding is not None and np.linalg.norm(embedding) == pytest.approx(1.0, abs=1e-3)


def test_timbre_memory_does_not_grow_with_the_track():
    """Ten minutes cost the extractor no more memory than one (running sums, a bounded buffer)."""
    import tracemalloc

    rng = np.random.default_rng(5)
    block = (rng.standard_normal((2, 65536)) * 0.1).astype(np.float32)

    def peak_for(seconds: int) -> int:
        extractor = TimbreExtractor(44100)
        tracemalloc.start()
        for _ in range(seconds * 44100 // block.shape[1]):
            extractor.feed(block)
        extractor.finish()
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        return peak

    one, ten = peak_for(60), peak_for(600)
    assert ten < one * 1.2 + 100_000, (one, ten)


def test_analyze_reports_every_descriptor(formats_dir):
    descriptors = analyze_file(formats_dir["mp3"]).descriptors
    assert descriptors.bpm == pytest.approx(128, abs=0.5)
    assert (descriptors.key, descriptors.camelot, descriptors.open_key) == ("A minor", "8A", "1m")
    assert -30 < descriptors.loudness_lufs < -5
    assert descriptors.true_peak_dbtp >= descriptors.loudness_lufs


# --- meters, tempo levels, modulations, bars (generated pieces, tests/audiogen.metric_piece) -------


def piece_features(**kwargs):
    samples, downbeat = metric_piece(sr=ANALYSIS_SR, **kwargs)
    return features_of(samples), downbeat


def test_a_waltz_at_150_reads_150_not_100_or_225():
    features, _ = piece_features(bpm=150, bars=cadence(7, False) * 8, beats_per_bar=3, subdivision=2)
    assert tempo_of(features).bpm == pytest.approx(150, abs=1.0)


def test_six_eight_at_120_reads_its_dotted_quarter_beat():
    features, _ = piece_features(bpm=120, bars=cadence(2, False) * 6, beats_per_bar=2, subdivision=3)
    assert tempo_of(features).bpm == pytest.approx(120, abs=1.0)


def test_a_fast_reel_gets_a_tempo_within_the_range():
    """A reel at 200 (a melody of running eighths, nothing else) is never 'no tempo': the DJ's
    70-180 range counts it at 100; a range that reaches 200 counts 200."""
    features, _ = piece_features(bpm=200, bars=cadence(7, False) * 8, beats_per_bar=4, subdivision=2,
                                 accompaniment=False, seed=3)
    assert tempo_of(features).bpm == pytest.approx(100, abs=1.0)
    assert tempo_of(features, (90, 210)).bpm == pytest.approx(200, abs=2.0)


@pytest.mark.parametrize("tonic, minor", [(0, False), (9, True)])
def test_a_piece_that_modulates_to_the_dominant_and_returns_reads_the_home_key(tonic, minor):
    dominant = (tonic + 7) % 12
    bars = cadence(tonic, minor) * 2 + cadence(dominant, minor, (0, 3, 4, 0, 5, 1, 4, 0)) * 2 + cadence(tonic, minor) * 2
    features, _ = piece_features(bpm=110, bars=bars, seed=tonic)
    assert key_of(features).key == Key(tonic, minor)


@pytest.mark.parametrize("tonic", range(12))
@pytest.mark.parametrize("minor", [False, True], ids=["major", "minor"])
def test_a_cadence_in_every_key(tonic, minor):
    """I-IV-V-I (i-iv-V-i with the raised leading tone in minor), twice, in all 24 keys."""
    features, _ = piece_features(bpm=120, bars=cadence(tonic, minor) * 2, seed=tonic)
    assert key_of(features).key == Key(tonic, minor)


def test_key_strength_is_low_when_the_key_is_ambiguous():
    """Bare fifths (C and G, no third) are C major as much as C minor; a cadence is one key.
    The strength says so. (Since key 3 the strength is the fitted probability of the key; bare
    fifths read 0.71 against the cadence's 0.96: the mode's prior still speaks where no third
    does, so the bound is 0.75, not 0.7.)"""
    clear = key_of(piece_features(bpm=120, bars=cadence(0, False) * 4)[0]).strength
    fifths = key_of(piece_features(bpm=120, bars=[(0, (0, 7, 12))] * 16, melody=False)[0])
    assert clear > 0.8
    assert fifths.strength < 0.75 and fifths.strength < clear - 0.2, (fifths, clear)


def test_the_downbeat_of_an_accented_four_four_pattern(tmp_path):
    """Bar 1 starts after a one-beat pickup; the accented bar start (bass, louder hit, chord
    change) is found within 70 ms, four beats to the bar."""
    samples, downbeat = metric_piece(bpm=124, bars=cadence(5, False) * 6, beats_per_bar=4, drums=True,
                                     pickup_beats=1, sr=44100, seed=2)
    descriptors = analyze_file(encode(np.stack([samples, samples]), 44100, tmp_path / "bars.flac")).descriptors
    assert descriptors.bpm == pytest.approx(124, abs=0.5)
    assert descriptors.beats_per_bar == 4
    assert abs(descriptors.downbeat_offset - downbeat) < 0.07


def test_a_waltz_has_three_beats_to_the_bar():
    samples, downbeat = metric_piece(bpm=150, bars=cadence(7, False) * 8, beats_per_bar=3, sr=ANALYSIS_SR)
    features = features_of(samples)
    descriptors = _describe_features(features)
    assert descriptors.beats_per_bar == 3
    assert abs(descriptors.downbeat_offset - downbeat) < 0.07


def _describe_features(features):
    from cratesense.analysis.loudness import Loudness
    from cratesense.analysis.pipeline import _describe

    return _describe(features, Loudness(None, None, None, None), (70.0, 180.0))


def test_stage_versions_name_what_an_upgrade_changed():
    from cratesense.analysis.constants import (
        ANALYZER_VERSION,
        STAGE_VERSIONS,
        current_native_stages,
        native_stages_unchanged,
        stage_versions,
    )

    assert stage_versions(ANALYZER_VERSION) == STAGE_VERSIONS and native_stages_unchanged(ANALYZER_VERSION)
    earlier = {"fingerprint": 1, "tags": 1, "tempo": 1, "key": 1, "loudness": 2, "embedding": 2}
    assert stage_versions("f1.t1.t1.k1.l2.e2") == earlier  # downbeat and model, added later, are absent
    prep = "d1.p1.e1.c1.w1"  # downbeat, phrases, energy, cues, waveform: none reads the native view
    assert current_native_stages(f"f1.t1.t1.k1.l2.e2.{prep}.c1") == ("loudness", "cutoff")  # embedding 2, no model
    assert current_native_stages("f1.t1.t1.k1.l2.e2") == ("loudness",)  # its embedding and tags are not today's
    assert "loudness" not in current_native_stages(f"f1.t1.t2.k2.l1.e2.{prep}.c1")
    assert "cutoff" not in current_native_stages(f"f1.t1.t1.k1.l2.e2.{prep}")  # the cutoff stage (#26) reads the native view too
    assert stage_versions("0.3.1") == {} and current_native_stages("0.3.1") == ()  # another form: read in full
