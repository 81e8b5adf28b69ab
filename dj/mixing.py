"""What to play next, what sounds alike, and a mixable playlist, each with its reasons.

``next``: harmonic compatibility on the Camelot wheel (``harmony.py``), tempo within a pitch
range (±6 % by default, double and half time counted), and sound (the embedding's cosine).
Only key-compatible tracks within the pitch range are proposed while there are any; when there
are none, the tempo and then the key are relaxed, and the reasons say so.

The sound part is found without numpy (its import alone would cost a cold CLI most of its
time): each track's 128-bit sketch (``daemon/trackview.py``) ranks every candidate by its bit
distance (for "similar", the whole library's at once, in C); the best few hundred are then ranked
by their exact cosine.
"""

from __future__ import annotations

import math
from collections.abc import Sequence, Set
from dataclasses import dataclass, field

from cratesense.daemon.trackview import SKETCH_BYTES, SOUND_SKETCH_BITS, cosine, hamming_distances, nearest
from cratesense.dj.collection import Collection, Filters, Track
from cratesense.dj.duplicates import Recordings
from cratesense.dj.harmony import (
    WEIGHTS,
    compatible_codes,
    in_notation,
    relation,
    semitones,
    shifted,
    tempo_fit,
)
from cratesense.dj.transitions import Transition, plan_transition
from cratesense.errors import QueryError

PITCH_RANGE = 0.06
HARMONY, TEMPO, SOUND, ENERGY = 0.42, 0.27, 0.21, 0.10  # how much each part weighs in a "next" score
CLASH = 0.05  # what a mix whose drops would play on top of each other loses
RERANK = 300  # candidates ranked by their exact cosine, after the sketches picked them
FOLDS = (1.0, 2.0, 0.5)  # the tempo counted as is, at double time, at half time
DUPLICATE = "a duplicate: the same recording in another file (cratesense duplicates)"


@dataclass(frozen=True)
class Suggestion:
    track: Track
    score: float
    reasons: list[str] = field(default_factory=list)
    harmony: float | None = None
    tempo: float | None = None
    sound: float | None = None
    energy: float | None = None
    mix: Transition | None = None  # where to leave the previous track and bring this one in
    duplicate: bool = False  # the same recording as the track asked about, in another file


def _tempo_windows(bpm: float, pitch_range: float) -> list[tuple[float, float]]:
    """The BPM a candidate may have to be played at ``bpm`` within ``pitch_range``."""
    low, high = bpm / (1 + pitch_range), bpm / (1 - pitch_range)
    return [(low * fold, high * fold) for fold in FOLDS]


def next_tracks(collection: Collection, current: Track, *, limit: int = 10, pitch_range: float = PITCH_RANGE,
                notation: str = "camelot", exclude: Set[str] = frozenset(), per_artist: dict[str, int] | None = None,
                artist_cap: int | None = None, strict: bool = False, avoid: Sequence[str] = (),
                recordings: Recordings | None = None) -> list[Suggestion]:
    """What can follow ``current`` in a mix, best first. ``strict``: only key-compatible tracks
    within the pitch range, never a relaxed choice (a playlist stops instead). Never ``current``'s
    own recording in another file, nor that of a track of ``avoid`` (a playlist's tracks)."""
    if limit < 1:
        raise QueryError("the limit must be a positive number")
    if not 0 < pitch_range < 0.5:
        raise QueryError("the pitch range must be between 0 and 50 %")
    codes = compatible_codes(current.camelot) if current.camelot else None
    windows = _tempo_windows(current.bpm, pitch_range) if current.bpm else []
    attempts = [(codes, windows, None),
                (codes, [], "no compatible track within the pitch range: tempo relaxed"),
                (None, windows, "no key-compatible track: key relaxed"),
                (None, [], "nothing compatible: key and tempo relaxed")]
    recordings = recordings or Recordings(collection)
    for keys, tempi, note in attempts[:1] if strict else attempts:
        candidates = [c for c in collection.reader.mix_candidates(keys, tempi) if _allowed(c, current, exclude, per_artist,
                                                                                    artist_cap)]
        if candidates:
            found = _best(collection, current, candidates, limit, pitch_range, notation, [note] if note else [],
                          recordings, [current.content_key, *avoid])
            if found:  # (all of them other files of a recording already played: relax further)
                return found
    return []


def _best(collection: Collection, current: Track, candidates: list[tuple], limit: int, pitch_range: float,
          notation: str, relaxed: list[str], recordings: Recordings, played: list[str]) -> list[Suggestion]:
    my_sketch = collection.reader.sound_sketch(current.content_key)

    # Thousands of candidates: each part looked up, not computed, per candidate.
    harmony_of = {code: _harmony(current.camelot, code) for code in {c[2] for c in candidates}}
    tempo_of = {bpm: _tempo(current.bpm, bpm, pitch_range) for bpm in {c[1] for c in candidates}}
    sound_of_distance = [max(0.0, math.cos(math.pi * bits / SOUND_SKETCH_BITS)) for bits in range(SOUND_SKETCH_BITS + 1)]
    if my_sketch is None:
        sounds = [0.0] * len(candidates)
    else:
        packed = b"".join(c[4] or bytes(SKETCH_BYTES) for c in candidates)
        distances = hamming_distances(my_sketch, packed)
        sounds = [sound_of_distance[bits] if c[4] is not None else 0.0 for bits, c in zip(distances, candidates)]
    preliminary = [HARMONY * harmony_of[c[2]] + TEMPO * tempo_of[c[1]] + SOUND * sound
                   for c, sound in zip(candidates, sounds)]
    best = sorted(range(len(candidates)), key=preliminary.__getitem__, reverse=True)[:RERANK]
    shortlist = [candidates[index] for index in best]
    embeddings = collection.reader.embeddings([current.content_key, *(c[0] for c in shortlist)])
    entries = collection.reader.entries([current.content_key, *(c[0] for c in shortlist)])
    mine = embeddings.get(current.content_key)
    # One recording in two files is not a mix: another encode of the track, or of one already in
    # the playlist (``played``), is never proposed.
    recordings.know(entries)
    same = recordings.duplicates(of=played, among=[c[0] for c in shortlist])
    suggestions = []
    for key, bpm, camelot, _, _ in shortlist:
        if key in same:
            continue
        harmony = _harmony(current.camelot, camelot)
        tempo = _tempo(current.bpm, bpm, pitch_range)
        sound = max(0.0, cosine(mine, embeddings[key])) if mine is not None and key in embeddings else None
        entry = entries.get(key)
        energy = _energy(current.energy, entry.energy if entry else None)
        score = HARMONY * harmony + TEMPO * tempo + SOUND * (sound or 0.0) + ENERGY * energy
        suggestions.append((score, key, harmony, tempo, sound, energy))
    suggestions.sort(reverse=True)
    result = []
    for score, key, harmony, tempo, sound, energy in suggestions[:2 * limit]:
        track = collection.track(key)
        if track is None:  # gone since the candidates were read (a read-only view never changes)
            continue
        mix = plan_transition(current.phrases, current.bpm, current.energy, track.phrases, track.bpm, track.energy)
        reasons = [*relaxed, *_reasons(current, track, pitch_range, notation)]
        if sound is not None:
            reasons.append(f"sounds {_alike(sound)} (similarity {sound:.2f})")
        if mix is not None:
            reasons += mix.reasons
            score -= CLASH if mix.clash else 0.0
        elif current.energy is not None and track.energy is not None:
            reasons.append(f"energy {current.energy} → {track.energy}")
        result.append(Suggestion(track, round(score, 4), reasons, round(harmony, 3), round(tempo, 3),
                                 None if sound is None else round(sound, 3), round(energy, 3), mix))
    result.sort(key=lambda suggestion: suggestion.score, reverse=True)
    return result[:limit]


def _energy(current: int | None, candidate: int | None) -> float:
    """How well two energies follow each other: the same or one step 1, four steps apart 0;
    unknown: neither a match nor a clash."""
    if current is None or candidate is None:
        return 0.5
    return max(0.0, 1.0 - max(0, abs(candidate - current) - 1) / 3)


def _allowed(candidate, current: Track, exclude, per_artist, artist_cap) -> bool:
    key, _, _, artist, _ = candidate
    if key == current.content_key or key in exclude:
        return False
    return not (artist_cap and per_artist and artist and per_artist.get(artist.casefold(), 0) >= artist_cap)


def _harmony(current: str | None, candidate: str | None) -> float:
    if current is None or candidate is None:
        return 0.5  # unknown: neither a match nor a clash
    found = relation(current, candidate)
    return WEIGHTS[found] if found else 0.0


def _tempo(current: float | None, candidate: float | None, pitch_range: float) -> float:
    if current is None or candidate is None:
        return 0.5
    change = abs(tempo_fit(current, candidate).change)
    return max(0.0, 1.0 - change / pitch_range)


def _alike(similarity: float) -> str:
    return "very much alike" if similarity >= 0.9 else "alike" if similarity >= 0.75 else "somewhat alike" \
        if similarity >= 0.5 else "different"


def _reasons(current: Track, track: Track, pitch_range: float, notation: str) -> list[str]:
    reasons = []
    if current.key and track.key:
        found = relation(current.key.camelot, track.key.camelot)
        here, there = in_notation(current.key, notation), in_notation(track.key, notation)
        reasons.append(f"{here} → {there}: {found}" if found else f"{here} → {there}: keys clash")
        # a mix by key is only as good as the keys: say when one is a guess
        unsure = [f"{shown} of {whose} (strength {strength:.2f})" for shown, whose, strength, flagged in
                  ((here, "the track playing", current.key_strength, current.key_uncertain),
                   (there, "this one", track.key_strength, track.key_uncertain)) if flagged]
        if unsure:
            reasons.append(f"rests on an uncertain key: {', '.join(unsure)}; check the harmony by ear")
    elif not track.key:
        reasons.append("its key is unknown")
    if current.bpm and track.bpm:
        fit = tempo_fit(current.bpm, track.bpm)
        counted = f" (at {fit.counted_as})" if fit.counted_as else ""
        within = "" if abs(fit.change) <= pitch_range else f", beyond the ±{100 * pitch_range:g} % pitch range"
        how = "as it is" if abs(fit.change) < 0.0005 else \
            f"{100 * abs(fit.change):.1f} % {'faster' if fit.change > 0 else 'slower'}"
        reasons.append(f"{track.bpm:.1f} BPM{counted}: played {how} to match {current.bpm:.1f}{within}")
        shift = semitones(fit.speed)
        if track.key and abs(shift) >= 0.5:
            moved = shifted(track.key, round(shift))
            fits = relation(current.key.camelot, moved.camelot) if current.key else None
            reasons.append(f"without key lock, {shift:+.1f} semitones: it would sound in "
                           f"{in_notation(moved, notation)} ({fits or 'clashes'})")
    elif not track.bpm:
        reasons.append("its tempo is unknown")
    return reasons


def similar_tracks(collection: Collection, track: Track, *, limit: int = 10) -> list[Suggestion]:
    """Tracks that sound like ``track`` (the embedding's cosine), best first."""
    if limit < 1:
        raise QueryError("the limit must be a positive number")
    mine = collection.reader.sound_sketch(track.content_key)
    if mine is None:
        raise QueryError(f"{track.label} has no sound description yet (analysis pending, or described by the "
                         "catalog only)")
    rowids, packed = collection.reader.sketch_block()
    distances = hamming_distances(mine, packed)
    picked = [int(rowids[position]) for position in nearest(distances, RERANK + 1)]
    shortlist = [key for key in collection.reader.content_keys(picked).values() if key != track.content_key]
    embeddings = collection.reader.embeddings([track.content_key, *shortlist])
    reference = embeddings[track.content_key]
    ranked = sorted(((cosine(reference, embeddings[key]), key) for key in shortlist if key in embeddings), reverse=True)
    same = Recordings(collection).duplicates(of=[track.content_key], among=[key for _, key in ranked[:limit]])
    found = [(score, key, collection.track(key)) for score, key in ranked[:limit]]
    return [Suggestion(other, round(score, 4), [DUPLICATE] if key in same else [f"sounds {_alike(score)} (similarity "
                                                                                f"{score:.2f})"],
                       sound=round(score, 4), duplicate=key in same)
            for score, key, other in found if other is not None]


def playlist(collection: Collection, start: Track | None, *, length: int, filters: Filters | None = None,
             per_artist: int = 2, pitch_range: float = PITCH_RANGE, notation: str = "camelot") -> list[Suggestion]:
    """A mixable path from ``start``: each step compatible with the last (as ``next`` ranks
    them), no track twice, at most ``per_artist`` tracks by one artist. Without ``start``, the
    tracks ``filters`` select, in their order."""
    filters = filters or Filters()
    if length < 1:
        raise QueryError("the playlist length must be a positive number")
    if start is None:
        tracks = collection.tracks(Filters(**{**filters.__dict__, "limit": length}))
        if not tracks:
            raise QueryError("no track matches these filters")
        return [Suggestion(track, 1.0, []) for track in tracks]
    steps = [Suggestion(start, 1.0, ["the first track"])]
    used = {start.content_key}
    recordings = Recordings(collection)
    artists: dict[str, int] = {}
    if start.artist:
        artists[start.artist.casefold()] = 1
    while len(steps) < length:
        options = next_tracks(collection, steps[-1].track, limit=50, pitch_range=pitch_range, notation=notation,
                              exclude=used, per_artist=artists, artist_cap=per_artist, strict=True,
                              avoid=[step.track.content_key for step in steps], recordings=recordings)
        options = [option for option in options if _matches(option.track, filters)]
        if not options:
            break
        chosen = options[0]
        steps.append(chosen)
        used.add(chosen.track.content_key)
        if chosen.track.artist:
            artists[chosen.track.artist.casefold()] = artists.get(chosen.track.artist.casefold(), 0) + 1
    return steps


def _matches(track: Track, filters: Filters) -> bool:
    if filters.bpm and not (track.bpm and filters.bpm[0] <= track.bpm <= filters.bpm[1]):
        return False
    return not (filters.key and track.camelot != filters.key.camelot)

