"""The development set and the independent check of bench/accuracy.py, regenerated (never
committed as audio) and cached under ~/.cache/cratesense-bench/devset.

Every piece carries its truth from its own score or chart, never from an analysis:
tempo at the notated beat (music21's ``beatDuration``: the dotted quarter of 6/8, 9/8, 12/8),
key (the score's key, or its key signature read with the final bass note), the bar lines
(measure starts, a pickup excluded) and beats per bar. Sources:

  synthesized   tests/audiogen.py drum + chord tracks (house, techno, d&b, hip-hop, ballad)
  folk          Essen folk melodies (music21), key from the ABC ``K:`` field
  irish         Ryan's Mammoth Collection (music21): reels, jigs (6/8), slip jigs (9/8),
                hornpipes, played twice through on a fiddle, flute or accordion; fast
  classical     string quartets and piano music (music21: Beethoven, Mozart, Haydn, Schumann...)
                on their own instruments; some voiced for an orchestra, some on a piano
  polyphony     Renaissance and early Baroque vocal polyphony (music21: Monteverdi's madrigals,
                Palestrina's masses) sung by a choir or played on an organ or slow strings: soft
                attacks, no drums; key only where the signature and final bass give one (most
                are modal, so tempo and bars only)
  pop           MMA (Musical MIDI Accompaniment, Debian ``mma``) arrangements of cadential chord
                charts in its rock, pop, trance, funk, latin, waltz, 6/8 and fast grooves;
                a third of them modulate to the dominant (or relative) and return
  blupi         Debian's planetblupi-music-midi (tempo event only: its key signatures are all C)
  edm-synth-a   electronic dance productions (bench/edm.py: house, techno, trance, drum & bass,
                hip-hop, pop, dubstep; minor keys mostly, riff- and bass-led, detuned, filtered,
                sidechained, swung, long drum-only intros) as producer A writes and sounds them,
                synthesized with numpy
  edm-midi-fluidr3  producer A's writing as MIDI, rendered by FluidSynth with FluidR3 GM's synths
  band-msgl     a band with a drummer: MMA's swing, blues, shuffle, ragtime, rock and country
                grooves with a lead line that bends to blue notes, mostly major keys, through
                MuseScore General Lite (Debian ``musescore-general-soundfont-small``), a
                soundfont nothing else uses

Folds are sources: every subset above is a tuning fold (weights and thresholds are chosen on
them). The held-out folds are never tuned on; bench/accuracy.py reports them beside the
tuning folds:

  edm-synth-b   productions as producer B writes and sounds them (FM basses, square plucks and
                arpeggios, off-beat chord stabs with sevenths, harder mastering), numpy
  edm-midi-timgm  producer B's writing as MIDI through another soundfont (TimGM6mb, Debian
                ``timgm6mb-soundfont``), never used for anything else
  bach-chorales Bach chorales (music21, key from the Riemenschneider analyses)
  openttd       Debian's openttd-openmsx (tempo event; key signature where written and where the
                notes do not contradict its mode: ``third_agrees``, as for the Essen melodies)

Every electronic production carries its detune (cents from A4 = 440 Hz) as its tuning truth.
"""

from __future__ import annotations

import glob
import json
import logging
import os
import random
import shutil
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from audiogen import encode, synth_track
from cratesense.analysis.keys import Key, parse_key

log = logging.getLogger(__name__)

CACHE = Path(os.environ.get("CRATESENSE_BENCH_CACHE", Path.home() / ".cache" / "cratesense-bench")) / "devset"
SOUNDFONT = "/usr/share/sounds/sf2/FluidR3_GM.sf2"
HELD_OUT_SOUNDFONT = "/usr/share/sounds/sf2/TimGM6mb.sf2"
MAX_SECONDS = 420.0  # longer movements are left out (render and peer time)
DEV_SUBSETS = ("synthesized", "folk", "irish", "classical", "polyphony", "pop", "blupi", "edm-synth-a", "edm-midi-fluidr3",
               "band-msgl")
CHECK_SUBSETS = ("edm-synth-b", "edm-midi-timgm", "bach-chorales", "openttd")  # the held-out folds
ELECTRONIC_SUBSETS = ("edm-synth-a", "edm-midi-fluidr3", "edm-synth-b", "edm-midi-timgm")
_COMPOUND = {"6/8": 2, "9/8": 3, "12/8": 4, "6/4": 2}


@dataclass
class Piece:
    name: str
    subset: str
    audio: str  # path of the rendered audio (flac)
    bpm: float | None  # at the notated beat
    key: str | None  # "A minor"
    beats_per_bar: int | None
    downbeats: list[float] | None  # seconds of every bar line (bar 1 first)
    tags: list[str] = field(default_factory=list)  # ternary, fast, modulating, orchestral, piano...
    tuning_cents: float | None = None  # the production's detune, where it is known

    @property
    def key_truth(self) -> Key | None:
        return parse_key(self.key) if self.key else None


# --- rendering and caching ------------------------------------------------------------------------


def _cached(subset: str, name: str) -> Piece | None:
    meta = CACHE / subset / f"{name}.json"
    if meta.exists():
        piece = Piece(**json.loads(meta.read_text()))
        if Path(piece.audio).exists():
            return piece
    return None


def _store(piece: Piece) -> Piece:
    (CACHE / piece.subset / f"{piece.name}.json").write_text(json.dumps(asdict(piece)))
    return piece


def render(midi: Path, flac: Path, soundfont: str = SOUNDFONT) -> bool:
    """MIDI -> FLAC with fluidsynth and FluidR3 GM (the same settings for every source)."""
    seconds = _end_every_note(midi)
    wav = flac.with_suffix(".wav")
    try:
        done = subprocess.run(
            ["fluidsynth", "-ni", "-g", "0.6", "-r", "44100", "-F", str(wav), soundfont, str(midi)],
            capture_output=True, timeout=60 + seconds,
        )
    except subprocess.TimeoutExpired:
        done = None
    if done is None or done.returncode != 0 or not wav.exists() or wav.stat().st_size < 44100 * 4 * 8:
        wav.unlink(missing_ok=True)
        return False
    # A release tail of 2 s at most: fluidsynth renders until every voice has died away.
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-i", str(wav), "-t", f"{seconds + 2:.2f}", str(flac)], check=True)
    wav.unlink()
    return True


def _end_every_note(path: Path) -> float:
    """End every note on every channel where the music ends (music21 can leave a note hanging:
    a note-off written before its note-on at the same tick; a looped string sample then rings
    for ever), and return the length in seconds."""
    import mido

    midi = mido.MidiFile(path)
    end = max(sum(message.time for message in track) for track in midi.tracks)
    last = midi.tracks[-1]
    now = sum(message.time for message in last)
    if last and last[-1].type == "end_of_track":
        now -= last[-1].time
        last.pop()
    wait = end - now
    for channel in range(16):
        for control in (64, 123, 120):  # sustain pedal off, all notes off, all sound off
            last.append(mido.Message("control_change", channel=channel, control=control, value=0, time=wait))
            wait = 0
    last.append(mido.MetaMessage("end_of_track", time=0))
    midi.save(path)
    return float(midi.length)


def set_tempo(path: Path, quarter_bpm: float) -> None:
    """One tempo for the whole MIDI file (quarter notes per minute), replacing every tempo event."""
    import mido

    midi = mido.MidiFile(path)
    for track in midi.tracks:
        kept, carry = mido.MidiTrack(), 0
        for message in track:
            if message.type == "set_tempo":
                carry += message.time
                continue
            kept.append(message.copy(time=message.time + carry))
            carry = 0
        track[:] = kept
    midi.tracks[0].insert(0, mido.MetaMessage("set_tempo", tempo=mido.bpm2tempo(quarter_bpm), time=0))
    midi.save(path)


def _set_programs(path: Path, programs: list[int]) -> None:
    """Give each MIDI channel (but drums) the next program of ``programs``."""
    import mido

    midi = mido.MidiFile(path)
    channels: dict[int, int] = {}
    for track in midi.tracks:
        for index, message in enumerate(track):
            if message.type == "program_change" and message.channel != 9:
                program = channels.setdefault(message.channel, programs[len(channels) % len(programs)])
                track[index] = message.copy(program=program)
    midi.save(path)


def _repeat_midi(path: Path, times: int, length_ticks: int) -> None:
    """Play a whole MIDI file ``times`` times through (a tune played again, as folk players do)."""
    import mido

    midi = mido.MidiFile(path)
    for track in midi.tracks:
        events, now = [], 0
        for message in track:
            now += message.time
            if message.type != "end_of_track":
                events.append((now, message))
        repeated = []
        for turn in range(times):
            for at, message in events:
                if turn and message.is_meta and message.type in ("set_tempo", "track_name", "time_signature", "key_signature"):
                    continue
                repeated.append((at + turn * length_ticks, message))
        repeated.sort(key=lambda item: item[0])
        track.clear()
        previous = 0
        for at, message in repeated:
            track.append(message.copy(time=at - previous))
            previous = at
        track.append(mido.MetaMessage("end_of_track", time=0))
    midi.save(path)


# --- scores (music21) -----------------------------------------------------------------------------


def _meter(score) -> tuple[str, float, int] | None:
    """The one time signature of a score, its beat in quarter notes and beats per bar."""
    from music21 import meter

    signatures = {ts.ratioString for ts in score.recurse().getElementsByClass(meter.TimeSignature)}
    if len(signatures) != 1:
        return None
    ratio = signatures.pop()
    numerator, denominator = (int(x) for x in ratio.split("/"))
    if ratio in _COMPOUND:
        return ratio, 3 * 4.0 / denominator, _COMPOUND[ratio]  # the dotted beat: three eighths (or quarters)
    if ratio not in ("2/4", "3/4", "4/4", "2/2", "3/2", "4/2", "5/4", "3/8"):
        return None
    if ratio == "3/8":
        return ratio, 1.5, 1
    return ratio, 4.0 / denominator, numerator


def _bar_lines(score) -> list[float]:
    """Quarter-note offsets of every bar line: each measure's start, a pickup (padded on the
    left) excluded."""
    part = score.parts[0] if score.parts else score
    return [float(m.offset) for m in part.getElementsByClass("Measure") if not m.paddingLeft]


def _score_piece(
    score, subset: str, name: str, *, key: Key | None, beat_bpm: float, programs: list[int] | None, repeat_to: float,
    tags: list[str],
) -> Piece | None:
    """Write a music21 score to MIDI at one tempo, render it, and keep its truth."""
    try:  # music21's MIDI writer plays the repeats: so must the bar lines
        score = score.expandRepeats()
    except Exception as exc:
        log.info("skipped %s: %s", name, exc)
        return None
    meter = _meter(score)
    if meter is None:
        return None
    ratio, beat_quarters, beats_per_bar = meter
    quarter_bpm = beat_bpm * beat_quarters
    seconds_per_quarter = 60.0 / quarter_bpm
    length = float(score.highestTime)
    times = max(1, min(4, int(np.ceil(repeat_to / (length * seconds_per_quarter)))))
    if length * seconds_per_quarter * times > MAX_SECONDS:
        return None
    bars = _bar_lines(score)
    if len(bars) < 4:
        return None
    folder = CACHE / subset
    midi = folder / f"{name}.mid"
    try:
        score.write("midi", fp=str(midi))
        set_tempo(midi, quarter_bpm)
        if programs:
            _set_programs(midi, programs)
        if times > 1:
            import mido

            ticks = mido.MidiFile(midi).ticks_per_beat
            _repeat_midi(midi, times, int(round(length * ticks)))
    except Exception as exc:  # a score music21 cannot write is no ground truth we can use
        log.info("skipped %s: %s", name, exc)
        return None
    if key is not None and not third_agrees(midi, key):
        log.info("skipped %s: its notes contradict the stated mode of %s", name, key.name)
        return None
    flac = folder / f"{name}.flac"
    if not render(midi, flac):
        return None
    downbeats = [round((turn * length + bar) * seconds_per_quarter, 4) for turn in range(times) for bar in bars]
    tags = list(tags) + (["ternary"] if ratio in ("3/4", "6/8", "9/8", "12/8", "3/8", "3/2", "6/4") else [])
    if beat_bpm >= 150:
        tags.append("fast")
    return _store(Piece(name, subset, str(flac), round(beat_bpm, 2), key.name if key else None, beats_per_bar,
                        downbeats, sorted(set(tags))))


def third_agrees(midi_path: Path, key: Key) -> bool:
    """Whether the notes (by duration) hold the key's own third more than the other one: some
    Essen transcriptions state a tonic whose mode their notes contradict (K:D over F and Bb)."""
    import mido

    held = np.zeros(12)
    started: dict[tuple[int, int], float] = {}
    now = 0.0
    for message in mido.MidiFile(midi_path):
        now += message.time
        if message.type not in ("note_on", "note_off") or message.channel == 9:
            continue
        if message.type == "note_on" and message.velocity > 0:
            started[(message.channel, message.note)] = now
        elif (message.channel, message.note) in started:
            held[message.note % 12] += now - started.pop((message.channel, message.note))
    own = held[(key.tonic + (3 if key.minor else 4)) % 12]
    other = held[(key.tonic + (4 if key.minor else 3)) % 12]
    return own >= other


def _key_from_score(score) -> Key | None:
    """The key the score states: its key (ABC ``K:``, MusicXML mode), or its key signature read
    with the final bass note (the tonic or the relative minor's); None when neither fits
    (a modal tune, a movement ending in another key)."""
    from music21 import key as m21key

    keys = list(score.recurse().getElementsByClass(m21key.KeySignature))
    if not keys:
        return None
    first, last = keys[0], keys[-1]
    if first.sharps != last.sharps:
        return None
    mode = getattr(first, "mode", None)
    if mode in ("major", "minor"):
        k = first if isinstance(first, m21key.Key) else first.asKey(mode)
        return parse_key(f"{k.tonic.name.replace('-', 'b')} {mode}")
    notes = list(score.flatten().notes)
    if not notes:
        return None
    end = max(n.offset + n.quarterLength for n in notes)
    final = [n for n in notes if n.offset + n.quarterLength >= end - 1e-3]
    pitches = [p for n in final for p in n.pitches]
    if not pitches:
        return None
    bass = min(pitches, key=lambda p: p.ps).pitchClass
    major = first.asKey("major").tonic.pitchClass
    if bass == major:
        return Key(major, False)
    if bass == (major + 9) % 12:
        return Key(bass, True)
    return None


# --- the sources ------------------------------------------------------------------------------


GENRES = {
    "house": (120, 128, "four"),
    "techno": (125, 140, "four"),
    "drum&bass": (170, 176, "breakbeat"),
    "hip-hop": (85, 95, "boombap"),
    "ballad": (60, 80, "ballad"),
}


def synthesized(per_genre: int) -> list[Piece]:
    rng = random.Random(42)
    pieces = []
    folder = CACHE / "synthesized"
    for genre, (low, high, pattern) in GENRES.items():
        for index in range(per_genre):
            bpm = round(rng.uniform(low, high), 1)
            key = Key(rng.randrange(12), rng.random() < 0.5)
            seed = rng.randrange(10**6)
            name = f"{genre}-{index}"
            piece = _cached("synthesized", name)
            if piece is None:
                samples = synth_track(bpm=bpm, tonic=key.tonic, minor=key.minor, seconds=30, seed=seed, pattern=pattern)
                path = encode(samples, 44100, folder / f"{name}.flac")
                bar = 240.0 / bpm
                piece = _store(Piece(name, "synthesized", str(path), bpm, key.name, 4, [round(i * bar, 4) for i in range(int(30 / bar) + 1)],
                                     ["electronic"] + (["fast"] if bpm >= 150 else [])))
            pieces.append(piece)
    return pieces


def electronic(subset: str, per_genre: int) -> list[Piece]:
    """Electronic dance productions (bench/edm.py) of one fold: producer A or B, synthesized with
    numpy or written as MIDI and rendered through a soundfont."""
    import edmgen as edm

    producer = "A" if subset in ("edm-synth-a", "edm-midi-fluidr3") else "B"
    midi = "midi" in subset
    folder = CACHE / subset
    pieces = []
    for genre in edm.GENRE_ORDER:
        for index in range(per_genre):
            name = f"{genre}-{index}"
            piece = _cached(subset, name)
            if piece is None:
                song = edm.compose(f"{subset}:{name}", genre, producer)
                flac = folder / f"{name}.flac"
                if midi:
                    source = folder / f"{name}.mid"
                    edm.to_midi(song, source)
                    soundfont = SOUNDFONT if producer == "A" else HELD_OUT_SOUNDFONT
                    if not render(source, flac, soundfont):
                        continue
                    source.unlink()
                else:
                    encode(edm.render_synth(song), edm.RATE, flac)
                piece = _store(Piece(name, subset, str(flac), song.bpm, song.key_name, 4, song.downbeats,
                                     ["electronic"] + song.tags + (["fast"] if song.bpm >= 150 else []),
                                     tuning_cents=song.detune_cents))
            pieces.append(piece)
    return pieces


def folk(count: int) -> list[Piece]:
    """Essen folk songs, key from the ABC ``K:`` field, sung by a clarinet or an oboe."""
    from music21 import corpus

    rng = random.Random(7)
    pieces = []
    for path in sorted(corpus.getComposer("essenFolksong")):
        opus = corpus.parse(path)
        scores = list(getattr(opus, "scores", [opus]))
        rng.shuffle(scores)
        for number, score in enumerate(scores[:3]):
            name = f"{Path(path).stem}-{number}"
            piece = _cached("folk", name)
            if piece and not third_agrees(Path(piece.audio).with_suffix(".mid"), piece.key_truth):
                continue  # rendered before this check
            piece = piece or _folk_piece(score, name, random.Random(f"folk:{name}"))
            if piece:
                pieces.append(piece)
            if len(pieces) >= count:
                return pieces
    return pieces


def _folk_piece(score, name: str, rng: random.Random) -> Piece | None:
    key = _key_from_score(score)
    if key is None or score.highestTime < 12:
        return None
    return _score_piece(score, "folk", name, key=key, beat_bpm=round(rng.uniform(70, 140), 1),
                        programs=[rng.choice([71, 68, 73, 22])], repeat_to=40.0, tags=["melody"])


_IRISH = {  # kind -> (beat BPM range: reels and hornpipes at 2 beats a bar, jigs at the dotted quarter)
    "Reel": (95.0, 118.0),
    "Jig": (100.0, 126.0),
    "Hornpipe": (80.0, 100.0),
}


def irish(count: int) -> list[Piece]:
    from music21 import corpus

    folder = Path(corpus.__file__).parent / "ryansMammoth"
    rng = random.Random(11)
    files = sorted(p.name for p in folder.glob("*.abc"))
    rng.shuffle(files)
    pieces, per_kind = [], {kind: 0 for kind in _IRISH}
    for file in files:
        kind = next((k for k in _IRISH if file.endswith(f"{k}.abc")), None)
        if kind is None or per_kind[kind] >= count // len(_IRISH) + (kind == "Jig") * (count % len(_IRISH)):
            continue
        name = Path(file).stem
        piece = _cached("irish", name)
        if piece is None:
            try:
                score = corpus.parse(f"ryansMammoth/{file}")
            except Exception:
                continue
            key = _key_from_score(score)
            if key is None:
                continue
            low, high = _IRISH[kind]
            meter = _meter(score)
            if meter and meter[0] in ("2/4",) and kind == "Jig":
                continue  # a "jig" written in 2/4 is a single jig in another notation
            fast = ["fast"] if kind == "Reel" else []
            own = random.Random(f"irish:{name}")  # the piece's own choices: the same whatever is cached
            piece = _score_piece(score, "irish", name, key=key, beat_bpm=round(own.uniform(low, high), 1),
                                 programs=[own.choice([40, 73, 21, 110])], repeat_to=45.0, tags=["melody", kind.lower()] + fast)
        if piece:
            pieces.append(piece)
            per_kind[kind] += 1
        if len(pieces) >= count:
            break
    return pieces


_ORCHESTRA = [48, 73, 68, 60, 71, 42, 70, 57]  # strings, flute, oboe, horn, clarinet, cello, bassoon, trombone
_CLASSICAL = [
    "beethoven", "mozart", "haydn", "schumann_robert", "schumann_clara", "chopin", "joplin", "handel",
    "corelli", "cpebach", "schubert", "weber", "verdi", "beach", "liliuokalani", "johnson_j_r",
]


def classical(count: int) -> list[Piece]:
    """Quartets and piano music: a third as written, a third voiced for an orchestra, a third on
    a piano (the same movement is never used twice)."""
    from music21 import corpus

    rng = random.Random(5)
    paths = []
    for composer in _CLASSICAL:
        paths += [p for p in corpus.getComposer(composer) if p.suffix in (".mxl", ".xml", ".musicxml", ".krn")]
    # one file per movement: the .krn and .mxl copies of Beethoven's op. 18 no. 1 are the same music
    unique = {}
    for p in sorted(paths):
        unique.setdefault(str(p.with_suffix("")), p)
    paths = sorted(unique.values())
    rng.shuffle(paths)
    pieces = []
    for index, path in enumerate(paths):
        voicing = ("as written", "orchestral", "piano")[index % 3]
        name = f"{path.parent.name}-{path.stem}".replace(" ", "_")
        piece = _cached("classical", name)
        if piece is None:
            try:
                score = corpus.parse(path)
            except Exception:
                continue
            key = _key_from_score(score)
            if key is None:
                continue
            programs = {"as written": None, "orchestral": _ORCHESTRA, "piano": [0]}[voicing]
            meter = _meter(score)
            if meter is None:
                continue
            marks = [m for m in score.recurse().getElementsByClass("MetronomeMark") if m.number and not m.numberImplicit]
            stated = marks[0].getQuarterBPM() / meter[1] if marks else None
            bpm = stated if stated and 60 <= stated <= 170 else random.Random(f"classical:{name}").uniform(66, 150)
            tags = [voicing.replace("as written", "quartet" if len(score.parts) == 4 else "ensemble"), "polyphonic"]
            signatures = {k.sharps for k in score.recurse().getElementsByClass("KeySignature")}
            if len(signatures) > 1:
                tags.append("modulating")
            piece = _score_piece(score, "classical", name, key=key, beat_bpm=round(bpm, 1), programs=programs,
                                 repeat_to=0.0, tags=tags)
        if piece:
            pieces.append(piece)
        if len(pieces) >= count:
            break
    return pieces


_SOFT_ATTACKS = [52, 53, 19, 20, 49, 48]  # choir aahs, voice oohs, church and reed organ, slow and plain strings


def polyphony(count: int) -> list[Piece]:
    """Monteverdi and Palestrina (music21), each piece on one soft-attack voice, at a
    renaissance tactus (the notated beat at 60-100)."""
    from music21 import corpus

    paths = sorted(p for composer in ("monteverdi", "palestrina") for p in corpus.getComposer(composer))
    random.Random(23).shuffle(paths)
    pieces = []
    for path in paths:
        name = f"{path.parent.name}-{path.stem}".replace(" ", "_")
        piece = _cached("polyphony", name)
        if piece is None:
            try:
                score = corpus.parse(path)
            except Exception:
                continue
            own = random.Random(f"polyphony:{name}")
            piece = _score_piece(score, "polyphony", name, key=_key_from_score(score), beat_bpm=round(own.uniform(60, 100), 1),
                                 programs=[own.choice(_SOFT_ATTACKS)], repeat_to=0.0, tags=["polyphonic", "vocal"])
        if piece:
            pieces.append(piece)
        if len(pieces) >= count:
            break
    return pieces


# MMA grooves by meter, with the range of the beat a listener counts (the dotted quarter of 6/8)
_GROOVES_44 = [
    ("8Beat", 100, 130), ("50sRock", 140, 175), ("SoftRock", 90, 120), ("Rock128", 66, 90), ("PopBallad", 66, 84),
    ("Trance", 128, 140), ("RockBallad", 70, 90), ("Ska", 130, 160), ("FolkRock", 100, 130), ("BVFunk", 95, 115),
    ("Samba", 90, 110), ("BossaNova", 110, 140), ("JazzRock", 110, 140), ("BubbleRock", 120, 140), ("Twist", 140, 165),
    ("CountrySwing", 110, 140), ("Blues", 90, 120), ("DSoul", 90, 110), ("Swing", 120, 150), ("8Beat", 130, 150),
]
# (MMA's FastWaltz is "a waltz in 1": its quarters are not played, so it has no beat to count)
_GROOVES_3 = [("Waltz", 110, 150), ("RockWaltz", 100, 140), ("JazzWaltz", 120, 160), ("CountryWaltz", 110, 150),
              ("Waltz", 150, 180), ("VieneseWaltz", 160, 185), ("FrenchWaltz", 110, 150), ("ArpeggioWaltz", 90, 130)]
_GROOVES_68 = [("Ballad68", 56, 76), ("68March", 100, 125), ("68Swing", 90, 120), ("Blues68", 56, 72), ("Arpeggio68", 60, 90)]
_GROOVES_FAST = [("BlueGrass", 170, 185), ("Polka", 110, 135), ("FastSwing", 100, 130), ("FastBlues", 160, 185), ("Quickstep", 100, 120)]
# 2/4 grooves MMA writes in 4 at twice the tempo ("double up on the tempo", says its manual)
_HALF_TIME = {"Polka", "FastSwing", "Quickstep"}
_MMA_LIBRARY = Path("/usr/share/mma/lib/stdlib")


def _groove_meter(groove: str) -> tuple[int, int, bool]:
    """MMA's beats per bar (``Time``: its tempo counts these) and the beats a listener counts
    per bar: a 6/8 groove is two dotted quarters however MMA counts it (its ``Time`` is 2, 4
    or 6), a simple meter is MMA's own count; and whether the meter is compound."""
    import re

    for source in sorted(_MMA_LIBRARY.glob("*.mma")):
        text = source.read_text(errors="replace")
        if re.search(rf"^\s*DefGroove\s+{re.escape(groove)}\b", text, re.I | re.M):
            time_ = int(re.search(r"^\s*Time\s+(\d+)", text, re.I | re.M).group(1))
            signature = re.search(r"^\s*TimeSig\s+(\d+)\s*/?\s*(\d+)", text, re.I | re.M)
            numerator, denominator = (int(signature.group(1)), int(signature.group(2))) if signature else (4, 4)
            compound = denominator == 8 and numerator % 3 == 0
            felt = numerator // 3 if compound else time_ // 2 if groove in _HALF_TIME else time_
            return time_, felt, compound
    raise ValueError(f"no MMA groove {groove}")


_MAJOR_CHARTS = [
    "I vi IV V | I vi ii V | I IV V I",
    "I IV V I | vi ii V I",
    "I V vi IV | I V IV I",
    "I I IV IV | V V I I",
    "ii V I vi | ii V I I",
    "I iii IV V | I IV V I",
]
_MINOR_CHARTS = [
    "i iv V i | i VI iv V | i iv V i",
    "i VI III VII | i iv V i",
    "i VII VI V | i iv V i",
    "i i iv iv | V V i i",
    "i iv VII III | VI iv V i",
]
_DEGREES = {"i": 0, "ii": 2, "iii": 4, "iv": 5, "v": 7, "vi": 9, "vii": 11}
_MAJOR_STEPS = {"I": 0, "ii": 2, "iii": 4, "IV": 5, "V": 7, "vi": 9, "vii": 11}
_MINOR_STEPS = {"i": 0, "III": 3, "iv": 5, "V": 7, "VI": 8, "VII": 10, "v": 7}
_NAMES = ("C", "Db", "D", "Eb", "E", "F", "F#", "G", "Ab", "A", "Bb", "B")
_MINOR_SIGNATURES = ("C", "C#", "D", "Eb", "E", "F", "F#", "G", "G#", "A", "Bb", "B")  # as MMA's KeySig wants them


def _chord(numeral: str, tonic: int, minor: bool, seventh: bool) -> str:
    steps = _MINOR_STEPS if minor else _MAJOR_STEPS
    root = _NAMES[(tonic + steps[numeral]) % 12]
    quality = "m" if numeral.islower() else ""
    if numeral in ("V",) and seventh:
        return root + "7"
    return root + quality


def _chart(tonic: int, minor: bool, rng: random.Random, modulate: bool) -> list[str]:
    """Bars of chord names: a cadential chart, and when ``modulate``, a middle section in the
    dominant (major) or the relative major (minor), then home again with a final cadence."""
    home = rng.choice(_MINOR_CHARTS if minor else _MAJOR_CHARTS)
    bars = [_chord(n, tonic, minor, rng.random() < 0.5) for n in home.replace("|", " ").split()]
    middle: list[str] = []
    if modulate:
        away_tonic, away_minor = ((tonic + 3) % 12, False) if minor else ((tonic + 7) % 12, False)
        pivot = _chord("V", away_tonic, False, True)  # the new key's dominant seventh
        middle = [pivot] + [_chord(n, away_tonic, away_minor, True) for n in "I IV V I vi ii V I".split()]
        middle += [_chord("V", tonic, minor, True)]  # back home through the home dominant
    ending = [_chord(n, tonic, minor, True) for n in (("i", "iv", "V", "i") if minor else ("I", "IV", "V", "I"))]
    return bars + bars + middle + bars + ending


def pop(count: int) -> list[Piece]:
    """MMA arrangements: 4/4 grooves, waltzes, 6/8 and fast grooves; a third modulate and return."""
    if not shutil.which("mma"):
        return []
    rng = random.Random(3)
    plan = []
    for index in range(count):
        group = (_GROOVES_44, _GROOVES_44, _GROOVES_3, _GROOVES_68, _GROOVES_FAST)[index % 5]
        groove, low, high = group[(index // 5) % len(group)]
        plan.append((index, groove, round(rng.uniform(low, high), 1), Key(rng.randrange(12), rng.random() < 0.4),
                     index % 3 == 1, rng.randrange(10**6)))
    pieces = []
    for index, groove, bpm, key, modulate, seed in plan:
        name = f"{index:02d}-{groove}"
        piece = _cached("pop", name) or _mma_piece(name, groove, bpm, key, modulate, random.Random(seed))
        if piece:
            pieces.append(piece)
    return pieces


def _mma_midi(folder: Path, name: str, tempo: float, groove: str, key: Key, chords: list[str]) -> Path | None:
    """MMA's MIDI file of a chart (``chords``: one a bar) in ``groove`` at MMA's ``tempo``, its
    key signature ``key``'s; or None when MMA refuses it."""
    signature = f"{_MINOR_SIGNATURES[key.tonic]} minor" if key.minor else _NAMES[key.tonic]
    chart = [f"Tempo {tempo:.2f}", f"Groove {groove}", f"KeySig {signature}"]
    chart += [f"{number} {chord}" for number, chord in enumerate(chords, 1)]
    source = folder / f"{name}.mma"
    source.write_text("\n".join(chart) + "\n")
    midi = folder / f"{name}.mid"
    done = subprocess.run(["mma", "-f", str(midi), str(source)], capture_output=True, text=True)
    if done.returncode != 0 or not midi.exists():
        log.info("mma failed on %s: %s", name, done.stdout[-300:] + done.stderr[-300:])
        return None
    return midi


def _mma_piece(name: str, groove: str, bpm: float, key: Key, modulate: bool, rng: random.Random) -> Piece | None:
    folder = CACHE / "pop"
    mma_beats, felt, compound = _groove_meter(groove)
    tempo = bpm * mma_beats / felt  # MMA's tempo counts its own beats
    bars = _chart(key.tonic, key.minor, rng, modulate)
    midi = _mma_midi(folder, name, tempo, groove, key, bars)
    if midi is None:
        return None
    import mido

    # MMA writes its tempo rounded to a whole number: the truth is what the MIDI file says.
    tempo = next(mido.tempo2bpm(m.tempo) for t in mido.MidiFile(midi).tracks for m in t if m.type == "set_tempo")
    bpm = round(tempo * felt / mma_beats, 3)
    bar_seconds = mma_beats * 60.0 / tempo
    flac = folder / f"{name}.flac"
    if not render(midi, flac):
        return None
    tags = ["arranged", "ternary" if felt == 3 or compound or groove == "Rock128" else "binary"]
    if bpm >= 150 or tempo >= 200:
        tags.append("fast")
    if modulate:
        tags.append("modulating")
    return _store(Piece(name, "pop", str(flac), bpm, key.name, felt,
                        [round(i * bar_seconds, 4) for i in range(len(bars))], tags))


# --- a band with a drummer: swing, blues, ragtime, rock, in major keys (tuning) ----------------------

BAND_SOUNDFONT = "/usr/share/sounds/sf3/MuseScore_General_Lite.sf3"  # Debian musescore-general-soundfont-small
# Grooves with a drummer (MMA: 4/4, its beat the one a listener counts), with their tempo ranges.
_BAND_GROOVES = [
    ("Blues", 80, 120), ("SwingWalk", 110, 165), ("ShuffleBoggie", 100, 140), ("50sRock", 140, 175),
    ("JazzGuitarWalk", 110, 160), ("CountrySwing", 110, 140), ("Dixie", 100, 140), ("RagTime", 80, 110),
    ("BasicRock", 100, 135), ("HillCountry", 100, 130), ("Swing", 120, 170), ("Charleston", 100, 135),
]
_SWUNG_GROOVES = {"Blues", "SwingWalk", "ShuffleBoggie", "JazzGuitarWalk", "CountrySwing", "Swing", "Dixie"}
# Charts as (semitones above the tonic, chord quality) per bar; the major-key blues, swing and
# ragtime changes (dominant sevenths on I, IV, V and the secondary dominants), rock's flat seventh.
_BAND_MAJOR_CHARTS = [
    "0:7 0:7 0:7 0:7 5:7 5:7 0:7 0:7 7:7 5:7 0:7 7:7",  # twelve-bar blues
    "0:7 5:7 0:7 0:7 5:7 5:7 0:7 0:7 7:7 5:7 0:7 7:7",  # quick change
    "0: 0: 9:7 9:7 2:7 2:7 7:7 7:7 0: 0:7 5: 5:m 0: 9:7 2:7 7:7",  # ragtime / swing: I VI7 II7 V7
    "0: 9:m 2:m 7:7 0: 9:m 2:m 7:7 0: 0:7 5: 5:m 0: 7:7 0: 0:",  # I vi ii V, I I7 IV iv
    "0: 10: 5: 0: 0: 10: 5: 0: 5: 5: 0: 0: 7: 5: 0: 7:",  # rock: I bVII IV I
    "0: 0: 5: 5: 7:7 7:7 0: 0: 0: 0: 5: 5: 7:7 7:7 0: 0:",  # country: I IV V7 I
]
_BAND_MINOR_CHARTS = ["0:m7 0:m7 0:m7 0:m7 5:m7 5:m7 0:m7 0:m7 8:7 7:7 0:m7 7:7"]  # minor blues
_LEADS = (65, 66, 56, 71, 0, 26, 22, 11, 57)  # alto/tenor sax, trumpet, clarinet, piano, guitar, harmonica, vibes, trombone
_CHORD_TONES = {"": (0, 4, 7), "7": (0, 4, 7, 10), "m": (0, 3, 7), "m7": (0, 3, 7, 10)}


def band(count: int) -> list[Piece]:
    """A band with a drummer (MMA's swing, blues, shuffle, ragtime, rock and country grooves) and
    a lead line with blue notes (the key's minor third, flat fifth and flat seventh over major
    chords), mostly in major keys, through a soundfont nothing else uses (MuseScore General
    Lite): what a soundfont's drums under a swing band look like to the key stage, which read
    such music as a production (openttd's regression, docs/notes-2026-12/issue-29.md). The key
    is the chart's, by construction; a piece whose notes hold the other mode's third more than
    the key's own is left out (``third_agrees``)."""
    if not (shutil.which("mma") and os.path.exists(BAND_SOUNDFONT)):
        return []
    rng = random.Random(29)
    plan = []
    for index in range(count):
        groove, low, high = _BAND_GROOVES[index % len(_BAND_GROOVES)]
        minor = index % 5 == 2  # one in five: a minor blues
        plan.append((index, groove, round(rng.uniform(low, high), 1), Key(rng.randrange(12), minor), rng.randrange(10**6)))
    pieces = []
    for index, groove, bpm, key, seed in plan:
        name = f"{index:02d}-{groove}"
        piece = _cached("band-msgl", name) or _band_piece(name, groove, bpm, key, random.Random(seed))
        if piece:
            pieces.append(piece)
    return pieces


def _band_piece(name: str, groove: str, bpm: float, key: Key, rng: random.Random) -> Piece | None:
    import mido

    folder = CACHE / "band-msgl"
    folder.mkdir(parents=True, exist_ok=True)
    chart = rng.choice(_BAND_MINOR_CHARTS if key.minor else _BAND_MAJOR_CHARTS)
    changes = [(int(step), quality) for step, quality in (bar.split(":") for bar in chart.split())]
    choruses = max(2, int(round(80.0 / (len(changes) * 4 * 60.0 / bpm))))
    bars = changes * choruses + [(0, "m" if key.minor else "")]
    chords = [f"{_NAMES[(key.tonic + step) % 12]}{quality}" for step, quality in bars]
    midi_path = _mma_midi(folder, name, bpm, groove, key, chords)
    if midi_path is None:
        return None
    midi = mido.MidiFile(midi_path)
    tempo = next(mido.tempo2bpm(m.tempo) for t in midi.tracks for m in t if m.type == "set_tempo")
    used = {m.channel for t in midi.tracks for m in t if hasattr(m, "channel")}
    channel = next(c for c in range(15, 0, -1) if c != 9 and c not in used)
    midi.tracks.append(_lead_line(bars, key, midi.ticks_per_beat, groove in _SWUNG_GROOVES, channel, rng))
    midi.save(midi_path)
    if not third_agrees(midi_path, key):
        log.info("%s: its notes hold the other third more than %s's own: left out", name, key.name)
        return None
    flac = folder / f"{name}.flac"
    if not render(midi_path, flac, BAND_SOUNDFONT):
        return None
    bar_seconds = 4 * 60.0 / tempo
    tags = ["band", "swung" if groove in _SWUNG_GROOVES else "straight", "binary"] + (["fast"] if tempo >= 150 else [])
    return _store(Piece(name, "band-msgl", str(flac), round(tempo, 3), key.name, 4,
                        [round(i * bar_seconds, 4) for i in range(len(bars))], tags))


def _lead_line(bars: list[tuple[int, str]], key: Key, ticks: int, swung: bool, channel: int, rng: random.Random):
    """A lead instrument's line over the chart (on a channel MMA left free): eighths and quarters on the chord's
    tones, a blue note (the key's minor third, flat fifth or flat seventh) now and then, each
    four-bar phrase coming to rest on the tonic chord's third, fifth or root, a rest between
    phrases; swung eighths in the swing grooves."""
    import mido

    track = mido.MidiTrack()
    track.append(mido.Message("program_change", channel=channel, program=rng.choice(_LEADS), time=0))
    centre = 60 + (key.tonic + 5) % 12 - 5  # the tonic nearest middle C .. F#4
    blues = rng.uniform(0.12, 0.3)
    long_eighth = int(ticks * (2 / 3 if swung else 0.5))
    events: list[tuple[int, int, int]] = []  # (start tick, note, length)
    previous = centre + 7
    for number, (step, quality) in enumerate(bars):
        start = number * 4 * ticks
        tones = [(key.tonic + step + t) % 12 for t in _CHORD_TONES[quality]]
        phrase_end = number % 4 == 3 or number == len(bars) - 1
        if phrase_end:
            rest = [(key.tonic + t) % 12 for t in (_CHORD_TONES["m" if key.minor else ""])]
            note = min((centre + o + pc - centre % 12 for pc in rest for o in (-12, 0, 12)), key=lambda n: abs(n - previous))
            events.append((start, note, 2 * ticks))
            previous = note
            continue
        beat = 0.0
        while beat < 4.0:
            eighths = rng.random() < 0.6
            if rng.random() < 0.15:
                beat += 1.0  # a rest
                continue
            for part in ((0, long_eighth), (long_eighth, ticks - long_eighth)) if eighths else ((0, ticks),):
                offset, length = part
                if rng.random() < blues:
                    pc = (key.tonic + rng.choice((3, 3, 6, 10))) % 12
                else:
                    pc = rng.choice(tones)
                candidates = [n for n in range(centre - 5, centre + 17) if n % 12 == pc]
                note = min(candidates, key=lambda n: abs(n - previous) + rng.random() * 4)
                events.append((start + int(beat * ticks) + offset, note, int(length * 0.9)))
                previous = note
            beat += 1.0
    messages = []
    for at, note, length in events:
        velocity = rng.randint(70, 100)
        messages.append((at, mido.Message("note_on", channel=channel, note=note, velocity=velocity)))
        messages.append((at + max(1, length), mido.Message("note_off", channel=channel, note=note, velocity=0)))
    messages.sort(key=lambda m: (m[0], m[1].type == "note_on"))
    now = 0
    for at, message in messages:
        track.append(message.copy(time=at - now))
        now = at
    return track


def blupi(seconds: float = 60.0) -> list[Piece]:
    """Debian's planetblupi MIDI files, cut to their first minute; tempo from the tempo event."""
    import mido

    folder = CACHE / "blupi"
    pieces = [p for p in (_cached("blupi", Path(f).stem) for f in glob.glob(str(folder / "*.json"))) if p]
    if pieces:
        return sorted(pieces, key=lambda p: p.name)
    sources = _debian_midi("planetblupi-music-midi")
    for source in sources:
        midi = mido.MidiFile(source)
        tempi = {msg.tempo for track in midi.tracks for msg in track if msg.type == "set_tempo"}
        if len(tempi) != 1:
            continue
        bpm = mido.tempo2bpm(tempi.pop())
        short = folder / f"{Path(source).stem}.mid"
        _cut_midi(midi, seconds).save(short)
        flac = short.with_suffix(".flac")
        if render(short, flac):
            pieces.append(_store(Piece(short.stem, "blupi", str(flac), round(bpm, 2), None, None, None, ["game"])))
    return pieces


def _debian_midi(package: str) -> list[str]:
    unpacked = CACHE / "debian" / package
    if not unpacked.exists():
        work = Path(tempfile.mkdtemp(prefix="deb-"))
        subprocess.run(["apt-get", "download", package], cwd=work, capture_output=True)
        debs = list(work.glob("*.deb"))
        if not debs:
            return []
        unpacked.mkdir(parents=True)
        subprocess.run(["dpkg", "-x", str(debs[0]), str(unpacked)], check=True)
        shutil.rmtree(work)
    return sorted(glob.glob(str(unpacked / "**" / "*.mid"), recursive=True))


def _cut_midi(midi, seconds: float):
    import mido

    tempo = next((m.tempo for t in midi.tracks for m in t if m.type == "set_tempo"), 500000)
    limit = mido.second2tick(seconds, midi.ticks_per_beat, tempo)
    cut = mido.MidiFile(ticks_per_beat=midi.ticks_per_beat, type=midi.type)
    for track in midi.tracks:
        new, now = mido.MidiTrack(), 0
        for message in track:
            now += message.time
            if now > limit:
                break
            if message.type != "end_of_track":
                new.append(message)
        for channel in range(16):  # silence every channel, or the player keeps going
            new.append(mido.Message("control_change", channel=channel, control=123, value=0, time=0))
        new.append(mido.MetaMessage("end_of_track", time=0))
        cut.tracks.append(new)
    return cut


# --- the independent check ------------------------------------------------------------------------


def bach_chorales(count: int) -> list[Piece]:
    """Bach chorales (music21): first the twenty with a Riemenschneider analysis (key: the
    analysis's first key), then others (key: the score's key signature read with its final
    bass note), at a chorale's tempo (quarter = 60-96), on an organ, strings or a choir."""
    from music21 import converter, corpus, roman

    folder = Path(corpus.__file__).parent / "bach" / "choraleAnalyses"
    analysed = {}
    for analysis in sorted(folder.glob("riemenschneider*.rntxt")):
        text = analysis.read_text(errors="replace")
        bwv = next((line.split(":", 1)[1].strip() for line in text.splitlines() if line.startswith("BWV:")), None)
        if bwv:
            analysed[f"bwv{bwv}"] = analysis
    chorales = sorted((p for p in corpus.getComposer("bach") if p.suffix == ".mxl"), key=lambda p: p.name)
    random.Random(17).shuffle(chorales)
    chorales.sort(key=lambda p: p.stem not in analysed)  # the analysed ones first, in shuffled order
    pieces = []
    for path in chorales:
        name = path.stem
        piece = _cached("bach-chorales", name)
        if piece is None:
            try:
                score = corpus.parse(path)
                if name in analysed:
                    rn = converter.parse(analysed[name], format="romanText")
                    first = next(iter(rn.recurse().getElementsByClass(roman.RomanNumeral)))
                    truth = parse_key(f"{first.key.tonic.name.replace('-', 'b')} {first.key.mode}")
                else:
                    truth = _key_from_score(score)
            except Exception:
                continue
            if truth is None:
                continue
            own = random.Random(f"bach:{name}")
            piece = _score_piece(score, "bach-chorales", name, key=truth, beat_bpm=round(own.uniform(60, 96), 1),
                                 programs=[own.choice([19, 48, 52])], repeat_to=40.0,
                                 tags=["chorale", "analysed" if name in analysed else "signature"])
        if piece:
            pieces.append(piece)
        if len(pieces) >= count:
            break
    return pieces


def openttd() -> list[Piece]:
    """Debian's openttd-openmsx: the tempo event (files with one tempo, or one that holds for
    nearly all of the piece), the key signature where one is written, bars from the start."""
    import mido

    folder = CACHE / "openttd"
    pieces = []
    for source in _debian_midi("openttd-openmsx"):
        name = Path(source).stem
        piece = _cached("openttd", name)
        if piece is None:
            midi = mido.MidiFile(source)
            tempi, signatures, keys = [], set(), set()
            for track in midi.tracks:
                now = 0
                for message in track:
                    now += message.time
                    if message.type == "set_tempo":
                        tempi.append((now, message.tempo))
                    elif message.type == "time_signature":
                        signatures.add((message.numerator, message.denominator))
                    elif message.type == "key_signature":
                        keys.add(message.key)
            distinct = {round(mido.tempo2bpm(t), 0) for _, t in tempi}
            if len(distinct) != 1:
                continue  # tempo changes: no one truth
            quarter_bpm = distinct.pop()
            numerator, denominator = signatures.pop() if len(signatures) == 1 else (4, 4)
            compound = (numerator, denominator) in ((6, 8), (9, 8), (12, 8))
            bpm = quarter_bpm * (2 / 3 if compound else 1) * (denominator / 4 if not compound else 1)
            beats = numerator // 3 if compound else numerator
            key = parse_key(keys.pop()) if len(keys) == 1 else None
            flac = folder / f"{name}.flac"
            if not render(Path(source), flac):
                continue
            bar = beats * 60.0 / bpm
            length = midi.length
            downbeats = [round(i * bar, 4) for i in range(int(length / bar) + 1)]
            piece = _store(Piece(name, "openttd", str(flac), round(bpm, 2), key.name if key else None, beats,
                                 downbeats, ["game"] + (["ternary"] if numerator in (3, 6, 9) else [])))
        if piece.key and not third_agrees(Path(source), parse_key(piece.key)):
            # The same rule as the Essen melodies' and the band's: a key signature whose mode the
            # notes contradict (a "G major" file holding Bb ten times longer than B: a sequencer's
            # default mode) is no truth; the piece keeps its tempo and bars.
            piece = _store(Piece(**{**asdict(piece), "key": None,
                                    "tags": sorted(set(piece.tags) | {"mode-contradicted"})}))
        pieces.append(piece)
    return pieces


def cached_pieces() -> list[Piece]:
    """Every piece rendered so far (no rendering, no music21): for the speed measurement."""
    found = (_cached(meta.parent.name, meta.stem) for meta in sorted(CACHE.glob("*/*.json")))
    return [piece for piece in found if piece is not None]


def build(*, quick: bool = False, check: bool = True) -> list[Piece]:
    """Every piece of the development set (and the independent check), rendering what is not
    cached yet."""
    for subset in DEV_SUBSETS + CHECK_SUBSETS:
        (CACHE / subset).mkdir(parents=True, exist_ok=True)
    scale = 0.34 if quick else 1.0
    n = lambda full: max(3, int(full * scale))  # noqa: E731
    per_genre = lambda full: max(1, int(full * scale))  # noqa: E731
    pieces = synthesized(n(8))
    pieces += electronic("edm-synth-a", per_genre(6))
    if check:
        pieces += electronic("edm-synth-b", per_genre(5))
    can_render = shutil.which("fluidsynth") and os.path.exists(SOUNDFONT)
    if not can_render:
        print("(no fluidsynth/FluidR3_GM: scripts/setup.sh bench installs them)", file=sys.stderr)
        return pieces
    pieces += electronic("edm-midi-fluidr3", per_genre(4))
    if check and os.path.exists(HELD_OUT_SOUNDFONT):
        pieces += electronic("edm-midi-timgm", per_genre(4))
    for builder, full in ((folk, 30), (irish, 36), (classical, 36), (polyphony, 30), (pop, 50)):
        pieces += builder(n(full))
    pieces += blupi()
    pieces += band(n(48))
    if check:
        pieces += bach_chorales(n(40)) + openttd()
    return pieces
