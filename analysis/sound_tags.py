"""From the sound model's label scores to the words a DJ reads: genres, moods and other tags
(instruments, voice), each with a calibrated strength.

The model's 100 labels (musicnn's MagnaTagATune and Million Song Dataset tags, prefixed ``mtt:``
and ``msd:``) overlap and are badly calibrated against each other: "rock" is a frequent Last.fm
tag and scores high on much that is not rock, "house" is rare and scores low even on house. So:

1. each word of our vocabulary (``constants.TAG_WORDS``) takes the largest score among the
   labels that say it (``SOURCES``: "calm" is MTT's soft, quiet and slow and MSD's Mellow and
   chill...);
2. that raw score becomes a *strength*: its place among the raw scores the same word got on a
   reference library (quantiles measured by ``bench/tags.py --fit`` over a varied development
   corpus: real soundtracks and rendered classical, folk, pop, jazz and electronic pieces, shipped
   with the model as ``sound-model/calibration.json``). 0.9 means "more so than 9 tracks in 10 of
   that library";
3. a track's genres are its genre words at 0.8 or more, strongest first, at most 3; when none is
   that strong, its strongest one (every track gets a genre). Its moods likewise; its other tags
   (voice, instruments) are the words at 0.8 or more.

Pure and deterministic: a function of the model's scores.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cratesense.analysis.constants import GENRE_WORDS, MOOD_WORDS, OTHER_TAG_WORDS, TAG_WORDS

# Which of the model's labels say each word.
SOURCES: dict[str, tuple[str, ...]] = {
    # genres
    "rock": ("mtt:rock", "msd:rock", "msd:classic rock", "msd:alternative rock", "msd:hard rock",
             "msd:indie rock", "msd:Progressive rock"),
    "metal": ("mtt:metal", "msd:metal", "msd:heavy metal"),
    "punk": ("msd:punk",),
    "pop": ("mtt:pop", "msd:pop", "msd:indie pop"),
    "indie": ("msd:indie", "msd:alternative"),
    "electronic": ("mtt:electronic", "msd:electronic", "msd:electronica", "msd:electro", "mtt:synth"),
    "techno": ("mtt:techno",),
    "house": ("msd:House",),
    "dance": ("mtt:dance", "msd:dance"),
    "hip-hop": ("msd:Hip-Hop",),
    "soul": ("msd:soul", "msd:rnb"),
    "funk": ("msd:funk",),
    "jazz": ("msd:jazz",),
    "blues": ("msd:blues",),
    "folk": ("msd:folk",),
    "country": ("mtt:country", "msd:country"),
    "classical": ("mtt:classical", "mtt:classic", "mtt:harpsichord"),
    "opera": ("mtt:opera",),
    "choral": ("mtt:choral", "mtt:choir"),
    "ambient": ("mtt:ambient", "msd:ambient"),
    "new age": ("mtt:new age",),
    "chillout": ("msd:chillout", "msd:chill"),
    "easy listening": ("msd:easy listening",),
    "experimental": ("msd:experimental", "mtt:weird"),
    "indian": ("mtt:indian", "mtt:sitar"),
    # moods
    "calm": ("mtt:soft", "mtt:quiet", "mtt:slow", "msd:Mellow", "msd:chill"),
    "energetic": ("mtt:fast", "mtt:loud", "msd:party"),
    "aggressive": ("mtt:metal", "mtt:loud", "msd:hard rock", "msd:heavy metal", "msd:punk"),
    "happy": ("msd:happy",),
    "sad": ("msd:sad",),
    "danceable": ("mtt:dance", "msd:dance", "msd:party", "mtt:beat", "mtt:beats", "msd:House", "mtt:techno"),
    "sexy": ("msd:sexy",),
    "beautiful": ("msd:beautiful",),
    "strange": ("mtt:weird", "msd:experimental"),
    # other tags: voice and instruments
    "vocal": ("mtt:vocal", "mtt:vocals", "mtt:singing", "mtt:voice"),
    "instrumental": ("mtt:no vocals", "mtt:no vocal", "mtt:no voice", "msd:instrumental"),
    "female vocal": ("mtt:female", "mtt:woman", "mtt:female vocal", "mtt:female voice", "msd:female vocalists",
                     "msd:female vocalist"),
    "male vocal": ("mtt:male", "mtt:man", "mtt:male vocal", "mtt:male voice", "msd:male vocalists"),
    "guitar": ("mtt:guitar", "msd:guitar"),
    "acoustic": ("msd:acoustic",),
    "piano": ("mtt:piano",),
    "strings": ("mtt:strings", "mtt:violin", "mtt:cello"),
    "drums": ("mtt:drums",),
    "synth": ("mtt:synth",),
    "flute": ("mtt:flute",),
    "harp": ("mtt:harp",),
    "harpsichord": ("mtt:harpsichord",),
    "sitar": ("mtt:sitar",),
}

APPLIES = 0.8  # a word applies from this strength on: more so than 4 tracks in 5 of the reference library
MAX_GENRES = 3
MAX_MOODS = 3

# The reference library's quantiles (0, 5, ..., 100 %) of each word's raw score come with the
# model (``sound-model/calibration.json``, measured by bench/tags.py --fit): ``Reference``.
QUANTILES = np.linspace(0.0, 1.0, 21)
Reference = dict[str, tuple[float, ...]]


@dataclass(frozen=True, slots=True)
class SoundWords:
    genres: tuple[str, ...]  # best first
    moods: tuple[str, ...]
    other: tuple[str, ...]  # voice and instruments that apply
    strengths: dict[str, float]  # every vocabulary word, 0-1


def raw_word_scores(scores: dict[str, float]) -> dict[str, float]:
    """Each word's raw score: the largest of its labels' scores."""
    return {word: max(scores.get(label, 0.0) for label in SOURCES[word]) for word in TAG_WORDS}


def strength(word: str, raw: float, reference: Reference) -> float:
    """Where ``raw`` falls among the reference library's scores for ``word`` (0-1; the raw score
    itself for a word the reference does not know)."""
    quantiles = reference.get(word)
    if quantiles is None:
        return raw
    return float(np.interp(raw, quantiles, QUANTILES))


def describe(scores: dict[str, float], reference: Reference) -> SoundWords:
    raw = raw_word_scores(scores)
    exact = {word: strength(word, value, reference) for word, value in raw.items()}
    strengths = {word: round(value, 2) for word, value in exact.items()}

    def ranked(words: tuple[str, ...], limit: int, always: bool) -> tuple[str, ...]:
        """The words at APPLIES or more, strongest first; with ``always``, the strongest one
        even below it (every track gets a genre and a mood: its most pronounced one)."""
        order = sorted(words, key=lambda word: (-exact[word], -raw[word]))
        chosen = [word for word in order if strengths[word] >= APPLIES] or (order[:1] if always else [])
        return tuple(chosen[:limit])

    return SoundWords(
        genres=ranked(GENRE_WORDS, MAX_GENRES, always=True),
        moods=ranked(MOOD_WORDS, MAX_MOODS, always=True),
        other=ranked(OTHER_TAG_WORDS, len(OTHER_TAG_WORDS), always=False),
        strengths=strengths,
    )
