"""Harmonic mixing on the Camelot wheel, and what a tempo change does to a key (pure).

The wheel's neighbours mix well: the same key; one step round the wheel with the same letter
(a fifth up or down: 8A to 7A or 9A); the relative major or minor (8A to 8B). One step with a
letter change (8A to 9B, the "diagonal" or energy move) works too, and is weighted lower.

Played faster or slower without key lock, a track is pitched: a speed ratio r moves it by
12·log2(r) semitones, so a track sped up by 6 % sounds about a semitone higher.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import overload

from cratesense.analysis.keys import Key, parse_key

SAME, STEP, RELATIVE, DIAGONAL = "same key", "one step round the wheel", "relative major/minor", "diagonal (energy) move"
# how well a key mixes into another, by their relation on the wheel
WEIGHTS = {SAME: 1.0, STEP: 0.9, RELATIVE: 0.85, DIAGONAL: 0.6}
NOTATIONS = ("camelot", "open-key", "musical")
CAMELOT_CODES = tuple(f"{number}{letter}" for number in range(1, 13) for letter in "AB")


def camelot_parts(camelot: str) -> tuple[int, str]:
    return int(camelot[:-1]), camelot[-1]


def relation(current: str, candidate: str) -> str | None:
    """How the key with Camelot code ``candidate`` mixes after ``current``, or None."""
    number_a, letter_a = camelot_parts(current)
    number_b, letter_b = camelot_parts(candidate)
    step = (number_b - number_a) % 12
    if letter_a == letter_b:
        return SAME if step == 0 else STEP if step in (1, 11) else None
    if step == 0:
        return RELATIVE
    # the diagonal: minor to major one step up (8A to 9B), major to minor one step down (8B to 7A)
    if (letter_a == "A" and step == 1) or (letter_a == "B" and step == 11):
        return DIAGONAL
    return None


def compatible_codes(camelot: str, *, diagonal: bool = True) -> list[str]:
    """Every Camelot code that mixes after ``camelot``."""
    return [code for code in CAMELOT_CODES
            if (found := relation(camelot, code)) is not None and (diagonal or found != DIAGONAL)]


def semitones(speed: float) -> float:
    """The pitch shift, in semitones, of playing a track at ``speed`` times its tempo (no key lock)."""
    return 12.0 * math.log2(speed)


def shifted(key: Key, steps: int) -> Key:
    return Key((key.tonic + steps) % 12, key.minor)


@overload
def in_notation(key: Key, notation: str) -> str: ...
@overload
def in_notation(key: Key | None, notation: str) -> str | None: ...


def in_notation(key: Key | None, notation: str) -> str | None:
    """``key`` written in the user's notation (Camelot "8A", Open Key "1m", or "A minor")."""
    if key is None:
        return None
    if notation == "camelot":
        return key.camelot
    if notation == "open-key":
        return key.open_key
    return key.name


def parse_user_key(text: str) -> Key:
    """A key as a user types it ("8A", "Am", "A minor", "1m"); ValueError when it is no key."""
    key = parse_key(text)
    if key is None:
        raise ValueError(f"{text!r} is not a key (try 8A, Am, \"A minor\" or 1m)")
    return key


@dataclass(frozen=True)
class TempoFit:
    speed: float  # how fast the candidate must play to match the current tempo (1.03: 3 % faster)
    counted_as: str | None  # "double time" / "half time" when it matches that way

    @property
    def change(self) -> float:
        return self.speed - 1.0


def tempo_fit(current: float, candidate: float) -> TempoFit:
    """How a track at ``candidate`` BPM meets one at ``current`` BPM: directly, or counted at
    double or half time (a 174 BPM drum & bass track mixes with an 87 BPM one)."""
    options = [(candidate, None), (candidate / 2, "double time"), (candidate * 2, "half time")]
    effective, counted_as = min(options, key=lambda option: abs(math.log(current / option[0])))
    return TempoFit(current / effective, counted_as)
