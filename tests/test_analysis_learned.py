"""The learned sound model (analysis/learned.py): the shipped files, musicnn's input computed as
the package computes it, the patches chosen where the music is, the model's failure modes."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from cratesense.analysis import learned
from cratesense.errors import ModelError

ROOT = Path(__file__).resolve().parent.parent


def _converter():
    """scripts/convert_musicnn.py, for its reference signal (the one formula both sides use)."""
    spec = importlib.util.spec_from_file_location("convert_musicnn", ROOT / "scripts" / "convert_musicnn.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def model():
    return learned.load_model()


def manifest() -> dict:
    return json.loads((learned.model_folder() / learned.MANIFEST).read_text())


def test_the_model_files_ship_with_their_licence_and_provenance():
    folder = learned.model_folder()
    described = manifest()
    assert "ISC" in described["package_licence"] and described["package"] == "musicnn==0.1.0"
    assert "Permission to use, copy, modify" in (folder / "LICENSE-musicnn").read_text()
    for entry in described["models"].values():
        assert (folder / entry["file"]).stat().st_size == entry["bytes"]
        assert len(entry["labels"]) == 50 and entry["training_data"]


def test_our_mel_and_onnx_runtime_give_tensorflows_scores(model):
    """The reference signal's patch through our NumPy mel and the shipped ONNX files gives the
    scores TensorFlow gave through librosa's mel and musicnn's checkpoints (musicnn.json)."""
    convert = _converter()
    signal = convert.reference_signal()
    start = convert.REFERENCE_OFFSET * learned.HOP - learned.N_FFT // 2
    output = model.infer(signal[start : start + learned.WINDOW_SAMPLES][None])
    described = manifest()["models"]
    expected = np.array(described["mtt"]["reference_tags"] + described["msd"]["reference_tags"])
    assert np.abs(np.array(list(output.scores.values())) - expected).max() < 1e-4
    penultimate = np.array(described["mtt"]["reference_penultimate"] + described["msd"]["reference_penultimate"])
    assert np.abs(output.features - penultimate).max() < 1e-3 * max(1.0, np.abs(penultimate).max())


def test_the_mel_is_slaneys_filterbank():
    bank = learned.slaney_filterbank()
    assert bank.shape == (96, 257)
    # Slaney normalisation: each triangle's area is 2 / its width in Hz times the bin spacing.
    centres = np.argmax(bank, axis=1)
    assert np.all(np.diff(centres) >= 0) and centres[-1] > 240
    # Below 1 kHz the bands are evenly spaced (the linear part of the scale), so their areas
    # are equal; above it they widen and, normalised by width, keep the same area too.
    areas = bank.sum(axis=1)
    assert np.allclose(areas[:20], areas[0], rtol=0.05) and np.allclose(areas[40:90], areas[0], rtol=0.1)


def test_loud_mels_do_not_overflow_the_float16_step():
    """musicnn rounds the mel to float16 before log10(10000 x + 1): the product must not be
    taken in float16 (NumPy 2 keeps float16 and turns everything above 6.55 into infinity)."""
    loud = np.sin(2 * np.pi * 440 * np.arange(learned.WINDOW_SAMPLES) / learned.RATE).astype(np.float32)
    patches = learned.log_mel_patches(loud[None])
    assert np.isfinite(patches).all() and patches.max() > 5


def test_the_same_audio_gives_the_same_scores_across_loads(model):
    window = (np.random.default_rng(5).standard_normal((2, learned.WINDOW_SAMPLES)) * 0.1).astype(np.float32)
    first = model.infer(window)
    again = learned.load_model().infer(window)
    assert first.scores == again.scores
    assert np.array_equal(first.features, again.features)
    timbre = np.random.default_rng(6).standard_normal(64)
    embedding = model.embed(first.features, timbre / np.linalg.norm(timbre))
    assert embedding == learned.load_model().embed(again.features, timbre / np.linalg.norm(timbre))
    assert len(embedding) == 64 and abs(np.linalg.norm(embedding) - 1) < 1e-4


def test_the_embedding_is_the_two_views_side_by_side_weighed(model):
    """Version 4: the cosine of two embeddings is the weighted mean of their two halves' cosines."""
    from cratesense.analysis.embedding import MODEL_DIMENSIONS, MODEL_WEIGHT, cosine

    rng = np.random.default_rng(7)
    windows = [(rng.standard_normal((1, learned.WINDOW_SAMPLES)) * level).astype(np.float32) for level in (0.1, 0.02)]
    features = [model.infer(window).features for window in windows]
    timbres = [vector / np.linalg.norm(vector) for vector in rng.standard_normal((2, 64))]
    first, second = (np.array(model.embed(f, t)) for f, t in zip(features, timbres))
    halves = [cosine(first[:MODEL_DIMENSIONS], second[:MODEL_DIMENSIONS]),
              cosine(first[MODEL_DIMENSIONS:], second[MODEL_DIMENSIONS:])]
    assert cosine(first, second) == pytest.approx(MODEL_WEIGHT * halves[0] + (1 - MODEL_WEIGHT) * halves[1], abs=1e-4)
    assert np.linalg.norm(first[:MODEL_DIMENSIONS]) == pytest.approx(np.sqrt(MODEL_WEIGHT), abs=1e-4)


def _copy_of_models(tmp_path: Path) -> Path:
    folder = tmp_path / "models"
    shutil.copytree(learned.model_folder(), folder)
    return folder


def test_a_damaged_model_file_is_one_clear_error(tmp_path):
    folder = _copy_of_models(tmp_path)
    damaged = folder / manifest()["models"]["msd"]["file"]
    data = bytearray(damaged.read_bytes())
    data[len(data) // 2] ^= 0xFF
    damaged.write_bytes(bytes(data))
    with pytest.raises(ModelError, match="musicnn-msd.onnx is damaged"):
        learned.load_model(folder)


def test_a_damaged_embedding_projection_is_one_clear_error(tmp_path):
    folder = _copy_of_models(tmp_path)
    projection = folder / manifest()["embedding"]["file"]
    projection.write_bytes(projection.read_bytes()[:-10])
    with pytest.raises(ModelError, match="embedding.npz is damaged"):
        learned.load_model(folder)


def test_a_missing_model_file_or_manifest_is_one_clear_error(tmp_path):
    folder = _copy_of_models(tmp_path)
    (folder / manifest()["models"]["mtt"]["file"]).unlink()
    with pytest.raises(ModelError, match="musicnn-mtt.onnx is missing"):
        learned.load_model(folder)
    (folder / learned.MANIFEST).unlink()
    with pytest.raises(ModelError, match="manifest is missing"):
        learned.load_model(folder)


# --- the patches -----------------------------------------------------------------------------------


def _collect(audio: np.ndarray, rate: int, patches: int = 4, block: int = 65536) -> np.ndarray:
    collector = learned.PatchCollector(rate, learned.RATE, learned.WINDOW_SAMPLES, patches)
    for start in range(0, audio.shape[1], block):
        collector.feed(audio[:, start : start + block])
    return collector.finish()


def _tone(seconds: float, rate: int, frequency: float = 440.0, level: float = 0.3) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    wave = (level * np.sin(2 * np.pi * frequency * t)).astype(np.float32)
    return np.stack([wave, wave])


def test_patches_are_taken_where_the_music_is_not_in_silence():
    rate = 44100
    silence = np.zeros((2, 40 * rate), np.float32)
    audio = np.concatenate([silence, _tone(30, rate), silence], axis=1)
    windows = _collect(audio, rate)
    assert windows.shape == (4, learned.WINDOW_SAMPLES)
    levels = 20 * np.log10(np.sqrt(np.mean(np.square(windows), axis=1)))
    assert np.allclose(levels, learned.LEVEL_DBFS, atol=0.5)  # each is the tone, none the silence around it


def test_patches_do_not_depend_on_how_the_stream_is_cut():
    rate = 48000
    rng = np.random.default_rng(2)
    audio = (rng.standard_normal((2, 60 * rate)) * 0.1).astype(np.float32)
    assert np.array_equal(_collect(audio, rate, block=65536), _collect(audio, rate, block=4801))


def test_patches_are_resampled_to_the_models_rate():
    rate = 44100
    windows = _collect(_tone(20, rate, frequency=1000.0), rate, patches=2)
    spectrum = np.abs(np.fft.rfft(windows[0]))
    assert np.argmax(spectrum) * learned.RATE / windows.shape[1] == pytest.approx(1000.0, abs=2.0)


def test_a_long_stream_keeps_a_bounded_number_of_candidates_across_its_length():
    rate = 8000
    collector = learned.PatchCollector(rate, learned.RATE, learned.WINDOW_SAMPLES, 3)
    block = (np.random.default_rng(3).standard_normal((1, rate * 10)) * 0.1).astype(np.float32)
    for _ in range(720):  # two hours
        collector.feed(block)
        assert len(collector._windows) <= learned.CANDIDATES_PER_PATCH * 3
    starts = sorted(collector._windows)
    assert starts[-1] > 0.6 * 7200 * rate  # spread over the whole stream, not only its start


def test_a_track_shorter_than_a_patch_gives_one_and_silence_none():
    rate = 44100
    assert _collect(_tone(2.0, rate), rate).shape == (1, learned.WINDOW_SAMPLES)
    assert _collect(np.zeros((2, 30 * rate), np.float32), rate).shape == (0, learned.WINDOW_SAMPLES)


# --- through the pipeline -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def track_file(tmp_path_factory):
    from audiogen import encode, synth_track

    folder = tmp_path_factory.mktemp("learned")
    return encode(synth_track(bpm=124, tonic=9, minor=True, seconds=40, seed=3), 44100, folder / "track.flac")


def test_the_pipeline_tags_a_track_and_gives_the_same_words_every_time(track_file):
    from cratesense.analysis.constants import GENRE_WORDS, MOOD_WORDS, OTHER_TAG_WORDS
    from cratesense.analysis.pipeline import analyze_file

    first, again = (analyze_file(track_file).descriptors for _ in range(2))
    assert first.genres and set(first.genres) <= set(GENRE_WORDS)
    assert set(first.moods or ()) <= set(MOOD_WORDS) and set(first.sound_tags or ()) <= set(OTHER_TAG_WORDS)
    assert len(first.embedding) == 64 and abs(np.linalg.norm(first.embedding) - 1) < 1e-3
    assert first.model_error is None and first.bpm == pytest.approx(124, abs=0.5)
    assert (first.genres, first.moods, first.tag_strengths, first.embedding) == (
        again.genres, again.moods, again.tag_strengths, again.embedding)


def test_with_a_damaged_model_every_other_descriptor_is_still_recorded(track_file, tmp_path):
    """Through the real CLI and its worker processes: one clear error, the rest analyzed."""
    import os
    import subprocess
    import sys

    folder = _copy_of_models(tmp_path)
    damaged = folder / manifest()["models"]["msd"]["file"]
    damaged.write_bytes(damaged.read_bytes()[:1000])
    env = {**os.environ, "CRATESENSE_SOUND_MODEL": str(folder)}
    result = subprocess.run([sys.executable, "-m", "cratesense", "analyze", str(track_file)], env=env,
                            capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    descriptors = json.loads(result.stdout.splitlines()[0])["descriptors"]
    assert descriptors["bpm"] == pytest.approx(124, abs=0.5) and descriptors["key"] and descriptors["loudness_lufs"]
    assert descriptors["genres"] is None and descriptors["embedding"] is None
    assert "musicnn-msd.onnx is damaged" in descriptors["model_error"]
    assert "the sound model cannot be used" in result.stderr and "musicnn-msd.onnx is damaged" in result.stderr


def test_an_upgrade_of_the_model_keeps_the_loudness_and_one_of_loudness_keeps_the_tags(track_file):
    """Stages are recomputed alone: kept fields are not measured again (planted values stay)."""
    from cratesense.analysis.constants import NATIVE_STAGE_FIELDS
    from cratesense.analysis.pipeline import analyze_file

    full = analyze_file(track_file).descriptors
    planted_loudness = dict.fromkeys(NATIVE_STAGE_FIELDS["loudness"], -42.0)
    model_again = analyze_file(track_file, native_results=planted_loudness).descriptors
    assert model_again.loudness_lufs == -42.0 and model_again.genres == full.genres
    assert model_again.embedding == full.embedding
    planted_words = {"genres": ("opera",), "moods": (), "sound_tags": (), "tag_strengths": {}, "embedding": (1.0,)}
    loudness_again = analyze_file(track_file, native_results=planted_words).descriptors
    assert loudness_again.genres == ("opera",) and loudness_again.embedding == (1.0,)
    assert loudness_again.loudness_lufs == full.loudness_lufs


@pytest.mark.parametrize("rate", [8000, 22050, 48000, 96000])
def test_patches_come_at_the_models_rate_from_any_rate(rate):
    windows = _collect(_tone(20, rate, frequency=1000.0), rate, patches=2)
    assert windows.shape == (2, learned.WINDOW_SAMPLES) and windows.dtype == np.float32
    spectrum = np.abs(np.fft.rfft(windows[0]))
    assert np.argmax(spectrum) * learned.RATE / windows.shape[1] == pytest.approx(1000.0, abs=2.0)


def test_a_projection_of_another_layout_is_one_clear_error(tmp_path):
    """An embedding.npz of version 3's layout (one 64-row projection), its checksum matching."""
    folder = _copy_of_models(tmp_path)
    projection = folder / manifest()["embedding"]["file"]
    with np.load(projection) as stored:
        np.savez(projection, mean=stored["mean"], components=np.zeros((64, stored["mean"].size), np.float32),
                 scale=np.ones(64, np.float32))
    entries = manifest()
    entries["embedding"]["sha256"] = hashlib.sha256(projection.read_bytes()).hexdigest()
    (folder / learned.MANIFEST).write_text(json.dumps(entries))
    with pytest.raises(ModelError, match="embedding.npz cannot be read"):
        learned.load_model(folder)


def test_a_damaged_calibration_is_one_clear_error(tmp_path):
    folder = _copy_of_models(tmp_path)
    (folder / manifest()["calibration"]["file"]).write_text("{}")
    with pytest.raises(ModelError, match="calibration.json is damaged"):
        learned.load_model(folder)
