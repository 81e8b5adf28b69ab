"""The phrase development set of bench/phrases.py: arrangements whose section starts are known
by construction, regenerated (never committed as audio) and cached under
~/.cache/cratesense-bench/phrases.

Three sources, each carrying its truth from its own construction, never from an analysis:

  generated   tests/audiogen.py's ``arrangement``: dance and pop forms (intro, verse, build, drop,
              breakdown, outro) of 8/16/32 bars at 85-176 BPM, with fills every 8 bars and
              crashes, each part synthesized; the section starts are where the generator put
              them. Seeds 0-11 are the set the thresholds were tuned on ("tuning"); seeds from
              100 are never looked at while tuning ("held out").
  mma         MMA (Debian ``mma``) songs rendered with FluidSynth and the FluidR3 soundfont: a
              groove's own variants written section by section in the source (drums alone for
              the intro, the groove for a verse, its ``Plus``/``SusPlus`` variant for a chorus,
              its ``Sus`` variant without drums and bass for a breakdown, drums and bass for the
              outro); the section starts are the bars of the source at the MIDI file's tempo.
  edm         tests/edmgen.py's dance productions (written for #29 by another engineer, never
              looked at while tuning the phrases): house, techno, trance, drum & bass, hip-hop,
              pop and dubstep by its two producers, each in its plan of intro (drums alone),
              build, main part, breakdown, drop and outro; "main" is labelled a drop (it is the
              full track), the section starts are its bars.

Energy pairs: the same generated arrangement with its drums or its bass muted, and louder, for
the monotonicity check.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

import numpy as np
from audiogen import arrangement, encode

CACHE = Path(os.environ.get("CRATESENSE_BENCH_CACHE", Path.home() / ".cache" / "cratesense-bench")) / "phrases"
SOUNDFONT = "/usr/share/sounds/sf2/FluidR3_GM.sf2"
SR = 44100
TUNING_SEEDS = range(12)
HELD_OUT_SEEDS = range(100, 124)
DRUMS = frozenset({"kick", "hat", "open_hat", "snare", "roll", "perc", "crash"})
SPARSER = frozenset({"lead", "chords", "pad", "open_hat", "perc"})


@dataclass
class Arrangement:
    name: str
    source: str  # "generated" or "mma"
    split: str  # "tuning" or "held out"
    audio: str  # path of the rendered audio (flac)
    bpm: float
    first_downbeat: float  # seconds: bar 1 of the source
    starts: list[float]  # seconds: every section's start, the first at bar 1
    labels: list[str]  # intro, verse, build, drop, breakdown, outro
    bars: list[int]

    @property
    def bar_seconds(self) -> float:
        return 4 * 60.0 / self.bpm


def _cached(folder: Path, name: str) -> Arrangement | None:
    meta = folder / f"{name}.json"
    if meta.exists():
        found = Arrangement(**json.loads(meta.read_text()))
        if Path(found.audio).exists():
            return found
    return None


def _store(folder: Path, piece: Arrangement) -> Arrangement:
    (folder / f"{piece.name}.json").write_text(json.dumps(asdict(piece)))
    return piece


def _form(rng: random.Random) -> list[tuple[str, int]]:
    pick = rng.choice
    kind = pick(["dance", "dance", "pop", "progressive"])
    if kind == "dance":
        return [("intro", pick([16, 32])), (pick(["build", "verse"]), pick([8, 16])), ("drop", pick([16, 32])),
                ("breakdown", pick([8, 16, 32])), ("build", 8), ("drop", pick([16, 32])), ("outro", pick([16, 32]))]
    if kind == "pop":
        return [("intro", 8), ("verse", 16), ("drop", 16), ("verse", 16), ("build", 8), ("drop", 16),
                ("breakdown", 8), ("drop", 16), ("outro", pick([8, 16]))]
    return [("intro", 32), ("verse", 32), ("breakdown", 16), ("build", 16), ("drop", 32), ("verse", 16),
            ("outro", 32)]


def _generated_plan(seed: int) -> dict:
    rng = random.Random(seed)
    sections = _form(rng)
    bpm = round(rng.choice([rng.uniform(118, 132), rng.uniform(118, 132), rng.uniform(85, 100),
                            rng.uniform(168, 176)]), 2)
    pattern = "breakbeat" if bpm > 160 else rng.choice(["four", "four", "boombap"] if bpm < 110 else ["four"])
    return {"sections": sections, "bpm": bpm, "tonic": rng.randrange(12), "minor": rng.random() < 0.6,
            "seed": seed, "pattern": pattern, "lead_in": rng.choice([0.0, 0.0, 0.25])}


def generated(seed: int, *, muted: frozenset[str] = frozenset(), gain: float = 1.0, variant: str = "") -> Arrangement:
    folder = CACHE / "generated"
    folder.mkdir(parents=True, exist_ok=True)
    name = f"g{seed:03d}{variant}"
    found = _cached(folder, name)
    if found:
        return found
    plan = _generated_plan(seed)
    samples, starts = arrangement(plan["sections"], bpm=plan["bpm"], tonic=plan["tonic"], minor=plan["minor"],
                                  seed=seed, pattern=plan["pattern"], lead_in=plan["lead_in"], muted=muted, gain=gain)
    audio = encode(samples, SR, folder / f"{name}.flac")
    return _store(folder, Arrangement(
        name, "generated", "tuning" if seed in TUNING_SEEDS else "held out", str(audio), plan["bpm"], starts[0],
        starts, [kind for kind, _ in plan["sections"]], [bars for _, bars in plan["sections"]]))


def energy_pairs(seed: int) -> dict[str, Arrangement]:
    """One arrangement as written, without its drums, without its bass, with fewer parts (no
    lead, chords, pad or extra percussion), and louder."""
    return {"full": generated(seed), "no drums": generated(seed, muted=DRUMS, variant="-nodrums"),
            "no bass": generated(seed, muted=frozenset({"bass"}), variant="-nobass"),
            "sparser": generated(seed, muted=SPARSER, variant="-sparser"),
            "louder": generated(seed, gain=1.6, variant="-louder")}


# --- MMA songs -------------------------------------------------------------------------------------

# 4/4 grooves that have Plus, Sus and SusPlus variants, with tempo ranges that suit them
MMA_GROOVES = [("8Beat", 100, 135), ("50sRock", 140, 170), ("60sRock", 120, 150), ("FolkRock", 100, 130),
               ("BubbleRock", 120, 140), ("BoneyM", 115, 130), ("DSoul", 90, 110), ("JazzRock", 110, 140),
               ("Afro-Cuban", 100, 125), ("BossaNova", 110, 140), ("HillCountry", 110, 135), ("Calypso", 100, 125)]
_MELODIC = "Bass Walk Chord Arpeggio Scale Plectrum"
_PROGRESSIONS = [("C", "Am", "F", "G"), ("Am", "F", "C", "G"), ("C", "F", "G", "C"), ("Dm", "G", "C", "Am"),
                 ("Em", "C", "G", "D"), ("F", "G", "Em", "Am")]


def _mma_form(rng: random.Random) -> list[tuple[str, int]]:
    pick = rng.choice
    return [("intro", pick([8, 16])), ("verse", 16), ("drop", 16), ("breakdown", 8), ("verse", pick([8, 16])),
            ("drop", 16), ("outro", pick([8, 16]))]


def _mma_source(groove: str, tempo: float, form: list[tuple[str, int]], rng: random.Random) -> str:
    chords = rng.choice(_PROGRESSIONS)
    lines = [f"Tempo {tempo:.2f}", f"Groove {groove}"]
    bar = 0
    for kind, length in form:
        lines.append(f"AllTracks {_MELODIC} On")
        lines.append("AllTracks Drum On")
        if kind == "intro":
            lines += [f"Groove {groove}", f"AllTracks {_MELODIC} Off"]
        elif kind == "verse":
            lines.append(f"Groove {groove}")
        elif kind == "drop":
            lines.append(f"Groove {groove}SusPlus")
        elif kind == "breakdown":
            lines += [f"Groove {groove}Sus", "AllTracks Drum Off", "AllTracks Bass Walk Off"]
        elif kind == "outro":
            lines += [f"Groove {groove}", "AllTracks Chord Arpeggio Scale Plectrum Off"]
        for _ in range(length):
            lines.append(f"{bar + 1} {chords[bar % len(chords)]}")
            bar += 1
    return "\n".join(lines) + "\n"


def mma_song(index: int) -> Arrangement | None:
    if not shutil.which("mma") or not shutil.which("fluidsynth") or not os.path.exists(SOUNDFONT):
        return None
    folder = CACHE / "mma"
    folder.mkdir(parents=True, exist_ok=True)
    groove, low, high = MMA_GROOVES[index % len(MMA_GROOVES)]
    name = f"m{index:02d}-{groove}"
    found = _cached(folder, name)
    if found:
        return found
    rng = random.Random(1000 + index)
    form = _mma_form(rng)
    source = folder / f"{name}.mma"
    source.write_text(_mma_source(groove, rng.uniform(low, high), form, rng))
    midi = folder / f"{name}.mid"
    done = subprocess.run(["mma", "-f", str(midi), str(source)], capture_output=True, text=True)
    if done.returncode != 0 or not midi.exists():
        print(f"mma failed on {name}: {(done.stdout + done.stderr)[-300:]}", file=sys.stderr)
        return None
    import mido

    # MMA writes its tempo rounded: the truth is what the MIDI file says.
    tempo = next(mido.tempo2bpm(m.tempo) for t in mido.MidiFile(midi).tracks for m in t if m.type == "set_tempo")
    wav = folder / f"{name}.wav"
    subprocess.run(["fluidsynth", "-ni", "-g", "0.6", "-r", str(SR), "-F", str(wav), SOUNDFONT, str(midi)],
                   check=True, capture_output=True)
    flac = folder / f"{name}.flac"
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-i", str(wav), "-c:a", "flac", str(flac)], check=True)
    wav.unlink()
    bar_seconds = 4 * 60.0 / tempo
    starts, at = [], 0
    for _, length in form:
        starts.append(round(at * bar_seconds, 4))
        at += length
    return _store(folder, Arrangement(name, "mma", "held out", str(flac), round(tempo, 3), 0.0, starts,
                                      [kind for kind, _ in form], [length for _, length in form]))


# --- tests/edmgen.py's productions ----------------------------------------------------------------

EDM_LABELS = {"intro": "intro", "build": "build", "main": "drop", "breakdown": "breakdown", "drop": "drop",
              "outro": "outro"}


def edm_song(index: int) -> Arrangement:
    import edmgen

    folder = CACHE / "edm"
    folder.mkdir(parents=True, exist_ok=True)
    genre = edmgen.GENRE_ORDER[index % len(edmgen.GENRE_ORDER)]
    producer = "AB"[(index // len(edmgen.GENRE_ORDER)) % 2]
    name = f"e{index:02d}-{genre}-{producer}"
    found = _cached(folder, name)
    if found:
        return found
    song = edmgen.compose(f"phrases-{index}", genre, producer, seconds=180.0)
    samples = edmgen.render_synth(song)
    audio = encode(np.repeat(samples[:1], 2, axis=0), edmgen.RATE, folder / f"{name}.flac")
    starts = [round(song.seconds(4 * first), 4) for _, first, _ in song.sections]
    return _store(folder, Arrangement(name, "edm", "held out", str(audio), song.bpm, song.lead_in, starts,
                                      [EDM_LABELS[section] for section, _, _ in song.sections],
                                      [bars for _, _, bars in song.sections]))


EDM_SONGS = 14  # each genre by each producer


def build(*, tuning: bool = True, held_out: int = len(HELD_OUT_SEEDS), songs: int = len(MMA_GROOVES),
          edm: int = EDM_SONGS) -> list[Arrangement]:
    pieces = [generated(seed) for seed in (TUNING_SEEDS if tuning else [])]
    pieces += [generated(seed) for seed in list(HELD_OUT_SEEDS)[:held_out]]
    pieces += [song for song in (mma_song(index) for index in range(songs)) if song is not None]
    pieces += [edm_song(index) for index in range(edm)]
    return pieces
