"""The Camelot wheel and tempo arithmetic the mixing suggestions stand on (pure)."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cratesense.analysis.keys import parse_key
from cratesense.daemon.trackview import hamming_distances, nearest
from cratesense.dj.harmony import (
    DIAGONAL,
    RELATIVE,
    SAME,
    STEP,
    compatible_codes,
    in_notation,
    parse_user_key,
    relation,
    semitones,
    shifted,
    tempo_fit,
)


def test_the_wheels_neighbours():
    assert relation("8A", "8A") == SAME
    assert relation("8A", "9A") == relation("8A", "7A") == STEP
    assert relation("12A", "1A") == relation("1B", "12B") == STEP  # round the top of the wheel
    assert relation("8A", "8B") == relation("8B", "8A") == RELATIVE
    assert relation("8A", "9B") == DIAGONAL and relation("8B", "7A") == DIAGONAL
    assert relation("8A", "7B") is None and relation("8A", "10A") is None and relation("8A", "2A") is None
    assert sorted(compatible_codes("8A")) == ["7A", "8A", "8B", "9A", "9B"]
    assert sorted(compatible_codes("8A", diagonal=False)) == ["7A", "8A", "8B", "9A"]


def test_relative_keys_are_the_same_notes():
    for code in (f"{n}A" for n in range(1, 13)):
        minor, major = parse_key(code), parse_key(code.replace("A", "B"))
        assert (minor.tonic + 3) % 12 == major.tonic  # A minor and C major share their notes


def test_tempo_counts_double_and_half_time():
    fit = tempo_fit(124, 125)
    assert fit.counted_as is None and fit.change == pytest.approx(124 / 125 - 1)
    assert tempo_fit(87, 174).counted_as == "double time" and tempo_fit(87, 174).change == pytest.approx(0)
    assert tempo_fit(174, 88).counted_as == "half time" and tempo_fit(174, 88).change == pytest.approx(174 / 176 - 1)


def test_pitching_moves_the_key():
    assert semitones(2.0) == pytest.approx(12) and semitones(1.0) == 0
    assert semitones(1.06) == pytest.approx(12 * math.log2(1.06))  # ~ one semitone
    assert shifted(parse_key("Am"), 1).name == "Bb minor" and shifted(parse_key("Am"), 1).camelot == "3A"


def test_notations_and_bad_keys():
    key = parse_user_key("A minor")
    assert (in_notation(key, "camelot"), in_notation(key, "open-key"), in_notation(key, "musical")) == ("8A", "1m", "A minor")
    assert parse_user_key("8A") == parse_user_key("Am") == parse_user_key("1m") == key
    with pytest.raises(ValueError, match="not a key"):
        parse_user_key("H#")


@settings(max_examples=200, deadline=None)
@given(st.lists(st.binary(min_size=16, max_size=16), max_size=600), st.binary(min_size=16, max_size=16),
       st.integers(min_value=1, max_value=400))
def test_the_sketch_search_finds_exactly_the_nearest(sketches, query, count):
    """``similar`` ranks a whole library's sketches with C-level tricks on one big integer;
    they must agree with the plain popcount of each XOR, and pick the same nearest."""
    distances = hamming_distances(query, b"".join(sketches))
    exact = [(int.from_bytes(query, "little") ^ int.from_bytes(sketch, "little")).bit_count() for sketch in sketches]
    assert list(distances) == exact
    picked = nearest(distances, count)
    assert len(picked) == len(set(picked)) == min(count, len(sketches))
    assert sorted(exact[i] for i in picked) == sorted(exact)[:count]
