"""Test audio made by the tests: synthesized tracks with a known tempo and key, encoded with
PyAV into every format the agent reads, and the broken variants real libraries contain."""

from __future__ import annotations

import os
from pathlib import Path

import av
import numpy as np

# extension -> (codec, sample rate, encoder options)
FORMATS = {
    "mp3": ("libmp3lame", 44100, {}),
    "flac": ("flac", 44100, {}),
    "ogg": ("libvorbis", 44100, {}),
    "opus": ("libopus", 48000, {}),
    "m4a": ("aac", 44100, {}),
    "wav": ("pcm_s16le", 44100, {}),
    "aiff": ("pcm_s16be", 44100, {}),
}
_NOTE_A4 = 440.0
# Cadential progressions, so the key is unambiguous (a loop like vi-IV-I-V has the same chords
# as its relative key and could be either): I IV V I, and i iv V i with the raised leading tone.
_MAJOR_PROGRESSION = ((0, 4, 7), (5, 9, 12), (7, 11, 14), (0, 4, 7))
_MINOR_PROGRESSION = ((0, 3, 7), (5, 8, 12), (7, 11, 14), (0, 3, 7))


# Drum patterns over one bar of sixteenth-note steps, as the genres play them.
PATTERNS = {
    "four": {"kick": {0, 4, 8, 12}, "snare": {4, 12}, "hat": {2, 6, 10, 14}},  # house, techno
    "breakbeat": {"kick": {0, 10}, "snare": {4, 12}, "hat": set(range(0, 16, 2))},  # drum & bass
    "boombap": {"kick": {0, 7, 10}, "snare": {4, 12}, "hat": set(range(0, 16, 2))},  # hip-hop
    "ballad": {"kick": {0, 8}, "snare": {4, 12}, "hat": {0, 4, 8, 12}},
}


def _tone(freq: float, n: int, sr: int, harmonics: int = 6) -> np.ndarray:
    t = np.arange(n) / sr
    wave = np.zeros(n)
    for h in range(1, harmonics + 1):
        if freq * h < sr / 2:
            wave += np.sin(2 * np.pi * freq * h * t) / h**1.5
    return wave


def synth_track(
    *,
    bpm: float = 128.0,
    tonic: int = 9,
    minor: bool = True,
    seconds: float = 30.0,
    sr: int = 44100,
    seed: int = 0,
    drums: bool = True,
    tuning_cents: float = 0.0,
    pattern: str = "four",
) -> np.ndarray:
    """A stereo track (float32, shape (2, n)) with a four-on-the-floor beat at ``bpm`` and a
    chord progression in the key (``tonic`` pitch class, 0 = C). Deterministic per arguments."""
    rng = np.random.default_rng(seed)
    n = int(seconds * sr)
    out = np.zeros(n)
    beat = 60.0 / bpm
    tune = 2 ** (tuning_cents / 1200)
    if drums:
        kick_len = int(0.18 * sr)
        kt = np.arange(kick_len) / sr
        kick = np.sin(2 * np.pi * (50 + 90 * np.exp(-kt * 30)) * kt) * np.exp(-kt * 18)
        hat_len = int(0.05 * sr)
        hat = rng.standard_normal(hat_len) * np.exp(-np.arange(hat_len) / sr * 90) * 0.25
        snare_len = int(0.15 * sr)
        snare = rng.standard_normal(snare_len) * np.exp(-np.arange(snare_len) / sr * 30) * 0.35
        steps = PATTERNS[pattern]
        sixteenth = beat / 4
        step = 0
        while True:
            start = int(round(step * sixteenth * sr))
            if start >= n:
                break
            for sound, hits, gain in ((kick, steps["kick"], 1.0), (snare, steps["snare"], 1.0), (hat, steps["hat"], 1.0)):
                if step % 16 in hits:
                    end = min(n, start + sound.size)
                    out[start:end] += gain * sound[: end - start]
            step += 1
    progression = _MINOR_PROGRESSION if minor else _MAJOR_PROGRESSION
    bar = 4 * beat
    base = _NOTE_A4 * tune * 2 ** ((tonic - 9) / 12 - 1)  # tonic just below A4
    chord_index = 0
    while True:
        start = int(chord_index * bar * sr)
        if start >= n:
            break
        length = min(n - start, int(bar * sr))
        env = np.minimum(1.0, np.arange(length) / (0.02 * sr)) * np.exp(-np.arange(length) / sr * 0.8)
        chord = progression[chord_index % len(progression)]
        pad = sum(_tone(base * 2 ** (step / 12), length, sr) for step in chord)
        bass = _tone(base / 2 * 2 ** (chord[0] / 12), length, sr, harmonics=3)
        out[start : start + length] += (0.12 * pad + 0.2 * bass) * env
        chord_index += 1
    out /= max(1e-9, np.max(np.abs(out))) / 0.8
    left = out
    right = np.roll(out, 7) * 0.9
    return np.stack([left, right]).astype(np.float32)


def file_features(path: str | os.PathLike):
    """The frame features of a file as the pipeline streams them (decoded, the analysis stream)."""
    from cratesense.analysis.decode import AudioFile
    from cratesense.analysis.features import FeatureExtractor

    extractor = FeatureExtractor()
    with AudioFile(path) as audio:
        for block in audio.blocks():
            if block.analysis.size:
                extractor.feed(block.analysis)
    return extractor.finish()


def tag(path: Path, artist: str | None = None, title: str | None = None) -> Path:
    """Write the artist and title a user would have (None: left out) into ``path``."""
    import mutagen

    audio = mutagen.File(path, easy=True)
    if artist:
        audio["artist"] = artist
    if title:
        audio["title"] = title
    audio.save()
    return path


def encode(samples: np.ndarray, sr: int, path: str | os.PathLike, *, bitrate: int | None = None) -> Path:
    """Write ``samples`` (float32, (channels, n)) with the codec the extension implies."""
    path = Path(path)
    codec, rate, options = FORMATS[path.suffix.lstrip(".")]
    if rate != sr:
        samples = _resample(samples, sr, rate)
    layout = "stereo" if samples.shape[0] == 2 else "mono"
    if codec == "libvorbis" and not _has_encoder("libvorbis"):
        codec, options = "vorbis", {"strict": "experimental"}
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=rate, layout=layout)
        stream.codec_context.options = dict(options)
        if codec == "vorbis":
            stream.codec_context.options = {"strict": "experimental"}
        if bitrate:
            stream.bit_rate = bitrate
        target = stream.codec_context.format.name
        resampler = av.AudioResampler(format=target, layout=layout, rate=rate)
        block = stream.codec_context.frame_size or 4096
        for start in range(0, samples.shape[1], block):
            chunk = np.ascontiguousarray(samples[:, start : start + block])
            frame = av.AudioFrame.from_ndarray(chunk, format="fltp", layout=layout)
            frame.sample_rate = rate
            for converted in resampler.resample(frame):
                for packet in stream.encode(converted):
                    container.mux(packet)
        for converted in resampler.resample(None):
            for packet in stream.encode(converted):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return path


def _has_encoder(name: str) -> bool:
    try:
        av.codec.Codec(name, "w")
    except Exception:
        return False
    return True


def _resample(samples: np.ndarray, sr: int, rate: int) -> np.ndarray:
    n = int(samples.shape[1] * rate / sr)
    src = np.arange(samples.shape[1]) / sr
    dst = np.arange(n) / rate
    return np.stack([np.interp(dst, src, channel) for channel in samples]).astype(np.float32)


def write_broken_variants(folder: Path, good: Path) -> dict[str, Path]:
    """The broken files a real library holds, derived from a good encode."""
    data = good.read_bytes()
    variants = {
        "zero_bytes": folder / "empty.mp3",
        "truncated": folder / f"truncated{good.suffix}",
        "random_mp3": folder / "noise.mp3",
        "text_as_flac": folder / "notes.flac",
    }
    variants["zero_bytes"].write_bytes(b"")
    variants["truncated"].write_bytes(data[: len(data) // 3])
    variants["random_mp3"].write_bytes(np.random.default_rng(7).bytes(200_000))
    variants["text_as_flac"].write_text("These are my liner notes, not audio.\n" * 200)
    return variants


# Synthesized loops repeat, and so do their fingerprint items; these variants give fingerprints
# with the >= 80 distinct items the catalog's guard requires (checked at 20 s and longer).
FINGERPRINTABLE = (0, 1, 4, 6, 7, 9)


def fingerprintable_track(index: int, seconds: float = 24, pattern: str = "four") -> np.ndarray:
    """The ``index``-th of six different tracks whose fingerprints the catalog accepts."""
    variant = FINGERPRINTABLE[index]
    return synth_track(bpm=96 + 9 * variant, tonic=(5 * variant) % 12, minor=variant % 2 == 0,
                       seconds=seconds, seed=40 + variant, pattern=pattern)


# --- pieces with a meter: waltzes, 6/8, reels, modulations, accented bars ------------------------

_MAJOR_SCALE = (0, 2, 4, 5, 7, 9, 11)
_MINOR_SCALE = (0, 2, 3, 5, 7, 8, 11)  # harmonic minor: the raised leading tone of V


def triad(tonic: int, minor: bool, degree: int) -> tuple[int, ...]:
    """The triad on scale ``degree`` (0 = I) of a key, as semitones above the key's tonic."""
    scale = _MINOR_SCALE if minor else _MAJOR_SCALE
    return tuple(scale[(degree + step) % 7] + 12 * ((degree + step) // 7) for step in (0, 2, 4))


def cadence(tonic: int, minor: bool, degrees=(0, 3, 4, 0)) -> list[tuple[int, tuple[int, ...]]]:
    """Bars of (key tonic, chord) for a progression of scale degrees, I-IV-V-I by default."""
    return [(tonic, triad(tonic, minor, degree)) for degree in degrees]


def metric_piece(
    *,
    bpm: float,
    bars: list[tuple[int, tuple[int, ...]]],
    beats_per_bar: int = 4,
    subdivision: int = 2,
    melody: bool = True,
    accompaniment: bool = True,
    drums: bool = False,
    accent_bar: bool = True,
    pickup_beats: int = 0,
    sr: int = 11025,
    seed: int = 0,
) -> tuple[np.ndarray, float]:
    """A piece in a meter, mono float32, and the time of bar 1's downbeat (seconds).

    ``bars`` gives each bar's key tonic and chord (semitones above it); the bass plays the root on
    the downbeat, the chord sounds on the other beats (oom-pah-pah in 3/4), and with ``melody``
    a line of ``subdivision`` notes a beat runs over the chord tones (eighths in 2/4, 3/4 and
    4/4; the three eighths of a dotted quarter in 6/8 with ``subdivision=3``). The first bar's
    downbeat is preceded by ``pickup_beats`` beats of melody alone."""
    rng = np.random.default_rng(seed)
    beat = 60.0 / bpm
    start = pickup_beats * beat
    total = start + len(bars) * beats_per_bar * beat + 1.0
    out = np.zeros(int(total * sr))

    def add(freq: float, at: float, length: float, gain: float, harmonics: int = 5) -> None:
        begin = int(at * sr)
        n = min(int(length * sr), out.size - begin)
        if n <= 0:
            return
        envelope = np.minimum(1.0, np.arange(n) / (0.005 * sr)) * np.exp(-np.arange(n) / sr * 3.0)
        out[begin : begin + n] += gain * _tone(freq, n, sr, harmonics) * envelope

    def pitch(tonic: int, semitones: int, octave: int) -> float:
        return _NOTE_A4 * 2 ** ((tonic + semitones - 9) / 12 + octave)

    step = beat / subdivision
    if pickup_beats:
        tonic, chord = bars[0]
        for index in range(pickup_beats * subdivision):  # a rising line into bar 1
            add(pitch(tonic, (_MAJOR_SCALE[(4 + index) % 7]) % 12, 0), index * step, step, 0.25)
    for number, (tonic, chord) in enumerate(bars):
        bar_start = start + number * beats_per_bar * beat
        if accompaniment:
            add(pitch(tonic, chord[0], -2), bar_start, beat * 0.95, 0.9 if accent_bar else 0.5, harmonics=4)
            for beat_index in range(1, beats_per_bar):
                for semitones in chord:
                    add(pitch(tonic, semitones, -1), bar_start + beat_index * beat, beat * 0.8, 0.22)
        if melody:
            for index in range(beats_per_bar * subdivision):
                tone = chord[int(rng.integers(len(chord)))] if index % subdivision == 0 else chord[index % len(chord)]
                gain = 0.35 if index % subdivision == 0 else 0.22
                add(pitch(tonic, tone, 0), bar_start + index * step, step * 0.9, gain)
        if drums:
            for beat_index in range(beats_per_bar):
                n = int(0.05 * sr)
                at = int((bar_start + beat_index * beat) * sr)
                if at + n <= out.size:
                    level = 0.5 if beat_index == 0 and accent_bar else 0.2
                    out[at : at + n] += level * rng.standard_normal(n) * np.exp(-np.arange(n) / sr * 60)
    out /= max(1e-9, np.max(np.abs(out))) / 0.8
    return out.astype(np.float32), start


# --- arrangements with known sections: intro, build, drop, breakdown, outro ------------------------

# The parts each kind of section plays (a drop is everything; a breakdown drops the drums and
# the bass; a build brings a riser and a snare roll up to the drop).
SECTION_PARTS = {
    "intro": {"kick", "hat"},
    "verse": {"kick", "hat", "bass", "chords"},
    "build": {"hat", "roll", "chords", "riser"},
    "drop": {"kick", "hat", "snare", "bass", "chords", "lead", "open_hat", "pad"},
    "breakdown": {"pad", "lead"},
    "outro": {"kick", "hat", "perc"},
}
ARRANGEMENT_PARTS = ("kick", "hat", "open_hat", "snare", "roll", "perc", "bass", "chords", "pad", "lead", "riser",
                     "crash")
DANCE_FORM = (("intro", 16), ("build", 8), ("drop", 16), ("breakdown", 16), ("build", 8), ("drop", 32), ("outro", 16))


def arrangement(
    sections=DANCE_FORM,
    *,
    bpm: float = 126.0,
    tonic: int = 9,
    minor: bool = True,
    sr: int = 44100,
    seed: int = 0,
    pattern: str = "four",
    muted: frozenset[str] | set[str] = frozenset(),
    gain: float = 1.0,
    lead_in: float = 0.0,
    tail: float = 1.5,
    parts: dict[str, set[str]] | None = None,
    fills: bool = True,
) -> tuple[np.ndarray, list[float]]:
    """A dance-music arrangement, stereo float32, and the start (seconds) of each section.

    ``sections`` is a list of (kind, bars) of 4/4 bars, each kind playing ``SECTION_PARTS[kind]``
    (or ``parts[kind]``); ``muted`` parts are left out everywhere (the same arrangement without
    its drums or bass), ``gain`` scales the whole mix before a gentle limiter. Fills every 8 bars
    and a crash on most section starts, as real tracks have them, make the sections' insides
    move too. The sound (kick pitch, bass and lead timbres, the chord loop) is drawn from
    ``seed``; the music starts after ``lead_in`` seconds and rings ``tail`` seconds after the
    last bar."""
    rng = np.random.default_rng(seed)
    parts = {**SECTION_PARTS, **(parts or {})}
    beat = 60.0 / bpm
    bar = 4 * beat
    total_bars = sum(length for _, length in sections)
    n = int((lead_in + total_bars * bar + tail) * sr)
    stems = {name: np.zeros(n, np.float32) for name in ARRANGEMENT_PARTS}
    starts, at = [], lead_in
    plan = []  # (kind, first bar index, bars)
    index = 0
    for kind, length in sections:
        starts.append(round(at, 4))
        plan.append((kind, index, length))
        index += length
        at += length * bar

    def place(stem: str, sound: np.ndarray, time: float, level: float = 1.0) -> None:
        begin = int(round(time * sr))
        if 0 <= begin < n:
            end = min(n, begin + sound.size)
            stems[stem][begin:end] += level * sound[: end - begin]

    def decay(seconds: float, rate: float) -> np.ndarray:
        return np.exp(-np.arange(int(seconds * sr)) / sr * rate)

    kick_pitch = rng.uniform(45, 60)
    kt = np.arange(int(0.25 * sr)) / sr
    kick = (np.sin(2 * np.pi * (kick_pitch * kt + 110 / 28 * (1 - np.exp(-kt * 28)))) * np.exp(-kt * 14)).astype(np.float32)
    hat_decay = rng.uniform(60, 110)
    hat = (rng.standard_normal(int(0.06 * sr)) * decay(0.06, hat_decay)).astype(np.float32)
    hat = np.diff(hat, prepend=0.0).astype(np.float32) * 0.5  # brighter: a first difference
    open_hat = (np.diff(rng.standard_normal(int(0.25 * sr)), prepend=0.0) * decay(0.25, 18) * 0.1).astype(np.float32)
    snare = (rng.standard_normal(int(0.18 * sr)) * decay(0.18, 24) * 0.45
             + np.sin(2 * np.pi * 190 * np.arange(int(0.18 * sr)) / sr) * decay(0.18, 30) * 0.3).astype(np.float32)
    perc = (np.sin(2 * np.pi * rng.uniform(300, 600) * np.arange(int(0.08 * sr)) / sr) * decay(0.08, 50) * 0.3
            ).astype(np.float32)
    crash = (np.diff(rng.standard_normal(int(2.0 * sr)), prepend=0.0) * decay(2.0, 2.2) * 0.18).astype(np.float32)
    steps = PATTERNS[pattern]
    progressions = ((0, 8, 3, 10), (0, 5, 8, 7), (0, 10, 8, 7), (0, 3, 8, 5)) if minor else \
        ((0, 7, 9, 5), (0, 5, 7, 5), (0, 9, 5, 7), (0, 4, 5, 7))
    loop = progressions[int(rng.integers(len(progressions)))]
    bass_harmonics = int(rng.integers(1, 6))
    lead_harmonics = int(rng.integers(3, 9))
    pad_harmonics = int(rng.integers(4, 10))
    root = 440.0 * 2 ** ((tonic - 9) / 12 - 1)  # the tonic just below A4
    arpeggio = rng.permutation([0, 3 if minor else 4, 7, 12])

    def chord_notes(bar_index: int) -> list[float]:
        step = loop[bar_index % 4]
        third = 3 if minor and step in (0, 5) else 4
        return [root * 2 ** ((step + interval) / 12) for interval in (0, third, 7)]

    for kind, first, length in plan:
        active = parts[kind] - set(muted)
        start = lead_in + first * bar
        # Random choices are drawn whether or not their part is muted: muting a part changes
        # nothing else (the same arrangement, without it).
        if kind != "intro" and rng.random() < 0.8 and "crash" not in muted:
            place("crash", crash, start)
        for offset in range(length):
            bar_index = first + offset
            bar_start = start + offset * bar
            fill = fills and offset % 8 == 7
            for sixteenth in range(16):
                time = bar_start + sixteenth * beat / 4
                if "kick" in active and sixteenth % 16 in steps["kick"] and not (fill and sixteenth >= 12):
                    place("kick", kick, time, 1.5)
                if "hat" in active and sixteenth % 16 in steps["hat"]:
                    place("hat", hat, time, 0.35)
                if "open_hat" in active and sixteenth % 4 == 2:
                    place("open_hat", open_hat, time)
                if "snare" in active and (sixteenth in steps["snare"] or (fill and sixteenth >= 12)):
                    place("snare", snare, time, 0.8)
                if "perc" in active and sixteenth in (3, 7, 11, 14):
                    place("perc", perc, time)
            if "roll" in active:  # a snare roll that doubles up towards the drop
                per_beat = 1 if offset < length // 2 else 2 if offset < length - 2 else 4
                for hit in range(4 * per_beat):
                    place("roll", snare, bar_start + hit * beat / per_beat, 0.3 + 0.5 * (offset + 1) / length)
            notes = chord_notes(bar_index)
            length_samples = int(bar * sr)
            envelope = np.minimum(1.0, np.arange(length_samples) / (0.01 * sr)).astype(np.float32)
            if "bass" in parts[kind]:
                for eighth in range(8):
                    if (eighth % 2 == 1 or rng.random() < 0.3) and "bass" in active:
                        size = int(beat / 2 * sr * 0.9)
                        tone = _tone(notes[0] / 2, size, sr, bass_harmonics) * np.exp(-np.arange(size) / sr * 6)
                        place("bass", tone.astype(np.float32), bar_start + eighth * beat / 2, 0.5)
            if "chords" in active:
                for beat_index in (0, 1.5, 2.5, 3.5):  # a syncopated stab
                    size = int(beat * 0.4 * sr)
                    stab = sum(_tone(f, size, sr, 5) for f in notes) * np.exp(-np.arange(size) / sr * 9)
                    place("chords", stab.astype(np.float32), bar_start + beat_index * beat, 0.22)
            if "pad" in active:
                pad = sum(_tone(f, length_samples, sr, pad_harmonics) for f in notes) * envelope
                place("pad", (pad * 0.12).astype(np.float32), bar_start)
            if "lead" in active:
                for sixteenth in range(0, 16, 2):
                    size = int(beat / 2 * sr * 0.8)
                    note = root * 2 * 2 ** ((loop[bar_index % 4] + arpeggio[(sixteenth // 2) % 4]) / 12)
                    tone = _tone(note, size, sr, lead_harmonics) * np.exp(-np.arange(size) / sr * 5)
                    place("lead", tone.astype(np.float32), bar_start + sixteenth * beat / 4, 0.22)
        if "riser" in parts[kind]:  # noise rising in level and brightness over the whole build
            size = int(length * bar * sr)
            noise = rng.standard_normal(size)
            if "riser" in active:
                ramp = np.linspace(0, 1, size) ** 2
                bright = np.diff(noise, prepend=0.0)
                place("riser", ((noise * (1 - ramp) + bright * ramp) * ramp * 0.12).astype(np.float32), start)
    mix = sum(stems.values()) * np.float32(0.35 * gain)
    mix = np.tanh(mix).astype(np.float32)  # a gentle limiter: louder stays louder, never clips
    return np.stack([mix, np.roll(mix, 11) * 0.95]).astype(np.float32), starts
