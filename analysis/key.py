"""Musical key: estimate the tuning, align the pitch spectra to it, weigh the evidence for each
of the 24 keys, and give the key its probability as its strength.

The evidence (``EVIDENCE``, out of the ``CANDIDATES`` bench/fit_key.py can weigh): the whole
piece's chroma against Temperley's profiles with the harmonics every real note also sounds; the
notes actually played above the bass, from the unfolded spectrum with each note's 3rd, 5th, 6th
and 7th harmonics taken away from the notes above it (a saw bass's 5th harmonic is a major third
nobody played: what read minor productions as major, and a tonic as a dominant) against the
plain profiles, their share on each key's tonic and their third; the bass notes found by their
summed harmonics (down there a semitone is one FFT bin and a kick rings, harmonics are sharp)
and where they come home to; whether the tonic is the note the bass and the notes dwell on most
(a riff is built on its tonic: what tells it from the key a fourth up, whose dominant it would
be); a prior for minor keys; and the earlier analyzer's score (the whole piece, its opening and
its ending, the bass under it and under the final cadence). Two sets of weights, one for
productions (drums and synths under every frame) and one for played music (that earlier score
alone: it read chorales and cadences best), are blended by how the piece sounds
(``character``). The weights are a multinomial logistic fit on bench/accuracy.py's tuning folds
(bench/fit_key.py); the strength is the softmax probability of the chosen key, so it says how
often such a key is right.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cratesense.analysis.decode import ANALYSIS_RATE
from cratesense.analysis.features import CHROMA_HOP, NOTE_DECIMATION, NOTE_LOW_MIDI, NOTE_SUBBINS, SUBBINS_PER_SEMITONE
from cratesense.analysis.keys import Key


def _with_harmonics(profile: np.ndarray, count: int = 5, decay: float = 0.7) -> np.ndarray:
    """The chroma a key's notes make when each sounds its first ``count`` harmonics (the h-th
    at ``decay`` ** (h - 1) of the fundamental): what a spectrum-based chroma really shows."""
    sounded = np.zeros(12)
    for harmonic in range(1, count + 1):
        shift = int(round(12 * np.log2(harmonic))) % 12
        sounded += decay ** (harmonic - 1) * np.roll(profile, shift)
    sounded.flags.writeable = False
    return sounded


# Temperley's key profiles (Kostka-Payne corpus, 2007): sharper than Krumhansl-Kessler's probe-tone
# ratings at telling a key from its relative major/minor.
_MAJOR_PROFILE = np.array([0.748, 0.060, 0.488, 0.082, 0.670, 0.460, 0.096, 0.715, 0.104, 0.366, 0.057, 0.400])
_MINOR_PROFILE = np.array([0.712, 0.084, 0.474, 0.618, 0.049, 0.460, 0.105, 0.747, 0.404, 0.067, 0.133, 0.330])
# Krumhansl and Kessler's probe-tone ratings (1982): flatter than Temperley's, they weigh the
# tonic triad's notes against the rest rather than the scale against the chromatic notes.
_MAJOR_KK = np.array([6.35, 2.23, 3.48, 2.33, 4.38, 4.09, 2.52, 5.19, 2.39, 3.66, 2.29, 2.88])
_MINOR_KK = np.array([6.33, 2.68, 3.52, 5.38, 2.60, 3.53, 2.54, 4.75, 3.98, 2.69, 3.34, 3.17])
_MAJOR_SOUNDED = _with_harmonics(_MAJOR_PROFILE)
_MINOR_SOUNDED = _with_harmonics(_MINOR_PROFILE)
_SOUNDING = 0.2  # frames with less energy (relative to the loud ones) are not music yet
_MIN_CORRELATION = 0.1  # below this the chroma has no key at all (noise reads ~0.2-0.4 with a strength ~0.3)
_SILENT_ENERGY = 1e-4


@dataclass(frozen=True, slots=True)
class KeyEstimate:
    key: Key
    strength: float  # 0..1: the key's share of the evidence against all 24 keys (low when ambiguous)
    tuning_cents: float  # deviation of the reference pitch from A4 = 440 Hz


def estimate_tuning(pitch: np.ndarray) -> float:
    """Deviation from A4 = 440 Hz in cents (-50..50), from the energy in 20-cent sub-bins."""
    profile = pitch.sum(axis=0).reshape(12, SUBBINS_PER_SEMITONE).sum(axis=0)
    angles = 2 * np.pi * np.arange(SUBBINS_PER_SEMITONE) / SUBBINS_PER_SEMITONE
    angle = np.angle(np.sum(profile * np.exp(1j * angles)))
    return float(angle / (2 * np.pi) * 100.0)


def chroma(pitch: np.ndarray, tuning_cents: float) -> np.ndarray:
    """12-bin chroma frames (C first), aligned to the estimated tuning."""
    shift_bins = tuning_cents / (100.0 / SUBBINS_PER_SEMITONE)
    whole = int(np.floor(shift_bins))
    fraction = shift_bins - whole
    # Move the tuned pitch grid onto bin centres, with linear interpolation between sub-bins.
    centred = np.roll(pitch, SUBBINS_PER_SEMITONE // 2 - whole, axis=1)
    semitones = centred.reshape(len(pitch), 12, SUBBINS_PER_SEMITONE).sum(axis=2)
    # The fractional part moves one sub-bin's worth of energy across each semitone's edge.
    below = centred[:, 0::SUBBINS_PER_SEMITONE]
    above = np.roll(centred, -SUBBINS_PER_SEMITONE, axis=1)[:, 0::SUBBINS_PER_SEMITONE]
    return (semitones - fraction * below + fraction * above).astype(np.float32)


# A note's harmonics that land on other pitch classes, as (semitones above it, share of its own
# level taken from there): the 3rd harmonic (a fifth over the octave), the 5th (a major third two
# octaves up), the 6th (a fifth again) and the 7th (a flat seventh), at about a sawtooth's levels.
# (Octaves are left: they do not change the pitch class.)
_HARMONICS = ((19, 0.33), (28, 0.2), (31, 0.17), (34, 0.14))
_SUMMED = ((0, 1.0), (12, 0.8), (19, 0.6), (24, 0.5), (28, 0.4))  # harmonics summed for the bass's pitch
_KICK_SEMITONES = 12  # the lowest octave (A1-G#2, 55-104 Hz) is where kicks ring: left out
_BASS_SEMITONES = 24  # the octave above it (A2-G#3) is the bass


# Beyond the 7th: the 9th (a major ninth over three octaves), the 11th and the 13th (between
# semitones: half taken from each neighbour), at a bright saw's levels.
_HARMONICS_HIGH = _HARMONICS + ((38, 0.11), (41, 0.045), (42, 0.045), (44, 0.04), (45, 0.04))


def note_chroma(notes: np.ndarray, tuning_cents: float, harmonics: tuple = _HARMONICS) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """From the unfolded spectrum (``FrameFeatures.notes``), each note's harmonics taken away
    from the notes above it: the 12-bin chroma of the notes above the bass (from A3) and that of
    the bass (A2-G#3); and the bass notes (A1-G#3) by their summed harmonics; aligned to the
    tuning, C first."""
    spectrum = notes.astype(np.float32)
    semitones = spectrum.shape[1] // NOTE_SUBBINS
    # Each semitone's three sub-bins around its tuned centre (a fractional shift interpolated).
    centre = NOTE_SUBBINS * np.arange(semitones) + tuning_cents / (100.0 / NOTE_SUBBINS)
    padded = np.pad(spectrum, ((0, 0), (2, 3)))  # zeros beyond both ends
    level = np.zeros((len(spectrum), semitones), np.float32)
    for offset in (-1, 0, 1):
        position = centre + offset + 2
        below = np.floor(position).astype(int)
        fraction = (position - below).astype(np.float32)
        level += (1 - fraction) * padded[:, below] + fraction * padded[:, below + 1]
    played = level.copy()
    for above, share in harmonics:
        played[:, above:] -= share * level[:, :-above]
    played = np.maximum(played, 0.0)
    classes = (NOTE_LOW_MIDI + np.arange(semitones)) % 12
    fold = np.zeros((semitones, 12), np.float32)
    fold[np.arange(semitones), classes] = 1.0
    # The bass note by its harmonics (summed where a note of each low pitch would put them): down
    # there a semitone is one or two FFT bins and smeared, its harmonics are sharp; a kick, a sine
    # with no harmonics, hardly counts.
    salience = np.zeros((len(level), _BASS_SEMITONES), np.float32)
    for above, weight in _SUMMED:
        salience += weight * level[:, above : above + _BASS_SEMITONES]
    bass_fold = fold[:_BASS_SEMITONES]
    return (
        played[:, _BASS_SEMITONES:] @ fold[_BASS_SEMITONES:],
        played[:, _KICK_SEMITONES:_BASS_SEMITONES] @ fold[_KICK_SEMITONES:_BASS_SEMITONES],
        salience @ bass_fold,
    )


def key_correlations(profile: np.ndarray, major: np.ndarray, minor: np.ndarray) -> np.ndarray:
    """Pearson correlation of a 12-bin pitch-class profile with every key's profile: 24 values,
    C major .. B major, then C minor .. B minor."""
    rotations = np.array([np.roll(reference, tonic) for reference in (major, minor) for tonic in range(12)])
    rotations = rotations - rotations.mean(axis=1, keepdims=True)
    centred = profile - profile.mean()
    denominator = np.linalg.norm(rotations, axis=1) * np.linalg.norm(centred)
    return rotations @ centred / np.maximum(denominator, 1e-12)


def _at_tonics(profile: np.ndarray, interval: int) -> np.ndarray:
    """The share of ``profile`` on each key's tonic + ``interval`` (24 values: major keys, then
    minor), less the share every pitch class would have in a flat profile."""
    share = np.roll(profile / max(float(profile.sum()), 1e-12), -interval) - 1.0 / 12
    return np.concatenate([share, share])


def _against_top(profile: np.ndarray) -> np.ndarray:
    """Per key, 0..1: the profile on its tonic against its most present class, to the power
    ``_TOP_POWER`` (1 where the tonic is that class), as far as that class stands out: scaled by
    how much more than a flat profile's share it holds (1 at twice that share or more; a flat
    profile, noise, says nothing)."""
    share = profile / max(float(profile.sum()), 1e-12)
    top = float(share.max())
    standing = float(np.clip(12.0 * top - 1.0, 0.0, 1.0))
    against = standing * (share / max(top, 1e-12)) ** _TOP_POWER
    return np.concatenate([against, against])


def _thirds_sounding(profile: np.ndarray) -> np.ndarray:
    """Per tonic, 0..1: how much of the profile lies on its two thirds (1 at twice a flat
    profile's share or more): near 0 for bare fifths, whose mode no one can hear."""
    share = profile / max(float(profile.sum()), 1e-12)
    return np.clip((np.roll(share, -3) + np.roll(share, -4)) * 6.0, 0.0, 1.0)


def _third_contrast(profile: np.ndarray) -> np.ndarray:
    """Per key: how much more the profile holds its mode's third than the other mode's (the
    major third over the minor one for a major key, the other way round for a minor key)."""
    share = profile / max(float(profile.sum()), 1e-12)
    major_third, minor_third = np.roll(share, -4), np.roll(share, -3)
    return np.concatenate([major_third - minor_third, minor_third - major_third])


# Every kind of evidence the key stage can weigh, one column each (24 values: C major .. B major,
# C minor .. B minor). bench/fit_key.py fits weights over any of them; ``EVIDENCE`` are the ones
# the stage weighs.
CANDIDATES = (
    "whole",  # the whole piece's chroma against the keys' sounded profiles
    "notes",  # the notes played above the bass (harmonics taken away) against the plain profiles
    "notes_tonic",  # the notes' share on the key's tonic
    "notes_third",  # the notes' third of the key's mode against the other mode's
    "salience_tonic",  # the bass notes' (by their summed harmonics) share on the tonic: a riff comes home to it
    "bass_tonic",  # the bass chroma's share on the tonic
    "minor",  # a prior for minor keys, where the key's thirds sound (bare fifths leave the mode open)
    "opening",  # the first _STATED_SECONDS of music against the sounded profiles (where a piece states its key)
    "ending",  # the last ones (the final cadence)
    "bass",  # the bass chroma under the whole piece against the plain profiles
    "bass_ending",  # ... under the ending: the final cadence's roots
    "stated",  # the 2b9ad60 analyzer's score: whole + 0.55 (opening + ending) + 0.3 bass + 0.2 bass_ending
    "stated_opening",  # the first _STATED_SECONDS where the harmony sounds (past a drum intro)
    "stated_ending",  # the last ones (before a drum outro)
    "salience_first",  # the bass notes' share on the tonic where the harmony first sounds
    "salience_last",  # ... where it last sounds: where the piece rests
    "salience_fifth",  # the bass notes' share on the key's fifth (a tonic heard as a dominant)
    "salience_top",  # the bass notes on the tonic against the bass's most salient note (1: the tonic is it)
    "notes_top",  # the notes played on the tonic against the most played one
    "bass_top",  # the bass chroma on the tonic against its strongest class
    "last_top",  # the bass notes on the tonic against the most salient one, where the harmony last sounds
    "first_top",  # ... where it first sounds
    "notes_tonal",  # "notes", each note frame weighed by its tonalness too (a drum-only stretch counts little)
    "notes_tonic_tonal",  # ... "notes_tonic" so weighed
    "notes_third_tonal",  # ... "notes_third" so weighed
    "notes_top_tonal",  # ... "notes_top" so weighed
    "whole_kk",  # the whole piece's chroma against Krumhansl-Kessler's probe-tone profiles (plain)
    "notes_kk",  # the notes played above the bass against them
    "notes_high",  # "notes" with the 9th, 11th and 13th harmonics taken away too
    "notes_tonic_high", "notes_third_high", "notes_top_high", "minor_high",
)
# What the stage weighs: bench/fit_key.py --compare scored column sets by how well a fit on the
# other tuning folds carries to each fold left out (docs/notes-2026-12/issue-29.md); productions
# weigh these ten, played music the 2b9ad60 analyzer's own score alone (what read chorales and
# cadences well before: the opening, the ending and the bass under them).
EVIDENCE = ("whole", "notes", "notes_tonic", "notes_third", "salience_tonic", "bass_tonic", "minor", "stated",
            "salience_top", "notes_top")
# What each column weighs, for a production and for played music (blended by ``character``): the
# multinomial logistic fit of bench/fit_key.py on the development set's tuning folds, never on
# the held-out folds; so a key's softmax share of its weighted evidence is a probability.
_WEIGHTS_PRODUCED = np.array([7.137, 5.745, 1.673, 1.856, 1.189, 1.085, 1.480, -1.150, 8.771, 1.671])
_WEIGHTS_PLAYED = np.array([0.000, 0.000, 0.000, 0.000, 0.000, 0.000, 0.000, 8.506, 0.000, 0.000])
_CHARACTER_TONALNESS = (0.2, 0.4)  # a sounding frame's median tonalness: produced (drums under it) .. played
_TOP_POWER = 4.0
_STATED_SECONDS = 12.0  # the opening and the ending, where a piece states its key
# The 2b9ad60 analyzer's blend (its "stated" score, one column here): the opening and the ending
# 0.55 each beside the whole piece, the bass under the whole piece 0.3 and under the ending 0.2.
_STATED_BLEND = (0.55, 0.3, 0.2)


def character(chroma_frames: np.ndarray, energy: np.ndarray) -> float:
    """0..1: how much the piece sounds like a production (1: drums and synths under every frame,
    the chroma flat) rather than played instruments (0: every frame a stated chord or melody).
    The key's evidence is weighed by one set of weights for each, blended by this."""
    if chroma_frames.shape[0] == 0:
        return 0.0
    weights = np.minimum(1.0, energy / max(float(np.percentile(energy, 90)), 1e-9))
    sounding = weights > _SOUNDING
    if not sounding.any():
        return 0.0
    median = float(np.median(_tonalness(chroma_frames[sounding])))
    low, high = _CHARACTER_TONALNESS
    return float(np.clip((high - median) / (high - low), 0.0, 1.0))


def key_evidence(
    chroma_frames: np.ndarray,
    energy: np.ndarray,
    bass: np.ndarray | None = None,
    notes: np.ndarray | None = None,
    tuning_cents: float = 0.0,
    columns: tuple[str, ...] = EVIDENCE,
) -> np.ndarray | None:
    """(24, len(columns)) evidence for every key (C major .. B major, C minor .. B minor), from
    tuning-aligned chroma frames, the bass chroma of the same frames and the unfolded note
    spectrum (``FrameFeatures.notes``); None when there is no tonal content (silence, noise,
    pure percussion). Columns whose input is missing are 0; ``columns`` names them (of
    ``CANDIDATES``)."""
    if chroma_frames.shape[0] == 0 or energy.max(initial=0.0) < _SILENT_ENERGY:
        return None
    # Each frame normalized (a few loud frames must not decide), square-root compressed, and
    # weighted by its energy so near-silent frames count for little.
    weights = np.minimum(1.0, energy / max(float(np.percentile(energy, 90)), 1e-9))
    frames = np.sqrt(chroma_frames / np.maximum(chroma_frames.max(axis=1, keepdims=True), 1e-9)) * weights[:, None]
    whole = frames.sum(axis=0)
    if whole.std() < 1e-6 * max(whole.mean(), 1e-9):
        return None
    wanted = set(columns)
    found: dict[str, np.ndarray] = {"whole": key_correlations(whole, _MAJOR_SOUNDED, _MINOR_SOUNDED)}
    if "whole_kk" in wanted:
        found["whole_kk"] = key_correlations(whole, _MAJOR_KK, _MINOR_KK)
    opening, ending = _stretches(weights > _SOUNDING)
    stated_opening, stated_ending = _stretches(_stated(chroma_frames, weights))
    sounded = lambda part: key_correlations(frames[part].sum(axis=0), _MAJOR_SOUNDED, _MINOR_SOUNDED)  # noqa: E731
    if wanted & {"opening", "stated"}:
        found["opening"] = sounded(opening)
    if wanted & {"ending", "stated"}:
        found["ending"] = sounded(ending)
    if "stated_opening" in wanted:
        found["stated_opening"] = sounded(stated_opening)
    if "stated_ending" in wanted:
        found["stated_ending"] = sounded(stated_ending)
    if bass is not None and bass.shape == chroma_frames.shape:
        low = np.sqrt(bass / np.maximum(bass.max(axis=1, keepdims=True), 1e-9)) * weights[:, None]
        found["bass_tonic"] = _at_tonics(low.sum(axis=0), 0)
        found["bass_top"] = _against_top(low.sum(axis=0))
        # The bass plays fundamentals: the plain profiles, no harmonics.
        found["bass"] = key_correlations(low.sum(axis=0), _MAJOR_PROFILE, _MINOR_PROFILE)
        found["bass_ending"] = key_correlations(low[ending].sum(axis=0), _MAJOR_PROFILE, _MINOR_PROFILE)
    if "stated" in wanted:
        stretch, under, final = _STATED_BLEND
        found["stated"] = (found["whole"] + stretch * (found["opening"] + found["ending"])
                           + under * found.get("bass", 0.0) + final * found.get("bass_ending", 0.0))
    if notes is not None and len(notes):
        played, _, salience = note_chroma(notes, tuning_cents)
        # The energy weights of the chroma frames each note frame averages.
        count = len(played)
        grouped = np.pad(weights, (0, max(0, count * NOTE_DECIMATION - weights.size)), mode="edge")
        note_weights = grouped[: count * NOTE_DECIMATION].reshape(count, NOTE_DECIMATION).mean(axis=1)
        raw_played = played
        played = (np.sqrt(played / np.maximum(played.max(axis=1, keepdims=True), 1e-9)) * note_weights[:, None]).sum(axis=0)
        salient = np.sqrt(salience / np.maximum(salience.max(axis=1, keepdims=True), 1e-9)) * note_weights[:, None]
        found["notes"] = key_correlations(played, _MAJOR_PROFILE, _MINOR_PROFILE)
        found["notes_tonic"] = _at_tonics(played, 0)
        if "notes_kk" in wanted:
            found["notes_kk"] = key_correlations(played, _MAJOR_KK, _MINOR_KK)
        found["notes_third"] = _third_contrast(played)
        found["salience_tonic"] = _at_tonics(salient.sum(axis=0), 0)
        found["salience_fifth"] = _at_tonics(salient.sum(axis=0), 7)
        found["salience_top"] = _against_top(salient.sum(axis=0))
        found["notes_top"] = _against_top(played)
        found["minor"] = np.concatenate([np.zeros(12), _thirds_sounding(played)])
        if wanted & {"notes_tonal", "notes_tonic_tonal", "notes_third_tonal", "notes_top_tonal"}:
            tonal = np.pad(_tonalness(chroma_frames), (0, max(0, count * NOTE_DECIMATION - weights.size)), mode="edge")
            tonal = tonal[: count * NOTE_DECIMATION].reshape(count, NOTE_DECIMATION).mean(axis=1)
            toned = (np.sqrt(raw_played / np.maximum(raw_played.max(axis=1, keepdims=True), 1e-9))
                     * (note_weights * tonal)[:, None]).sum(axis=0)
            found["notes_tonal"] = key_correlations(toned, _MAJOR_PROFILE, _MINOR_PROFILE)
            found["notes_tonic_tonal"] = _at_tonics(toned, 0)
            found["notes_third_tonal"] = _third_contrast(toned)
            found["notes_top_tonal"] = _against_top(toned)
        if wanted & {"notes_high", "notes_tonic_high", "notes_third_high", "notes_top_high", "minor_high"}:
            high, _, _ = note_chroma(notes, tuning_cents, _HARMONICS_HIGH)
            high = (np.sqrt(high / np.maximum(high.max(axis=1, keepdims=True), 1e-9)) * note_weights[:, None]).sum(axis=0)
            found["notes_high"] = key_correlations(high, _MAJOR_PROFILE, _MINOR_PROFILE)
            found["notes_tonic_high"] = _at_tonics(high, 0)
            found["notes_third_high"] = _third_contrast(high)
            found["notes_top_high"] = _against_top(high)
            found["minor_high"] = np.concatenate([np.zeros(12), _thirds_sounding(high)])
        if wanted & {"salience_first", "salience_last", "last_top", "first_top"}:
            first, last = (_decimated(part, NOTE_DECIMATION, count) for part in (stated_opening, stated_ending))
            found["salience_first"] = _at_tonics(salient[first].sum(axis=0), 0)
            found["salience_last"] = _at_tonics(salient[last].sum(axis=0), 0)
            found["last_top"] = _against_top(salient[last].sum(axis=0))
            found["first_top"] = _against_top(salient[first].sum(axis=0))
    return np.column_stack([found.get(name, np.zeros(24)) for name in columns])


def _stretches(sounding: np.ndarray) -> tuple[slice, slice]:
    """The first and last ``_STATED_SECONDS`` of the frames marked ``sounding`` (all frames when
    none are): from the first such frame on, and up to the last one."""
    marked = np.nonzero(sounding)[0]
    first, last = (int(marked[0]), int(marked[-1])) if marked.size else (0, sounding.size - 1)
    frames = max(1, int(_STATED_SECONDS * ANALYSIS_RATE / CHROMA_HOP))
    return slice(first, min(last, first + frames) + 1), slice(max(first, last - frames), last + 1)


def _stated(chroma_frames: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """The frames where the harmony sounds: loud enough, and at least as tonal as the piece's
    median sounding frame (a drum-only intro or outro is flat)."""
    sounding = weights > _SOUNDING
    if not sounding.any():
        return sounding
    tonal = _tonalness(chroma_frames)
    return sounding & (tonal >= np.median(tonal[sounding]))


def _decimated(part: slice, decimation: int, count: int) -> slice:
    """A slice of chroma frames as the note frames (each ``decimation`` chroma frames) it covers."""
    start = min(count - 1, (part.start or 0) // decimation)
    return slice(start, max(start + 1, min(count, -(-(part.stop or 0) // decimation))))



def estimate_key(
    chroma_frames: np.ndarray,
    energy: np.ndarray,
    tuning_cents: float = 0.0,
    bass: np.ndarray | None = None,
    notes: np.ndarray | None = None,
) -> KeyEstimate | None:
    """The key from tuning-aligned chroma frames (see ``chroma``) and, when given, the bass chroma
    of the same frames; None when there is no tonal content (silence, noise, pure percussion)."""
    evidence = key_evidence(chroma_frames, energy, bass, notes, tuning_cents)
    if evidence is None:
        return None
    produced = character(chroma_frames, energy)
    scores = evidence @ (produced * _WEIGHTS_PRODUCED + (1.0 - produced) * _WEIGHTS_PLAYED)
    best = int(np.argmax(scores))
    if evidence[best, EVIDENCE.index("whole")] < _MIN_CORRELATION:
        return None
    share = np.exp(scores - scores[best])
    strength = float(1.0 / share.sum())
    return KeyEstimate(Key(best % 12, best >= 12), round(strength, 3), round(tuning_cents, 1))


def _tonalness(chroma_frames: np.ndarray) -> np.ndarray:
    """Per frame, 0..1: how far its chroma is from flat (one minus its spectral flatness): drums
    and noise are flat, a stated chord or riff is not."""
    positive = np.maximum(chroma_frames, 1e-9)
    flatness = np.exp(np.log(positive).mean(axis=1)) / positive.mean(axis=1)
    return 1.0 - flatness
