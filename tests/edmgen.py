"""Electronic dance productions with a known key, tempo and bar grid: the tests' signals and
bench/devset.py's electronic folds.

A DJ's crate is not chorales: minor keys dominate, a bass riff and a synth hook carry the key
with few full chords (often none), synths are detuned (the whole production a few tens of cents
off 440 Hz) and filtered, a sidechained mix pumps on every kick, hats swing, and a track opens
and closes on drums alone for 8 to 32 bars so a DJ can mix it in and out. ``compose`` writes one
such track as notes and drum hits (the truth is what it was written in: its key, its tempo, its
bar lines); two renderers turn it into sound:

* ``render_synth``: numpy synthesis (band-limited saws, squares and supersaws, sine 808s with a
  glide, FM basses, noise hats and snares, swept low-pass filters, sidechain pumping), in two
  "producers" with their own sound design and writing habits (A and B);
* ``to_midi``: a MIDI file (General MIDI synth programs, drums on channel 10, the detune as a
  pitch bend on every channel, the filter sweeps as CC74) for FluidSynth and a soundfont.

Everything is seeded: the same name gives the same track, bit for bit.
"""

from __future__ import annotations

import random
import zlib
from dataclasses import dataclass, field

import numpy as np
import scipy.signal

RATE = 44100

# genre -> (BPM range, share of minor keys, drum pattern, bass style, swing range, chord chance)
GENRES = {
    "house": ((118, 128), 0.7, "four", "offbeat", (0.0, 0.3), 0.55),
    "techno": ((124, 140), 0.85, "four", "rolling", (0.0, 0.15), 0.25),
    "trance": ((132, 140), 0.75, "four", "rolling", (0.0, 0.0), 0.7),
    "dnb": ((168, 178), 0.85, "dnb", "reese", (0.0, 0.1), 0.4),
    "hiphop": ((82, 98), 0.7, "boombap", "808", (0.15, 0.45), 0.5),
    "pop": ((96, 124), 0.45, "pop", "roots", (0.0, 0.2), 0.85),
    "dubstep": ((138, 142), 0.9, "halftime", "808", (0.0, 0.1), 0.35),
}
GENRE_ORDER = tuple(GENRES)

# Modes as the scale steps from the tonic; the key's truth is its tonic and major/minor.
_MODES_MINOR = {"aeolian": (0, 2, 3, 5, 7, 8, 10), "dorian": (0, 2, 3, 5, 7, 9, 10),
                "phrygian": (0, 1, 3, 5, 7, 8, 10), "harmonic": (0, 2, 3, 5, 7, 8, 11)}
_MODES_MAJOR = {"ionian": (0, 2, 4, 5, 7, 9, 11), "mixolydian": (0, 2, 4, 5, 7, 9, 10)}
# Loops dance music is written on (scale degrees 0-6 of the mode, as triads on them), each coming
# home to its tonic chord: the key a producer names is the chord the loop rests on.
_MINOR_LOOPS = [(0, 5, 0, 6), (0, 0, 5, 6), (0, 3, 0, 4), (0, 6, 0, 5), (0, 0, 3, 4), (0, 5, 0, 4), (0, 5, 2, 6)]
_MAJOR_LOOPS = [(0, 4, 0, 3), (0, 3, 0, 4), (0, 0, 3, 4), (0, 4, 5, 3), (0, 5, 0, 4)]

# Drum patterns over one bar of 16 steps: instrument -> steps.
_DRUMS = {
    "four": {"kick": (0, 4, 8, 12), "clap": (4, 12), "hat": (2, 6, 10, 14), "closed": tuple(range(0, 16, 2))},
    "dnb": {"kick": (0, 10), "snare": (4, 12), "closed": tuple(range(0, 16, 2)), "hat": (7, 15)},
    "boombap": {"kick": (0, 7, 10), "snare": (4, 12), "closed": tuple(range(0, 16, 2))},
    "pop": {"kick": (0, 8, 10), "snare": (4, 12), "closed": tuple(range(0, 16, 2))},
    "halftime": {"kick": (0, 3, 10), "snare": (8,), "closed": tuple(range(0, 16, 2)), "hat": (6, 14)},
}


@dataclass
class Note:
    start: float  # beats from the start of the track
    length: float  # beats
    pitch: int  # MIDI note number
    velocity: float  # 0..1
    part: str  # bass, lead, pad


@dataclass
class Song:
    name: str
    genre: str
    producer: str
    bpm: float
    tonic: int
    minor: bool
    mode: str
    detune_cents: float
    swing: float  # share of a sixteenth the off-sixteenths are late
    lead_in: float  # seconds of silence before bar 1
    bars: int
    sections: list[tuple[str, int, int]]  # (name, first bar, bars)
    notes: list[Note] = field(default_factory=list)
    hits: list[tuple[float, str, float]] = field(default_factory=list)  # (beat, drum, velocity)
    sweeps: list[tuple[float, float, float, float]] = field(default_factory=list)  # (beat, beat, from Hz, to Hz) on the lead
    tags: list[str] = field(default_factory=list)

    @property
    def key_name(self) -> str:
        names = ("C", "C#", "D", "Eb", "E", "F", "F#", "G", "G#", "A", "Bb", "B") if self.minor else \
            ("C", "Db", "D", "Eb", "E", "F", "F#", "G", "Ab", "A", "Bb", "B")
        return f"{names[self.tonic]} {'minor' if self.minor else 'major'}"

    def seconds(self, beat: float) -> float:
        return self.lead_in + beat * 60.0 / self.bpm

    @property
    def downbeats(self) -> list[float]:
        return [round(self.seconds(4 * bar), 4) for bar in range(self.bars)]

    @property
    def duration(self) -> float:
        return self.seconds(4 * self.bars) + 1.5


# --- writing --------------------------------------------------------------------------------------


def compose(name: str, genre: str, producer: str, *, seconds: float = 150.0, **fixed) -> Song:
    """One track of ``genre`` as ``producer`` ("A" or "B") writes it, from ``name`` as the seed,
    about ``seconds`` long. ``fixed`` pins what the seed would choose: ``bpm``, ``tonic``,
    ``minor``, ``mode``, ``detune_cents``, ``swing``, ``chords`` (bool), ``intro`` (bars)."""
    rng = random.Random(f"edm:{name}")
    (low, high), minor_share, drums, bass_style, (swing_low, swing_high), chord_chance = GENRES[genre]
    minor = rng.random() < minor_share
    minor = fixed.get("minor", minor)
    if minor:
        weights = {"aeolian": 6, "dorian": 2, "phrygian": 2 if genre in ("techno", "dnb", "dubstep") else 0.5, "harmonic": 1}
    else:
        weights = {"ionian": 4, "mixolydian": 1}
    mode = fixed.get("mode", rng.choices(list(weights), list(weights.values()))[0])
    detuned = rng.random() < 0.45
    song = Song(
        name=name, genre=genre, producer=producer,
        bpm=float(rng.randint(low, high)), tonic=rng.randrange(12), minor=minor, mode=mode,
        detune_cents=round(rng.choice((-1, 1)) * rng.uniform(12, 45), 1) if detuned else 0.0,
        swing=round(rng.uniform(swing_low, swing_high), 2) if rng.random() < 0.7 else 0.0,
        lead_in=round(rng.uniform(0.0, 0.6), 3), bars=0, sections=[],
    )
    for name_ in ("bpm", "tonic", "detune_cents", "swing"):
        if name_ in fixed:
            setattr(song, name_, fixed[name_])
    # The arrangement: a drum-only intro (often long), the bass, the hook, a breakdown, the drop,
    # a drum-only outro; kept under ~150 s (peers and rendering cost time).
    bar_seconds = 240.0 / song.bpm
    intro = rng.choice((8, 16, 16, 32)) if genre not in ("hiphop", "pop") else rng.choice((4, 8))
    intro = fixed.get("intro", intro)
    outro = rng.choice((8, 16)) if genre not in ("hiphop", "pop") else 4
    budget = int(seconds / bar_seconds)
    body = max(24, budget - intro - outro)
    build = 8
    breakdown = 8 if body >= 40 else 4
    main = max(8, (body - build - breakdown) // 2 // 4 * 4)
    plan = [("intro", intro), ("build", build), ("main", main), ("breakdown", breakdown), ("drop", main), ("outro", outro)]
    first = 0
    for section, bars in plan:
        song.sections.append((section, first, bars))
        first += bars
    song.bars = first
    song.tags += [genre, f"producer-{producer}", "minor" if minor else "major", mode]
    if intro >= 16:
        song.tags.append("long-intro")
    if song.detune_cents:
        song.tags.append("detuned")
    if song.swing >= 0.15:
        song.tags.append("swung")

    scale = (_MODES_MINOR if minor else _MODES_MAJOR)[mode]
    # The chords come from the plain minor (its raised seventh in harmonic minor) or major scale:
    # a mode colours the riff, the loop states the key.
    harmony = _MODES_MINOR["harmonic" if mode == "harmonic" else "aeolian"] if minor else _MODES_MAJOR["ionian"]
    chords = fixed.get("chords", rng.random() < chord_chance)
    song.tags.append("chords" if chords else "riff-led")
    loop = rng.choice(_MINOR_LOOPS if minor else _MAJOR_LOOPS) if chords else (0, 0, 0, 0)
    if not chords and rng.random() < 0.4:  # a riff over two roots, still no chords
        loop = (0, 0, rng.choice((5, 6, 3)), 0) if minor else (0, 0, 3, 0)
    bass_register = 36 + (song.tonic - 0) % 12 if (song.tonic % 12) <= 7 else 24 + song.tonic % 12
    bass_riff = _bass_riff(rng, bass_style, scale, producer)
    hook = _hook(rng, scale, minor, producer, genre)
    _drum_hits(song, rng, drums)
    for section, start, bars in song.sections:
        for bar in range(start, start + bars):
            beat0 = 4.0 * bar
            degree = loop[(bar // (2 if producer == "B" else 1)) % len(loop)]
            root = scale[degree % 7] + 12 * (degree // 7)
            if section in ("build", "main", "drop"):
                for step, length, offset, accent in bass_riff[bar % 2]:
                    pitch = bass_register + (offset if degree == 0 else root + (offset if offset in (0, 12) else 0))
                    song.notes.append(Note(beat0 + _swung(step, song.swing) / 4, length / 4, pitch, 0.8 + 0.2 * accent, "bass"))
            if section in ("main", "drop", "breakdown") or (section == "build" and bar >= start + bars - 4):
                if section != "breakdown" or producer == "A":
                    for step, length, degree_in_hook in hook[bar % len(hook)]:
                        pitch = 60 + song.tonic % 12 + _scale_pitch(scale, degree_in_hook)
                        song.notes.append(Note(beat0 + _swung(step, song.swing) / 4, length / 4, pitch, 0.7, "lead"))
            if chords and section in ("main", "drop", "breakdown"):
                triad = [_scale_pitch(harmony, degree + i) for i in (0, 2, 4)]
                if producer == "B" and rng.random() < 0.5:
                    triad.append(_scale_pitch(harmony, degree + 6))  # sevenths
                base = 48 + song.tonic % 12
                if producer == "B" and section != "breakdown":  # stabs on the off-beats
                    for step in (2, 6, 10, 14):
                        for interval in triad:
                            song.notes.append(Note(beat0 + _swung(step, song.swing) / 4, 0.4, base + interval, 0.55, "pad"))
                else:
                    for interval in triad:
                        song.notes.append(Note(beat0, 4.0, base + interval, 0.45, "pad"))
        if section in ("build", "breakdown"):
            song.sweeps.append((4.0 * start, 4.0 * (start + bars), 300.0, 6000.0))
    return song


def _swung(step: float, swing: float) -> float:
    """Sixteenth ``step`` with the off-sixteenths late by ``swing`` of a sixteenth."""
    return step + (swing if int(step) % 2 == 1 else 0.0)


def _scale_pitch(scale: tuple[int, ...], degree: int) -> int:
    return scale[degree % 7] + 12 * (degree // 7)


def _bass_riff(rng: random.Random, style: str, scale, producer: str) -> list[list[tuple[float, float, int, float]]]:
    """Two bars of (step, length in steps, semitones over the root, accent): the tonic on the one,
    the octave, the fifth, the flat seventh or sixth between."""
    colour = [0, 0, 0, 12, 12, 7, scale[6] - 12 + 12, scale[5], scale[3]]
    bars = []
    for bar in range(2):
        notes = []
        if style == "offbeat":
            for beat in range(4):
                notes.append((beat * 4 + 2, 1.5, rng.choice((0, 0, 12)) if beat else 0, 1.0))
                if rng.random() < 0.35:
                    notes.append((beat * 4 + 3, 1, rng.choice(colour), 0.5))
        elif style == "rolling":
            for step in range(16):
                if step % 4 == 0 and producer == "A":
                    continue  # the kick's place, cleared for it
                pick = 0 if step in (1, 2) else (rng.choice(colour) if rng.random() < 0.3 else 0)
                notes.append((step, 0.9, pick, 1.0 if step % 4 == 2 else 0.6))
        elif style == "reese":
            notes.append((0, 6, 0, 1.0))
            notes.append((6, 4, rng.choice((0, 12, scale[6]) if bar == 0 else colour), 0.8))
            notes.append((10, 6, 0 if bar == 0 else rng.choice(colour), 0.8))
        elif style == "808":
            notes.append((0, 6, 0, 1.0))
            notes.append((7, 3, rng.choice((0, 0, 12, scale[6] - 12 if scale[6] > 7 else 0)), 0.8))
            notes.append((10, 6, rng.choice(colour) if bar else 0, 0.9))
        else:  # roots: eighths on the chord's root
            for step in range(0, 16, 2):
                notes.append((step, 1.8, 0 if step % 8 == 0 else rng.choice((0, 0, 12, 7)), 1.0 if step % 4 == 0 else 0.7))
        bars.append(notes)
    return bars


def _hook(rng: random.Random, scale, minor: bool, producer: str, genre: str) -> list[list[tuple[float, float, int]]]:
    """One or two bars of (step, length in steps, scale degree): a riff that starts on the tonic
    and leans on the tonic triad where it falls on the beat, passing through the rest of the
    scale between (an arpeggio for producer B, a syncopated hook for A)."""
    strong = [0, 0, 0, 2, 4, 4, 7]
    weak = [0, 1, 2, 2, 3, 4, 5, 6, 7, -1, -3]
    bars = []
    for bar in range(rng.choice((1, 2))):
        notes = []
        if producer == "B":
            shape = rng.choice(([0, 2, 4, 7], [0, 4, 2, 4], [0, 2, 4, 2], [7, 4, 2, 0]))
            for index, step in enumerate(range(0, 16, 2)):
                notes.append((step, 1.6, shape[index % len(shape)] + (2 if bar and index >= 4 else 0)))
        else:
            steps = sorted(rng.sample([0, 3, 6, 8, 10, 11, 14], rng.randint(4, 6)))
            if 0 not in steps:
                steps = [0] + steps
            for index, step in enumerate(steps):
                end = steps[index + 1] if index + 1 < len(steps) else 16
                degree = rng.choice(strong) if step % 4 == 0 else rng.choice(weak)
                notes.append((step, max(1, end - step - 0.5), 0 if (step == 0 and bar == 0) else degree))
        bars.append(notes)
    if producer == "A" and not any(degree % 7 == 2 for notes in bars for _, _, degree in notes):
        # A hook states its mode: its third, somewhere after the opening tonic.
        notes = bars[-1]
        index = rng.randrange(1, len(notes)) if len(notes) > 1 else 0
        step, length, _ = notes[index]
        notes[index] = (step, length, 2)
    return bars


def _drum_hits(song: Song, rng: random.Random, pattern: str) -> None:
    steps = _DRUMS[pattern]
    breakdown = next((first, first + bars) for name, first, bars in song.sections if name == "breakdown")
    for bar in range(song.bars):
        in_breakdown = breakdown[0] <= bar < breakdown[1]
        intro_bar = bar < song.sections[0][2]
        for drum, positions in steps.items():
            if in_breakdown and drum in ("kick", "snare", "clap"):
                continue
            if intro_bar and bar < 4 and drum not in ("kick", "closed"):
                continue  # the first bars: kick and hats only, as DJ tools open
            for step in positions:
                accent = 1.0 if step % 4 == 0 else 0.75
                song.hits.append((4.0 * bar + _swung(step, song.swing) / 4, drum, accent * rng.uniform(0.85, 1.0)))
        if song.genre in ("dnb", "hiphop") and rng.random() < 0.3 and not in_breakdown:  # ghost snares
            song.hits.append((4.0 * bar + _swung(rng.choice((3, 9, 14)), song.swing) / 4, "snare", 0.35))


# --- numpy rendering ------------------------------------------------------------------------------

_TABLES: dict[tuple[str, int], np.ndarray] = {}


def _hz(pitch: float, detune_cents: float) -> float:
    return 440.0 * 2 ** ((pitch - 69 + detune_cents / 100.0) / 12)


def _table(shape: str, frequency: float) -> np.ndarray:
    """One band-limited cycle (harmonics below 9 kHz) of a saw or square, 2048 samples."""
    harmonics = max(1, int(9000 / frequency))
    key = (shape, harmonics)
    if key not in _TABLES:
        phase = np.arange(2048) * 2 * np.pi / 2048
        numbers = np.arange(1, harmonics + 1)
        if shape == "square":
            numbers = numbers[numbers % 2 == 1]
        amplitudes = 1.0 / numbers
        _TABLES[key] = (np.sin(np.outer(phase, numbers)) @ amplitudes).astype(np.float32)
    return _TABLES[key]


def _oscillator(shape: str, frequency: float, samples: int, rng: random.Random) -> np.ndarray:
    if shape == "sine":
        return np.sin(2 * np.pi * frequency * np.arange(samples) / RATE + rng.uniform(0, 6.28)).astype(np.float32)
    table = _table(shape, frequency)
    phase = (rng.random() + frequency * np.arange(samples) / RATE) % 1.0
    return np.interp(phase * 2048, np.arange(2049), np.append(table, table[0])).astype(np.float32)


def _envelope(samples: int, attack: float, decay: float, sustain: float, release: float) -> np.ndarray:
    t = np.arange(samples) / RATE
    env = np.where(t < attack, t / max(attack, 1e-4), sustain + (1 - sustain) * np.exp(-(t - attack) / max(decay, 1e-4)))
    tail = int(release * RATE)
    if tail and samples > tail:
        env[-tail:] *= np.linspace(1, 0, tail)
    return env.astype(np.float32)


def _voice(note: Note, song: Song, rng: random.Random) -> np.ndarray:
    seconds = note.length * 60.0 / song.bpm
    frequency = _hz(note.pitch, song.detune_cents)
    producer = song.producer
    if note.part == "bass":
        samples = int((seconds + 0.05) * RATE)
        if song.genre in ("hiphop", "dubstep"):  # an 808: a sine gliding down into the note, saturated
            t = np.arange(samples) / RATE
            glide = frequency * (1 + 0.5 * np.exp(-t / 0.03))
            tone = np.tanh(2.5 * np.sin(2 * np.pi * np.cumsum(glide) / RATE)) * _envelope(samples, 0.005, 0.6, 0.4, 0.03)
        elif producer == "B":  # FM bass
            t = np.arange(samples) / RATE
            index = 2.5 * np.exp(-t / 0.12)
            tone = np.sin(2 * np.pi * frequency * t + index * np.sin(2 * np.pi * 2 * frequency * t))
            tone = tone * _envelope(samples, 0.003, 0.25, 0.5, 0.02)
        elif song.genre == "dnb":  # reese: two detuned saws
            tone = 0.5 * (_oscillator("saw", frequency * 2 ** (12 / 1200), samples, rng)
                          + _oscillator("saw", frequency * 2 ** (-12 / 1200), samples, rng))
            tone = scipy.signal.lfilter(*_low_pass(700.0), tone) * _envelope(samples, 0.01, 1.0, 0.8, 0.03)
        else:  # saw through a plucked filter, and a sub under it
            saw = _oscillator("saw", frequency, samples, rng)
            saw = scipy.signal.lfilter(*_low_pass(min(4 * frequency + 300, 3000)), saw)
            tone = (0.7 * saw + 0.6 * _oscillator("sine", frequency, samples, rng)) * _envelope(samples, 0.004, 0.15, 0.5, 0.02)
        return (0.9 * note.velocity * tone).astype(np.float32)
    if note.part == "lead":
        samples = int((seconds + 0.08) * RATE)
        if producer == "A":  # a supersaw: five saws spread over +-15 cents
            tone = sum(_oscillator("saw", frequency * 2 ** (c / 1200), samples, rng) for c in (-15, -7, 0, 7, 15)) / 3.0
            env = _envelope(samples, 0.005, 0.2, 0.6, 0.05)
        else:  # a square pluck
            tone = _oscillator("square", frequency, samples, rng) * 0.8
            env = _envelope(samples, 0.002, 0.12, 0.25, 0.03)
        return (0.35 * note.velocity * tone * env).astype(np.float32)
    samples = int((seconds + 0.3) * RATE)  # pad
    shape = "saw" if producer == "A" else "square"
    tone = (_oscillator(shape, frequency * 2 ** (6 / 1200), samples, rng) + _oscillator(shape, frequency * 2 ** (-6 / 1200), samples, rng)) / 2
    tone = scipy.signal.lfilter(*_low_pass(1800.0 if producer == "A" else 2500.0), tone)
    attack = 0.3 if note.length >= 2 else 0.005
    return (0.3 * note.velocity * tone * _envelope(samples, attack, 0.8, 0.7, 0.25)).astype(np.float32)


def _drum(name: str, producer: str, rng: np.random.Generator) -> np.ndarray:
    if name == "kick":
        samples = int(0.4 * RATE)
        t = np.arange(samples) / RATE
        # Its own pitch, as a kick has (45-65 Hz): a producer does not always tune it to the key.
        start, end, drop = (160, rng.uniform(45, 65), 0.04) if producer == "A" else (220, rng.uniform(45, 65), 0.025)
        frequency = end + (start - end) * np.exp(-t / drop)
        body = np.sin(2 * np.pi * np.cumsum(frequency) / RATE) * np.exp(-t / (0.28 if producer == "A" else 0.18))
        click = rng.standard_normal(samples) * np.exp(-t / 0.002) * 0.3
        return (np.tanh(1.8 * body) + click).astype(np.float32)
    if name in ("snare", "clap"):
        samples = int(0.25 * RATE)
        t = np.arange(samples) / RATE
        noise = scipy.signal.sosfilt(scipy.signal.butter(2, (1200, 7000), btype="band", fs=RATE, output="sos"), rng.standard_normal(samples))
        tone = np.sin(2 * np.pi * 190 * t) * np.exp(-t / 0.05) if name == "snare" else 0.0
        env = np.exp(-t / (0.09 if name == "snare" else 0.06))
        return (0.5 * (noise * env + tone)).astype(np.float32)
    samples = int((0.05 if name == "closed" else 0.22) * RATE)
    t = np.arange(samples) / RATE
    noise = scipy.signal.sosfilt(scipy.signal.butter(2, 7000, btype="high", fs=RATE, output="sos"), rng.standard_normal(samples))
    return (0.25 * noise * np.exp(-t / (0.012 if name == "closed" else 0.07))).astype(np.float32)


def _add(bus: np.ndarray, at: int, sound: np.ndarray) -> None:
    end = min(bus.size, at + sound.size)
    if at < end:
        bus[at:end] += sound[: end - at]


def _swept(signal: np.ndarray, song: Song) -> np.ndarray:
    """The lead bus through a low-pass whose cutoff rises over each build and breakdown (open
    elsewhere), filtered in blocks with the filter's state carried across."""
    cutoff = np.full(signal.size // 1024 + 1, 9000.0)
    for first, last, low, high in song.sweeps:
        a, b = int(song.seconds(first) * RATE) // 1024, int(song.seconds(last) * RATE) // 1024
        cutoff[a:b] = np.geomspace(low, high, max(1, b - a))
    out = np.empty_like(signal)
    state = np.zeros(2)
    for block, frequency in enumerate(cutoff):
        part = signal[block * 1024 : (block + 1) * 1024]
        if part.size == 0:
            break
        b, a = _low_pass(float(frequency))
        out[block * 1024 : block * 1024 + part.size], state = scipy.signal.lfilter(b, a, part, zi=state)
    return out


def _low_pass(frequency: float, q: float = 0.9) -> tuple[np.ndarray, np.ndarray]:
    """A resonant two-pole low-pass (the audio-EQ-cookbook biquad): cheap to design per block."""
    w0 = 2 * np.pi * frequency / RATE
    alpha = np.sin(w0) / (2 * q)
    cos = np.cos(w0)
    b = np.array([(1 - cos) / 2, 1 - cos, (1 - cos) / 2])
    a = np.array([1 + alpha, -2 * cos, 1 - alpha])
    return b / a[0], a / a[0]


def render_synth(song: Song) -> np.ndarray:
    """The production as float32 samples (1, n) at ``RATE``."""
    rng = random.Random(f"render:{song.name}")
    noise = np.random.default_rng(zlib.crc32(song.name.encode()))
    total = int(song.duration * RATE)
    drums, bass, lead, pad = (np.zeros(total, np.float32) for _ in range(4))
    sounds = {name: _drum(name, song.producer, noise) for name in ("kick", "snare", "clap", "closed", "hat")}
    kicks = []
    for beat, name, velocity in song.hits:
        at = int(song.seconds(beat) * RATE)
        _add(drums, at, velocity * sounds[name])
        if name == "kick":
            kicks.append(at)
    buses = {"bass": bass, "lead": lead, "pad": pad}
    for note in song.notes:
        _add(buses[note.part], int(song.seconds(note.start) * RATE), _voice(note, song, rng))
    lead = _swept(lead + 0.6 * pad, song)
    # Sidechain: everything but the drums ducks under each kick and swells back.
    duck = np.ones(total, np.float32)
    depth, recover = (0.7, 0.12) if song.producer == "A" else (0.5, 0.08)
    shape = 1 - depth * np.exp(-np.arange(int(0.4 * RATE)) / (recover * RATE))
    for at in kicks:
        end = min(total, at + shape.size)
        duck[at:end] = np.minimum(duck[at:end], shape[: end - at])
    mix = drums + duck * (bass + lead)
    mix /= max(float(np.abs(mix).max()), 1e-9)
    drive = 1.5 if song.producer == "A" else 2.5  # a loud master, B louder
    mix = np.tanh(drive * mix) / np.tanh(drive)
    return (0.9 * mix)[None, :].astype(np.float32)


# --- MIDI -----------------------------------------------------------------------------------------

_GM_DRUMS = {"kick": 36, "snare": 38, "clap": 39, "closed": 42, "hat": 46}
# (bass, lead, pad) General MIDI programs, per producer
_GM_PROGRAMS = {"A": ((38, 39, 87), (81, 80, 84), (89, 90, 91)), "B": ((39, 38, 33), (80, 82, 84), (88, 95, 91))}


def to_midi(song: Song, path) -> None:
    """The production as a MIDI file: bass, lead and pad on channels 0-2 (General MIDI synth
    programs), drums on channel 10, the detune as a pitch bend on every melodic channel (bend
    range two semitones), the filter sweeps as CC74 (brightness)."""
    import mido

    rng = random.Random(f"midi:{song.name}")
    ticks = 480
    midi = mido.MidiFile(ticks_per_beat=ticks)
    events: list[tuple[int, int, mido.Message]] = []  # (tick, order, message)
    basses, leads, pads = _GM_PROGRAMS[song.producer]
    programs = {"bass": rng.choice(basses), "lead": rng.choice(leads), "pad": rng.choice(pads)}
    channels = {"bass": 0, "lead": 1, "pad": 2}
    bend = int(round(song.detune_cents / 200.0 * 8191))
    for part, channel in channels.items():
        events.append((0, 0, mido.Message("program_change", channel=channel, program=programs[part])))
        events.append((0, 0, mido.Message("pitchwheel", channel=channel, pitch=bend)))
        events.append((0, 0, mido.Message("control_change", channel=channel, control=74, value=100)))
    lead_in = int(round(song.lead_in * song.bpm / 60.0 * ticks))
    for note in song.notes:
        start = lead_in + int(round(note.start * ticks))
        end = start + max(1, int(round(note.length * ticks)))
        channel = channels[note.part]
        events.append((start, 2, mido.Message("note_on", channel=channel, note=note.pitch, velocity=int(30 + 90 * note.velocity))))
        events.append((end, 1, mido.Message("note_off", channel=channel, note=note.pitch, velocity=0)))
    for beat, drum, velocity in song.hits:
        start = lead_in + int(round(beat * ticks))
        events.append((start, 2, mido.Message("note_on", channel=9, note=_GM_DRUMS[drum], velocity=int(40 + 85 * velocity))))
        events.append((start + ticks // 8, 1, mido.Message("note_off", channel=9, note=_GM_DRUMS[drum], velocity=0)))
    for first, last, _low, _high in song.sweeps:
        for step in range(9):
            beat = first + (last - first) * step / 8
            for channel in (1, 2):
                events.append((lead_in + int(beat * ticks), 0, mido.Message("control_change", channel=channel, control=74, value=20 + 10 * step)))
    track = mido.MidiTrack()
    track.append(mido.MetaMessage("set_tempo", tempo=mido.bpm2tempo(song.bpm), time=0))
    track.append(mido.MetaMessage("time_signature", numerator=4, denominator=4, time=0))
    now = 0
    for tick, _order, message in sorted(events, key=lambda item: (item[0], item[1])):
        track.append(message.copy(time=tick - now))
        now = tick
    track.append(mido.MetaMessage("end_of_track", time=ticks * 4))
    midi.tracks.append(track)
    midi.save(str(path))
