"""Tempo and key accuracy against ground truth, and speed, side by side with peers in one run.

    python bench/accuracy.py [--quick] [--out DIR]

Ground truth the run regenerates:
  (a) synthesized tracks (tests/audiogen.py) with drums and cadential chord progressions at known
      BPM and key, across genres' typical tempi (house, techno, drum & bass, hip-hop, ballads);
  (b) rendered MIDI (fluidsynth + FluidR3 GM): Debian's planetblupi-music-midi (tempo from the
      MIDI's own tempo event; its key signatures are all the default C, so no key truth), and
      Essen folk songs from music21's corpus (key from each song's own ABC ``K:`` field), written
      to MIDI at a chosen tempo.

Peers, where installed (benchmark-only extras, never runtime dependencies): librosa
(``beat.beat_track``; chroma + Krumhansl-Kessler key profiles) and Essentia
(``RhythmExtractor2013``, ``KeyExtractor`` with the edma profile; AGPL, so never shipped).

Metrics: tempo Accuracy1 (within 4%) and Accuracy2 (also x2, x1/2, x3, x1/3); key exact match
and the MIREX weighted score (1 exact, 0.5 fifth, 0.3 relative, 0.2 parallel). Tempo is asked
for within 55-185 BPM (the set includes 60 BPM ballads; the agent's default range is 70-180).
"""

from __future__ import annotations

import argparse
import glob
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from audiogen import encode, synth_track  # noqa: E402
from cratesense.analysis.decode import AudioFile  # noqa: E402
from cratesense.analysis.features import ONSET_RATE, FeatureExtractor  # noqa: E402
from cratesense.analysis.key import best_matching_key, chroma, estimate_key, estimate_tuning  # noqa: E402
from cratesense.analysis.keys import Key, parse_key  # noqa: E402
from cratesense.analysis.loudness import LoudnessMeter  # noqa: E402
from cratesense.analysis.pipeline import analyze_file  # noqa: E402
from cratesense.analysis.tempo import estimate_tempo  # noqa: E402
from cratesense.analysis.embedding import compute_embedding  # noqa: E402

BPM_RANGE = (55.0, 185.0)
GENRES = {
    "house": (120, 128, "four"),
    "techno": (125, 140, "four"),
    "drum&bass": (170, 176, "breakbeat"),
    "hip-hop": (85, 95, "boombap"),
    "ballad": (60, 80, "ballad"),
}
SOUNDFONT = "/usr/share/sounds/sf2/FluidR3_GM.sf2"
_KK_MAJOR = np.array([6.35, 2.23, 3.48, 2.33, 4.38, 4.09, 2.52, 5.19, 2.39, 3.66, 2.29, 2.88])
_KK_MINOR = np.array([6.33, 2.68, 3.52, 5.38, 2.60, 3.53, 2.54, 4.75, 3.98, 2.69, 3.34, 3.17])


@dataclass
class Item:
    path: Path
    bpm: float | None
    key: Key | None
    group: str


@dataclass
class Score:
    tempo1: list[bool] = field(default_factory=list)
    tempo2: list[bool] = field(default_factory=list)
    key_exact: list[bool] = field(default_factory=list)
    mirex: list[float] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)


# --- ground truth ---------------------------------------------------------------------------


def synthesized_set(folder: Path, per_genre: int) -> list[Item]:
    rng = random.Random(42)
    items = []
    for genre, (low, high, pattern) in GENRES.items():
        for index in range(per_genre):
            bpm = round(rng.uniform(low, high), 1)
            key = Key(rng.randrange(12), rng.random() < 0.5)
            samples = synth_track(
                bpm=bpm, tonic=key.tonic, minor=key.minor, seconds=30, seed=rng.randrange(10**6), pattern=pattern
            )
            path = encode(samples, 44100, folder / f"{genre}-{index}.flac")
            items.append(Item(path, bpm, key, "synthesized"))
    return items


def _render(midi: Path, wav: Path) -> bool:
    result = subprocess.run(
        ["fluidsynth", "-ni", "-g", "0.6", "-r", "44100", "-F", str(wav), SOUNDFONT, str(midi)],
        capture_output=True,
    )
    return result.returncode == 0 and wav.exists() and wav.stat().st_size > 44100 * 4 * 8


def blupi_set(folder: Path, seconds: float) -> list[Item]:
    """Debian's planetblupi MIDI files, cut to their first minute, tempo from the tempo event."""
    import mido

    cache = Path(tempfile.mkdtemp(prefix="blupi-"))
    subprocess.run(["apt-get", "download", "planetblupi-music-midi"], cwd=cache, capture_output=True)
    debs = list(cache.glob("*.deb"))
    if not debs:
        return []
    subprocess.run(["dpkg", "-x", str(debs[0]), str(cache / "x")], check=True)
    items = []
    for source in sorted(glob.glob(str(cache / "x" / "**" / "*.mid"), recursive=True)):
        midi = mido.MidiFile(source)
        tempi = {msg.tempo for track in midi.tracks for msg in track if msg.type == "set_tempo"}
        if len(tempi) != 1:
            continue
        bpm = mido.tempo2bpm(tempi.pop())
        cut = _cut_midi(midi, seconds)
        short = folder / f"blupi-{Path(source).stem}.mid"
        cut.save(short)
        wav = folder / f"blupi-{Path(source).stem}.wav"
        if _render(short, wav):
            items.append(Item(wav, round(bpm, 2), None, "rendered"))
    return items


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
        # Silence every channel and end the track, or the player keeps going.
        for channel in range(16):
            new.append(mido.Message("control_change", channel=channel, control=123, value=0, time=0))
        new.append(mido.MetaMessage("end_of_track", time=0))
        cut.tracks.append(new)
    return cut


def _set_tempo(path: Path, bpm: float) -> None:
    """Replace every tempo event of a MIDI file with one at ``bpm`` (quarter notes)."""
    import mido

    midi = mido.MidiFile(path)
    for track in midi.tracks:
        for index, message in enumerate(track):
            if message.type == "set_tempo":
                track[index] = message.copy(tempo=mido.bpm2tempo(bpm))
    midi.tracks[0].insert(0, mido.MetaMessage("set_tempo", tempo=mido.bpm2tempo(bpm), time=0))
    midi.save(path)


def folk_set(folder: Path, count: int) -> list[Item]:
    """Essen folk songs (music21 corpus), key from the ABC ``K:`` field, rendered at a set tempo."""
    try:
        from music21 import corpus, key as m21key
    except ImportError:
        return []
    rng = random.Random(7)
    items = []
    for path in sorted(corpus.getComposer("essenFolksong")):
        if len(items) >= count:
            break
        try:
            opus = corpus.parse(path)
        except Exception:
            continue
        scores = list(getattr(opus, "scores", [opus]))
        rng.shuffle(scores)
        for score in scores[:2]:
            keys = list(score.recurse().getElementsByClass(m21key.Key))
            if len(keys) != 1:
                continue  # a key change, or only a key signature without a mode
            truth = parse_key(f"{keys[0].tonic.name.replace('-', 'b')} {keys[0].mode}")
            if truth is None or score.highestTime < 16:
                continue
            bpm = round(rng.uniform(80, 140), 1)
            midi = folder / f"folk-{len(items)}.mid"
            try:
                score.write("midi", fp=str(midi))
                _set_tempo(midi, bpm)
            except Exception:
                continue  # a score music21 cannot write: not ground truth we can use
            wav = midi.with_suffix(".wav")
            if _render(midi, wav):
                items.append(Item(wav, bpm, truth, "rendered"))
            if len(items) >= count:
                break
    return items


# --- the methods --------------------------------------------------------------------------------


def decode(path: Path) -> tuple[np.ndarray, np.ndarray, int]:
    """The analysis stream (int16, 11025 Hz) and the native channels, decoded once."""
    analysis, native, rate = [], [], 44100
    with AudioFile(path) as audio:
        for block in audio.blocks(native=True):
            analysis.append(block.analysis)
            if block.native is not None:
                native.append(block.native)
                rate = block.native_rate
    return np.concatenate(analysis), np.concatenate(native, axis=1), rate


def cratesense_descriptors(analysis: np.ndarray, native: np.ndarray, rate: int):
    """Every descriptor stage on already-decoded audio: tempo, key, loudness, embedding."""
    extractor = FeatureExtractor()
    for start in range(0, analysis.size, 65536):
        extractor.feed(analysis[start : start + 65536])
    features = extractor.finish()
    meter = LoudnessMeter(rate, tuple(f"C{i}" for i in range(native.shape[0])))
    meter.feed(native)
    meter.finish()
    tempo = estimate_tempo(features.onset, ONSET_RATE, BPM_RANGE)
    tuning = estimate_tuning(features.pitch)
    chroma_frames = chroma(features.pitch, tuning)
    key = estimate_key(chroma_frames, features.energy, tuning)
    compute_embedding(features, chroma_frames)
    return (tempo.bpm if tempo else None), (key.key if key else None)


def librosa_tempo_key(y: np.ndarray, sr: int):
    import librosa

    tempo, _ = librosa.beat.beat_track(y=y, sr=sr)
    chroma_mean = librosa.feature.chroma_stft(y=y, sr=sr).mean(axis=1)
    return float(np.atleast_1d(tempo)[0]), best_matching_key(chroma_mean, _KK_MAJOR, _KK_MINOR)[0]


def essentia_methods():
    try:
        import essentia

        essentia.log.infoActive = False
        essentia.log.warningActive = False
        import essentia.standard as es
    except ImportError:
        return None
    rhythm = es.RhythmExtractor2013(method="multifeature")
    key_extractor = es.KeyExtractor(profileType="edma")

    def tempo_key(audio: np.ndarray):
        bpm = rhythm(audio)[0]
        tonic, scale, _ = key_extractor(audio)
        return float(bpm), parse_key(f"{tonic} {scale}")

    def load_and_analyze(path: Path):
        stereo, rate, *_ = es.AudioLoader(filename=str(path))()
        mono = es.MonoMixer()(stereo, stereo.shape[1])
        if rate != 44100:
            mono = es.Resample(inputSampleRate=rate, outputSampleRate=44100)(mono)
        result = tempo_key(mono)
        es.LoudnessEBUR128(sampleRate=rate)(stereo)
        return result

    return tempo_key, load_and_analyze


# --- scoring ------------------------------------------------------------------------------------


def tempo_scores(estimate: float | None, truth: float) -> tuple[bool, bool]:
    if not estimate:
        return False, False
    within = lambda factor: abs(estimate - truth * factor) <= 0.04 * truth * factor  # noqa: E731
    return within(1), any(within(f) for f in (1, 2, 0.5, 3, 1 / 3))


def mirex(estimate: Key | None, truth: Key) -> float:
    if estimate is None:
        return 0.0
    if estimate == truth:
        return 1.0
    if estimate.minor == truth.minor and (estimate.tonic - truth.tonic) % 12 in (5, 7):
        return 0.5
    relative = (truth.tonic + 3) % 12 if truth.minor else (truth.tonic - 3) % 12
    if estimate.minor != truth.minor and estimate.tonic == relative:
        return 0.3
    if estimate.minor != truth.minor and estimate.tonic == truth.tonic:
        return 0.2
    return 0.0


def record(score: Score, item: Item, bpm, key, seconds: float) -> None:
    score.seconds.append(seconds)
    if item.bpm is not None:
        a1, a2 = tempo_scores(bpm, item.bpm)
        score.tempo1.append(a1)
        score.tempo2.append(a2)
    if item.key is not None:
        score.key_exact.append(key == item.key)
        score.mirex.append(mirex(key, item.key))


def progress(message: str, started: float | None) -> None:
    took = f" in {time.perf_counter() - started:.0f} s" if started is not None else ""
    print(f"... {message}{took}", file=sys.stderr, flush=True)


def percent(values) -> str:
    return f"{100 * np.mean(values):5.1f}%" if values else "    -"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a smaller set (a few minutes)")
    parser.add_argument("--out", type=Path, default=None, help="keep the generated audio here")
    args = parser.parse_args()
    folder = args.out or Path(tempfile.mkdtemp(prefix="cratesense-accuracy-"))
    folder.mkdir(parents=True, exist_ok=True)
    per_genre = 3 if args.quick else 8
    started = time.perf_counter()
    items = synthesized_set(folder, per_genre)
    progress(f"synthesized {len(items)} tracks", started)
    if shutil.which("fluidsynth") and os.path.exists(SOUNDFONT):
        started = time.perf_counter()
        items += blupi_set(folder, 30 if args.quick else 60)
        progress("rendered planetblupi MIDI", started)
        started = time.perf_counter()
        items += folk_set(folder, 10 if args.quick else 30)
        progress("rendered Essen folk songs", started)
    else:
        print("(no fluidsynth/FluidR3_GM: apt-get install fluidsynth fluid-soundfont-gm for the rendered set)")
    groups = sorted({item.group for item in items})
    print(f"{len(items)} tracks: " + ", ".join(f"{sum(i.group == g for i in items)} {g}" for g in groups))

    librosa_available = True
    try:
        import librosa

        librosa.beat.beat_track(y=np.zeros(22050 * 2, np.float32), sr=22050)  # compile numba first
    except ImportError:
        librosa_available = False
    essentia = essentia_methods()

    methods = ["cratesense"] + (["librosa"] if librosa_available else []) + (["essentia"] if essentia else [])
    scores = {(m, g): Score() for m in methods for g in groups}
    pipeline = {name: [] for name in ("decode", "cratesense", "librosa", "essentia")}
    for number, item in enumerate(items, 1):
        if number % 10 == 0:
            progress(f"analyzed {number}/{len(items)}", None)
        started = time.perf_counter()
        analysis, native, rate = decode(item.path)
        pipeline["decode"].append(time.perf_counter() - started)

        started = time.perf_counter()
        bpm, key = cratesense_descriptors(analysis, native, rate)
        record(scores["cratesense", item.group], item, bpm, key, time.perf_counter() - started)

        started = time.perf_counter()
        analyze_file(item.path, bpm_range=BPM_RANGE)
        pipeline["cratesense"].append(time.perf_counter() - started)

        if librosa_available:
            y, sr = librosa.load(str(item.path), sr=22050)
            started = time.perf_counter()
            bpm, key = librosa_tempo_key(y, sr)
            record(scores["librosa", item.group], item, bpm, key, time.perf_counter() - started)
            started = time.perf_counter()
            y, sr = librosa.load(str(item.path), sr=22050)
            librosa_tempo_key(y, sr)
            pipeline["librosa"].append(time.perf_counter() - started)
        if essentia:
            tempo_key, load_and_analyze = essentia
            import essentia.standard as es

            audio = es.MonoLoader(filename=str(item.path), sampleRate=44100)()
            started = time.perf_counter()
            bpm, key = tempo_key(audio)
            record(scores["essentia", item.group], item, bpm, key, time.perf_counter() - started)
            started = time.perf_counter()
            load_and_analyze(item.path)
            pipeline["essentia"].append(time.perf_counter() - started)

    print()
    print(f"{'set':12} {'method':11} {'tempo n':>7} {'Acc1':>6} {'Acc2':>6} {'key n':>5} {'exact':>6} {'MIREX':>6} {'ms/track':>8}")
    for group in groups:
        for method in methods:
            s = scores[method, group]
            print(
                f"{group:12} {method:11} {len(s.tempo1):7d} {percent(s.tempo1)} {percent(s.tempo2)} "
                f"{len(s.key_exact):5d} {percent(s.key_exact)} {percent(s.mirex)} {1000 * np.mean(s.seconds):8.1f}"
            )
    print()
    ours = np.sum([np.sum(scores["cratesense", g].seconds) for g in groups])
    decode_time = np.sum(pipeline["decode"])
    print("Speed (same files, one run, one core):")
    if librosa_available:
        theirs = np.sum([np.sum(scores["librosa", g].seconds) for g in groups])
        print(f"  librosa tempo+key / our descriptors (decoded audio)   = {theirs / ours:6.1f}x  (target >= 10)")
        print(f"  librosa load+tempo+key / our whole pipeline           = {np.sum(pipeline['librosa']) / np.sum(pipeline['cratesense']):6.1f}x  (target >= 4)")
    if essentia:
        print(f"  essentia load+rhythm+key+R128 / our whole pipeline    = {np.sum(pipeline['essentia']) / np.sum(pipeline['cratesense']):6.1f}x  (target >= 8)")
    print(f"  our whole pipeline / one decode (analysis+native)     = {np.sum(pipeline['cratesense']) / decode_time:6.2f}x  (target <= 2)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
