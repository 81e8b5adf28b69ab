"""Key, tempo and bars on dance productions (#29), pinned on generated signals: tests/edmgen.py
writes and synthesizes each track (the truth is what it was written in), and the analysis hears
it through the same streamed features the agent computes."""

from __future__ import annotations

import numpy as np
import pytest

import edmgen
from audiogen import encode, synth_track
from cratesense.analysis.constants import KEY_UNCERTAIN_BELOW, key_uncertain
from cratesense.analysis.features import ONSET_RATE, FeatureExtractor
from cratesense.analysis.key import chroma, estimate_key, estimate_tuning
from cratesense.analysis.keys import Key
from cratesense.analysis.pipeline import analyze_file
from cratesense.analysis.tempo import estimate_tempo


def features_of(samples: np.ndarray):
    """The streamed features of a production (the analysis stream's rate, fed in odd blocks)."""
    from audiogen import _resample

    mono = _resample(samples, edmgen.RATE, 11025).mean(axis=0)
    extractor = FeatureExtractor()
    for start in range(0, mono.size, 7000):
        extractor.feed((np.clip(mono[start : start + 7000], -1, 1) * 32767).astype(np.int16))
    return extractor.finish()


def key_of(features):
    tuning = estimate_tuning(features.pitch)
    return estimate_key(chroma(features.pitch, tuning), features.energy, tuning, features.bass, features.notes)


def tempo_of(features, bpm_range=(70.0, 180.0)):
    return estimate_tempo(
        (features.onset_fine, features.onset_slow), ONSET_RATE, bpm_range, phase_onset=features.onset,
        low_onset=features.onset_low, high_onset=features.onset_high,
    )


def production(name: str, genre: str, **fixed) -> tuple[edmgen.Song, np.ndarray]:
    song = edmgen.compose(name, genre, "A", seconds=fixed.pop("seconds", 75.0), **fixed)
    return song, edmgen.render_synth(song)


@pytest.mark.parametrize("tonic", [0, 5, 9])
def test_a_minor_bass_riff_over_a_four_on_the_floor_kick_reads_its_key(tonic):
    """No chords at all: a bass riff and a hook over a kick on every beat, as techno is made."""
    song, samples = production(f"riff-{tonic}", "techno", tonic=tonic, minor=True, mode="aeolian", chords=False,
                               detune_cents=0.0)
    assert "riff-led" in song.tags and not any(note.part == "pad" for note in song.notes)
    found = key_of(features_of(samples))
    assert found is not None and found.key == Key(tonic, True), f"{song.key_name} read as {found}"


_DETUNED_MISS = "#29 known miss: C minor read a fourth up, as F minor (strength 0.69); see docs/notes-2026-12/issue-29.md"


@pytest.mark.parametrize("genre, tonic", [("techno", 0), ("trance", 7)])
def test_a_detuned_production_reports_its_tuning(genre, tonic):
    """The whole production 30 cents sharp of A4 = 440 Hz (a sample pitched up, a synth's master
    tune): the tuning says by how much it is off."""
    _, samples = production(f"detuned-{genre}", genre, tonic=tonic, minor=True, mode="aeolian", detune_cents=30.0)
    found = key_of(features_of(samples))
    assert found is not None and found.tuning_cents == pytest.approx(30.0, abs=8.0)


@pytest.mark.parametrize(
    "genre, tonic", [pytest.param("techno", 0, marks=pytest.mark.xfail(strict=True, reason=_DETUNED_MISS)), ("trance", 7)]
)
def test_a_detuned_production_reads_its_key(genre, tonic):
    song, samples = production(f"detuned-{genre}", genre, tonic=tonic, minor=True, mode="aeolian", detune_cents=30.0)
    found = key_of(features_of(samples))
    assert found is not None and found.key == Key(tonic, True), f"{song.key_name} read as {found}"


@pytest.mark.parametrize("swing", [0.0, 0.3])
def test_house_at_124_with_swung_hats_reads_124(swing):
    """Not two thirds of it (83, the triplet a swung hat suggests) nor three halves (186)."""
    _, samples = production(f"house-{swing}", "house", bpm=124.0, swing=swing)
    assert tempo_of(features_of(samples)).bpm == pytest.approx(124.0, abs=1.0)


@pytest.mark.parametrize("bpm", [172.0, 174.0])
def test_drum_and_bass_reads_its_tempo_not_half_time(bpm):
    """The snare on 2 and 4 of 174 is a backbeat on the off-beats of 87: a DJ counts 174."""
    _, samples = production(f"dnb-{bpm}", "dnb", bpm=bpm)
    assert tempo_of(features_of(samples)).bpm == pytest.approx(bpm, abs=1.0)


def test_dubstep_and_trance_at_140_read_140_not_70():
    for genre in ("dubstep", "trance"):
        _, samples = production(f"{genre}-140", genre, bpm=140.0)
        assert tempo_of(features_of(samples)).bpm == pytest.approx(140.0, abs=1.0), genre


def test_a_32_bar_drum_intro_leaves_bar_1_on_the_grid(tmp_path):
    """32 bars of kick and hats before the first note: the agent's bar grid (the first downbeat,
    four beats a bar) lands on the production's bar lines, through a real file and the pipeline."""
    song, samples = production("long-intro", "house", bpm=126.0, intro=32, seconds=110.0)
    first_note = min(song.seconds(note.start) for note in song.notes)
    assert first_note >= song.seconds(4 * 32) - 0.01
    path = encode(samples, edmgen.RATE, tmp_path / "intro.flac")
    found = analyze_file(path).descriptors
    assert found.bpm == pytest.approx(126.0, abs=1.0)
    assert found.beats_per_bar == 4
    bar = 240.0 / found.bpm
    off = (found.downbeat_offset - song.downbeats[0] + bar / 2) % bar - bar / 2
    assert abs(off) <= 0.07, f"bar 1 at {found.downbeat_offset} s, the bars start at {song.downbeats[0]} s"


def test_an_uncertain_key_is_flagged_as_such():
    """A track that spends half its length in D minor and half in G# minor (a tritone away: no
    key holds both) is flagged uncertain; a plain cadence is not."""
    halves = [
        edmgen.render_synth(edmgen.compose(f"halves-{tonic}", "techno", "A", seconds=50.0, tonic=tonic, minor=True,
                                           mode="aeolian", chords=True, detune_cents=0.0, intro=4))
        for tonic in (2, 8)
    ]
    both = key_of(features_of(np.concatenate(halves, axis=1)))
    assert both is None or key_uncertain(both.strength), f"two keys read {both}, strength at or above {KEY_UNCERTAIN_BELOW}"
    clear = key_of(features_of(synth_track(tonic=9, minor=True, seconds=30, sr=edmgen.RATE)))
    assert clear is not None and clear.key == Key(9, True) and not key_uncertain(clear.strength), clear
