"""Musical keys and their notations: "A minor", Camelot ("8A") and Open Key ("1m").

A key is a tonic pitch class (0 = C … 11 = B) and a mode. Parsing accepts what taggers and DJ
software write ("Am", "A min", "F#m", "Gbm", "A♭ major", "8A", "1m") and rejects anything else.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_MAJOR_NAMES = ("C", "Db", "D", "Eb", "E", "F", "F#", "G", "Ab", "A", "Bb", "B")
_MINOR_NAMES = ("C", "C#", "D", "Eb", "E", "F", "F#", "G", "G#", "A", "Bb", "B")
_LETTER_PITCH = {"C": 0, "D": 2, "E": 4, "F": 5, "G": 7, "A": 9, "B": 11}
_ACCIDENTAL = {"": 0, "#": 1, "♯": 1, "b": -1, "♭": -1}

_NOTE_RE = re.compile(
    r"^\s*([A-Ga-g])\s*(#|♯|b|♭)?\s*(major|minor|maj|min|moll|dur|mi|m|M)?\s*$"
)
_CAMELOT_RE = re.compile(r"^\s*(1[0-2]|0?[1-9])\s*([ABab])\s*$")
_OPEN_KEY_RE = re.compile(r"^\s*(1[0-2]|0?[1-9])\s*([dmDM])\s*$")


@dataclass(frozen=True, slots=True)
class Key:
    tonic: int  # pitch class, 0 = C
    minor: bool

    @property
    def name(self) -> str:
        names = _MINOR_NAMES if self.minor else _MAJOR_NAMES
        return f"{names[self.tonic]} {'minor' if self.minor else 'major'}"

    @property
    def camelot(self) -> str:
        # C major is 8B and A minor 8A; each step round the wheel is a fifth (7 semitones).
        relative_major = (self.tonic + 3) % 12 if self.minor else self.tonic
        number = (7 * relative_major) % 12  # fifths above C
        return f"{(number + 7) % 12 + 1}{'A' if self.minor else 'B'}"

    @property
    def open_key(self) -> str:
        camelot_number = int(self.camelot[:-1])
        return f"{(camelot_number - 8) % 12 + 1}{'m' if self.minor else 'd'}"


def parse_key(text: str) -> Key | None:
    """The key a tag or a person wrote, or None when it is not a key."""
    if not text:
        return None
    match = _CAMELOT_RE.match(text)
    if match:
        number, letter = int(match.group(1)), match.group(2).upper()
        return _from_wheel(number, minor=letter == "A")
    match = _OPEN_KEY_RE.match(text)
    if match and not _NOTE_RE.match(text):
        number, letter = int(match.group(1)), match.group(2).lower()
        return _from_wheel((number + 6) % 12 + 1, minor=letter == "m")
    match = _NOTE_RE.match(text)
    if not match:
        return None
    letter, accidental, mode = match.groups()
    tonic = (_LETTER_PITCH[letter.upper()] + _ACCIDENTAL[accidental or ""]) % 12
    minor = mode is not None and mode != "M" and mode.lower() in ("m", "min", "minor", "moll", "mi")
    return Key(tonic, minor)


def _from_wheel(camelot_number: int, *, minor: bool) -> Key:
    fifths = (camelot_number - 8) % 12  # steps of a fifth from C major / A minor
    major_tonic = (7 * fifths) % 12
    return Key((major_tonic - 3) % 12, True) if minor else Key(major_tonic, False)
