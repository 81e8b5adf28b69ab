"""Phrases, energy, cues and the waveform overview (#26), on generated arrangements whose section
starts are known by construction: encoded to FLAC and decoded by the pipeline, as a file is."""

from __future__ import annotations

import msgspec
import numpy as np
import pytest

from audiogen import arrangement, encode, file_features
from cratesense.analysis.constants import GRID_SLACK
from cratesense.analysis.cues import COLOURS, HOT_CUES, place_cues
from cratesense.analysis.energy import energy_curve, level_of, measures, raw_score, track_energy, track_raw
from cratesense.analysis.key import chroma, estimate_tuning
from cratesense.analysis.model import Phrase
from cratesense.analysis.phrases import bar_grid, find_phrases
from cratesense.analysis.pipeline import analyze_file
from cratesense.analysis.waveform import COLUMNS, levels

SR = 44100
FORM = (("intro", 16), ("build", 8), ("drop", 16), ("breakdown", 16), ("build", 8), ("drop", 16), ("outro", 16))
SHORT = (("intro", 8), ("drop", 8), ("breakdown", 8), ("drop", 8), ("outro", 8))


@pytest.fixture(scope="module")
def dance(tmp_path_factory):
    """A dance track in the form intro 16, build 8, drop 16, breakdown 16, build 8, drop 16,
    outro 16 at 126 BPM, and its section starts."""
    samples, starts = arrangement(FORM, bpm=126, tonic=9, minor=True, seed=5, lead_in=0.25)
    path = encode(samples, SR, tmp_path_factory.mktemp("phrases") / "dance.flac")
    return path, starts, file_features(path)


def test_boundaries_fall_within_a_bar_of_the_sections_and_labels_come_in_order(dance):
    path, starts, features = dance
    lines = bar_grid(126, 0.25, 0.25, 4, features.duration)
    tuning = estimate_tuning(features.pitch)
    phrases = find_phrases(features, chroma(features.pitch, tuning), energy_curve(features), lines, features.duration)
    bar = 4 * 60 / 126
    found = [phrase.start for phrase in phrases]
    assert len(found) == len(starts)
    for mine, truth in zip(found, starts):
        assert abs(mine - truth) < bar / 2  # the same bar line
    assert [phrase.label for phrase in phrases] == [kind for kind, _ in FORM]
    assert [phrase.bars for phrase in phrases[:-1]] == [bars for _, bars in FORM[:-1]]
    for phrase in phrases:  # every phrase starts on a bar line and says how sure it is
        assert np.min(np.abs(lines - phrase.start)) < 1e-3
        assert 0.0 <= phrase.confidence <= 1.0 and 1 <= phrase.energy <= 10
    drops = [p.energy for p in phrases if p.label == "drop"]
    calm = [p.energy for p in phrases if p.label in ("intro", "breakdown", "outro")]
    assert min(drops) > max(calm)  # the drops are the fullest parts


def test_analyze_file_places_cues_on_its_own_beat_grid_and_inside_the_track(tmp_path):
    samples, starts = arrangement(SHORT, bpm=128, tonic=2, minor=False, seed=8)
    analysis = analyze_file(encode(samples, SR, tmp_path / "short.flac"))
    described, duration = analysis.descriptors, analysis.audio.duration
    assert described.phrases and described.cues and 1 <= described.energy <= 10
    period = 60.0 / described.bpm
    for cue in described.cues:
        beats = (cue.start - described.beat_offset) / period
        off = abs(beats - round(beats)) * period
        # on the grid the exports write; a bar line a hair before 0 s is placed at 0 s
        assert off <= 0.010 or (cue.start == 0.0 and off <= GRID_SLACK), cue
        assert 0.0 <= cue.start < duration
        assert cue.colour.startswith("#") and len(cue.colour) == 7
    hot = {cue.hot: cue for cue in described.cues if cue.hot is not None}
    assert hot[0].name == "Mix in" and hot[0].start == described.phrases[0].start
    assert [hot[slot].name for slot in sorted(hot)] == [HOT_CUES[slot][0] for slot in sorted(hot)]
    memory = [cue for cue in described.cues if cue.hot is None]
    assert [cue.start for cue in memory] == [phrase.start for phrase in described.phrases]
    assert all(cue.colour == COLOURS[cue.name.lower()] for cue in memory)
    as_dict = msgspec.to_builtins(analysis)["descriptors"]  # what the journal stores
    assert as_dict["cues"][0]["name"] and as_dict["phrases"][0]["label"] and as_dict["waveform"]["data"]


def test_no_grid_no_phrases_and_no_cues():
    assert bar_grid(None, 0.1, 0.5, 4, 100.0) is None
    assert bar_grid(120.0, 0.1, None, 4, 100.0) is None  # a tempo but no bar 1
    assert place_cues(None, 100.0) is None and place_cues((), 100.0) is None


def test_a_cue_beyond_the_end_is_left_out():
    def phrase(start, label):
        return Phrase(start=start, end=start + 10, bars=8, label=label, energy=5, confidence=0.9, bar=1)

    cues = place_cues((phrase(0.5, "intro"), phrase(30.0, "drop"), phrase(61.0, "outro")), duration=60.0)
    assert all(0 <= cue.start < 60.0 for cue in cues)
    assert {cue.name for cue in cues if cue.hot is not None} == {"Mix in", "Drop"}  # no mix-out past the end
    assert place_cues((phrase(75.0, "intro"),), duration=60.0) is None


def test_the_grid_counts_from_the_first_bar_line_and_never_before_0_s():
    lines = bar_grid(120.0, 0.25, 2.25, 4, 20.0)
    assert lines[0] == pytest.approx(0.25) and np.allclose(np.diff(lines), 2.0) and lines[-1] < 20.0
    waltz = bar_grid(150.0, 0.0, 0.4, 3, 10.0)
    assert waltz[0] == pytest.approx(0.4) and np.allclose(np.diff(waltz), 1.2)
    early = bar_grid(120.0, 0.497, 0.0, 4, 20.0)  # bar 1 on the grid is 3 ms before 0 s: it is the one at 0 s
    assert early[0] == 0.0 and early[1] == pytest.approx(1.997)


def test_a_short_piece_has_no_phrases(tmp_path):
    samples, _ = arrangement((("drop", 4),), bpm=128, seed=1)
    analysis = analyze_file(encode(samples, SR, tmp_path / "loop.flac"))
    assert analysis.descriptors.bpm and analysis.descriptors.phrases is None and analysis.descriptors.cues is None


@pytest.fixture(scope="module")
def pairs(tmp_path_factory):
    """One arrangement as written, without its drums, without its bass, sparser, and louder."""
    folder = tmp_path_factory.mktemp("energy")
    drums = {"kick", "hat", "open_hat", "snare", "roll", "perc", "crash"}
    variants = {"full": {}, "no drums": {"muted": drums}, "no bass": {"muted": {"bass"}},
                "sparser": {"muted": {"lead", "chords", "pad", "open_hat", "perc"}}, "louder": {"gain": 1.6}}
    found = {}
    for name, options in variants.items():
        samples, starts = arrangement(SHORT, bpm=124, tonic=7, seed=11, **options)
        features = file_features(encode(samples, SR, folder / f"{name}.flac"))
        found[name] = (energy_curve(features), features.duration, starts)
    return found


@pytest.mark.parametrize("lower, higher", [("no drums", "full"), ("no bass", "full"), ("sparser", "full"),
                                           ("full", "louder")])
def test_energy_is_monotone_in_what_the_arrangement_holds(pairs, lower, higher):
    (low_curve, low_duration, starts), (high_curve, high_duration, _) = pairs[lower], pairs[higher]
    assert track_raw(low_curve, low_duration) < track_raw(high_curve, high_duration)
    assert track_energy(low_curve, low_duration) <= track_energy(high_curve, high_duration)
    ends = starts[1:] + [low_duration]
    for (kind, _), start, end in zip(SHORT, starts, ends):
        quiet, full = raw_score(measures(low_curve, start, end)), raw_score(measures(high_curve, start, end))
        assert quiet <= full + 1e-3, (kind, quiet, full)  # a section that never held the part: the same


def test_energy_levels_span_the_scale():
    assert level_of(-100.0) == 1 and level_of(100.0) == 10
    levels_seen = [level_of(raw) for raw in np.linspace(-2, 3, 200)]
    assert levels_seen == sorted(levels_seen) and set(levels_seen) == set(range(1, 11))


def test_waveform_overview_follows_the_bands(dance):
    path, starts, features = dance
    from cratesense.analysis.waveform import overview

    waveform = overview(features.mel, features.duration)
    found = levels(waveform)
    assert found.shape == (COLUMNS, 3) and found.max() == 255
    seconds = (np.arange(COLUMNS) + 0.5) * waveform.column_seconds
    breakdown = (seconds > starts[3] + 1) & (seconds < starts[4] - 1)
    drop = (seconds > starts[2] + 1) & (seconds < starts[3] - 1)
    assert found[breakdown, 0].mean() < 0.5 * found[drop, 0].mean()  # no kick, no bass: the lows fall away
    assert waveform.column_seconds * COLUMNS == pytest.approx(features.duration, abs=0.2)
