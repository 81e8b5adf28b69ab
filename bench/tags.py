"""Do the sound model's words say the right thing? Genres on pieces whose genre is known, moods on
constructed pairs, and the calibration the words are read with.

    nice .venv/bin/python bench/tags.py            # genre top-3, mood pairs (--raw: ranked by raw score)
    nice .venv/bin/python bench/tags.py --fit      # the strengths reference quantiles

Genres: every piece of a labelled set gets the genre words the pipeline would give it, ranked by
strength (analysis/sound_tags.py); it counts as right when one of its family's words is among its
top 3 (a house track may say "house", "electronic", "dance" or "techno"; a string quartet
"classical", "opera" or "choral"). Sets:

* rendered (bench/devset.py, rendered from scores and charts, never recorded): classical
  (quartets, orchestra, piano) and polyphony (choirs, organ) -> classical; Essen folk songs and
  Irish dance tunes -> folk; MMA arrangements in rock, pop, jazz, blues, country, funk and soul
  grooves -> their family (latin, ska, march and plain waltz grooves have no word of ours and are
  left out); electronic productions (house, techno, trance, drum & bass, dubstep -> electronic;
  hip-hop -> hip-hop); Bach chorales -> classical. The held-out folds (producer B's electronic
  pieces, the chorales) are reported apart: the reference library below never saw them;
* real (Debian packages): Frets on Fire's two bands' songs (the backing track and the lead
  guitar stems mixed again) -> rock; Wesnoth's orchestral score -> classical (its tracks past
  the 15 in the development soundtracks).

The 95 % interval is a bootstrap over the pieces. Moods: pairs built to differ on one axis (a
slow soft piano piece against a fast distorted one, ...): the share of pairs the calm/energetic/
aggressive strengths order the right way.

Calibration (``--fit``): each word's raw score quantiles (0, 5, ..., 100 %) over the reference
library: the development soundtracks and the rendered development subsets (held-out folds and
the real genre sets are not in it), printed as sound_tags.py holds them.
"""

from __future__ import annotations

import os

for _variable in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_variable] = "1"  # as in the agent's workers; before numpy is imported

import argparse  # noqa: E402
import hashlib  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
from concurrent.futures import ProcessPoolExecutor  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from soundtracks import CACHE, debian_ffmpeg, labelled_set, soundtrack  # noqa: E402

from cratesense.analysis import learned, sound_tags  # noqa: E402
from cratesense.analysis.constants import GENRE_WORDS  # noqa: E402

DEVSET = CACHE / "devset"
WORK = CACHE / "tags"

FAMILIES = {
    "classical": {"classical", "opera", "choral"},
    "folk": {"folk", "country"},
    "country": {"country", "folk"},
    "rock": {"rock", "metal", "punk", "indie"},
    "pop": {"pop", "indie"},
    "electronic": {"electronic", "techno", "house", "dance"},
    "hip-hop": {"hip-hop"},
    "jazz": {"jazz"},
    "blues": {"blues"},
    "funk": {"funk", "soul"},
    "soul": {"soul", "funk"},
}
# MMA grooves (bench/devset.py's pop subset) -> families; a groove with no word of ours is left out.
GROOVES = {
    "8Beat": ("pop",), "50sRock": ("rock",), "SoftRock": ("rock",), "Rock128": ("rock",), "PopBallad": ("pop",),
    "Trance": ("electronic",), "RockBallad": ("rock",), "FolkRock": ("rock", "folk"), "BVFunk": ("funk",),
    "JazzRock": ("jazz", "rock"), "BubbleRock": ("rock", "pop"), "Twist": ("rock",), "CountrySwing": ("country",),
    "Blues": ("blues",), "DSoul": ("soul",), "Swing": ("jazz",), "RockWaltz": ("rock",), "JazzWaltz": ("jazz",),
    "CountryWaltz": ("country",), "68Swing": ("jazz",), "Blues68": ("blues",), "BlueGrass": ("country",),
    "FastSwing": ("jazz",), "FastBlues": ("blues",), "VieneseWaltz": ("classical",),
}
EDM = {"house": ("electronic",), "techno": ("electronic",), "trance": ("electronic",), "dnb": ("electronic",),
       "drum&bass": ("electronic",), "dubstep": ("electronic",), "hiphop": ("hip-hop",), "hip-hop": ("hip-hop",)}
REFERENCE_SUBSETS = ("classical", "polyphony", "folk", "irish", "pop", "synthesized", "edm-synth-a", "edm-midi-fluidr3")
BOOTSTRAP = 2000


def _key(path: Path) -> str:
    return hashlib.sha1(str(path).encode()).hexdigest()[:16]


def scores_of(path: Path) -> dict[str, float]:
    """The model's label scores for a file, on the patches the pipeline would choose (cached with
    bench/similar.py's view of it)."""
    from similar import model_view

    model = learned.shipped_model()
    assert not isinstance(model, Exception), model
    return dict(zip(model.labels, (float(value) for value in model_view(path)[1])))


def _parallel(function, paths: list[Path]) -> list:
    with ProcessPoolExecutor(max_workers=2) as pool:
        return list(pool.map(function, paths, chunksize=2))


# --- the labelled sets ------------------------------------------------------------------------------


def _devset(subset: str) -> list[tuple[Path, str]]:
    """(audio, name) of one rendered devset subset, from its cached pieces."""
    folder = DEVSET / subset
    pieces = []
    for meta in sorted(folder.glob("*.json")):
        piece = json.loads(meta.read_text())
        if Path(piece["audio"]).exists():
            pieces.append((Path(piece["audio"]), piece["name"]))
    return pieces


def rendered() -> list[tuple[str, tuple[str, ...], Path]]:
    """(set, families, audio) of the rendered pieces whose genre we have a word for."""
    labelled = []
    for subset, family in (("classical", "classical"), ("polyphony", "classical"), ("folk", "folk"),
                           ("irish", "folk")):
        labelled += [(f"rendered {subset}", (family,), audio) for audio, _ in _devset(subset)]
    for audio, name in _devset("pop"):
        groove = name.split("-", 1)[1]
        if groove in GROOVES:
            labelled.append(("rendered MMA arrangements", GROOVES[groove], audio))
    for subset in ("synthesized", "edm-synth-a", "edm-midi-fluidr3", "edm-synth-b", "edm-midi-timgm"):
        for audio, name in _devset(subset):
            genre = name.rsplit("-", 1)[0]
            if genre in EDM:
                labelled.append((f"rendered {subset}", EDM[genre], audio))
    labelled += [("rendered bach-chorales", ("classical",), audio) for audio, _ in _devset("bach-chorales")]
    return labelled


HELD_OUT_SUBSETS = ("edm-synth-b", "edm-midi-timgm", "bach-chorales")  # bench/devset.py's held-out folds


def group_of(set_name: str) -> str:
    """development: what the reference library (and any choice) saw; held-out: the rendered folds
    kept apart; real: recordings."""
    if set_name.startswith("real"):
        return "real"
    return "held-out" if set_name.split()[-1] in HELD_OUT_SUBSETS else "development"


def _mixed_stems(song: Path) -> Path:
    """A Frets on Fire song whole again: its backing track and its guitar stem mixed."""
    target = WORK / "fretsonfire" / f"{_key(song)}.flac"
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_name("partial-" + target.name)
        debian_ffmpeg("-i", str(song), "-i", str(song.with_name("guitar.ogg")), "-filter_complex",
                      "amix=inputs=2:normalize=0", "-c:a", "flac", str(partial))
        partial.rename(target)
    return target


def real() -> list[tuple[str, tuple[str, ...], Path]]:
    labelled = []
    for package in ("fretsonfire-songs-muldjord", "fretsonfire-songs-sectoid"):
        for song in soundtrack(package, "song.ogg"):
            labelled.append(("real: Frets on Fire songs", ("rock",), _mixed_stems(song)))
    # Wesnoth's tracks past the 15 the development soundtracks (and so the reference library) hold.
    for path in soundtrack("wesnoth-1.16-music", limit=100)[15:]:
        labelled.append(("real: Wesnoth's orchestral score", ("classical",), path))
    return labelled


# --- moods on constructed pairs -----------------------------------------------------------------

MOOD_CHECKS = (("aggressive", "wild"), ("energetic", "wild"), ("calm", "calm"))  # (word, which side should be higher)


def _calm_piano(seed: int) -> np.ndarray:
    """A slow, soft piece: broken chords of decaying piano-like tones at 60 BPM, no drums."""
    rng = np.random.default_rng(seed)
    rate, seconds = 44100, 40
    t = np.arange(int(0.9 * rate)) / rate
    out = np.zeros(seconds * rate)
    base = 220.0 * 2 ** (rng.integers(-5, 5) / 12)
    for index, start in enumerate(np.arange(0, seconds - 1, 0.5)):
        step = (0, 4, 7, 12, 7, 4)[index % 6] + (0, 5, 7, 0)[(index // 12) % 4]
        frequency = base * 2 ** (step / 12)
        note = sum(np.sin(2 * np.pi * frequency * h * t) / h ** 1.5 for h in range(1, 6)) * np.exp(-3.5 * t)
        begin = int(start * rate)
        out[begin : begin + note.size] += 0.15 * note[: out.size - begin]
    return np.stack([out, out]).astype(np.float32)


def _fast_distorted(seed: int) -> np.ndarray:
    """A fast, loud, distorted one: a 170 BPM breakbeat with chords, driven into saturation."""
    from audiogen import synth_track

    track = synth_track(bpm=170, seconds=40, seed=seed, pattern="breakbeat")
    return (np.tanh(6 * track) * 0.9).astype(np.float32)


def mood_pairs() -> list[tuple[str, Path, Path]]:
    """(kind, the calm one, the wild one): generated pairs, and rendered piano pieces against Frets
    on Fire's metal and rock songs (real recordings)."""
    from audiogen import encode

    folder = WORK / "moods"
    folder.mkdir(parents=True, exist_ok=True)
    pairs = []
    for seed in range(6):
        calm, wild = folder / f"calm-{seed}.flac", folder / f"wild-{seed}.flac"
        if not calm.exists():
            encode(_calm_piano(seed), 44100, calm)
        if not wild.exists():
            encode(_fast_distorted(seed), 44100, wild)
        pairs.append(("generated", calm, wild))
    pianos = [audio for audio, name in _devset("classical") if "piano" in json.loads(
        (DEVSET / "classical" / f"{name}.json").read_text()).get("tags", [])]
    songs = [_mixed_stems(song) for package in ("fretsonfire-songs-muldjord", "fretsonfire-songs-sectoid")
             for song in soundtrack(package, "song.ogg")]
    pairs += [("rendered piano vs real rock", piano, song) for piano in pianos for song in songs]
    return pairs


def mood_rows() -> None:
    pairs = mood_pairs()
    paths = list(dict.fromkeys(path for _, calm, wild in pairs for path in (calm, wild)))
    reference = learned.shipped_model().reference  # type: ignore[union-attr]
    strengths = dict(zip(paths, (sound_tags.describe(scores, reference).strengths
                                 for scores in _parallel(scores_of, paths))))
    print(f"\n{'pairs':34} {'n':>4}" + "".join(f"{word + ' ' + side:>18}" for word, side in MOOD_CHECKS))
    for kind in dict.fromkeys(kind for kind, _, _ in pairs):
        chosen = [(calm, wild) for k, calm, wild in pairs if k == kind]
        cells = []
        for word, side in MOOD_CHECKS:
            right = [strengths[wild][word] > strengths[calm][word] if side == "wild" else
                     strengths[calm][word] > strengths[wild][word] for calm, wild in chosen]
            cells.append(f"{np.mean(right):>18.0%}")
        print(f"{kind:34} {len(chosen):>4}" + "".join(cells))
    print("(the share of pairs ordered the right way: the wild one higher on aggressive and energetic, "
          "the calm one higher on calm)")


_RANK_BY = {"value": "strength"}  # --raw: rank by the raw word scores instead (to compare)


def genre_rank(scores: dict[str, float]) -> list[str]:
    if _RANK_BY["value"] == "raw":
        raw = sound_tags.raw_word_scores(scores)
        return sorted(GENRE_WORDS, key=lambda word: -raw[word])
    words = sound_tags.describe(scores, learned.shipped_model().reference)  # type: ignore[union-attr]
    return list(words.genres) + sorted((w for w in GENRE_WORDS if w not in words.genres),
                                       key=lambda word: -words.strengths[word])


def genre_rows(labelled) -> None:
    all_scores = _parallel(scores_of, [path for _, _, path in labelled])
    right = np.array([bool(set(genre_rank(scores)[:3]) & set().union(*(FAMILIES[f] for f in families)))
                      for (_, families, _), scores in zip(labelled, all_scores)])
    print(f"{'set':40} {'pieces':>6} {'top 3 right':>11}   most frequent top genre")
    for name in dict.fromkeys(set_name for set_name, _, _ in labelled):
        chosen = [index for index, (set_name, _, _) in enumerate(labelled) if set_name == name]
        tops = [genre_rank(all_scores[index])[0] for index in chosen]
        common = max(set(tops), key=tops.count)
        print(f"{name:40} {len(chosen):>6} {right[chosen].mean():>11.0%}   {common} ({tops.count(common)})")
    rng = np.random.default_rng(27)
    groups = np.array([group_of(set_name) for set_name, _, _ in labelled])
    for group in ("development", "held-out", "real", "all"):
        chosen = right if group == "all" else right[groups == group]
        if not chosen.size:
            continue
        means = chosen[rng.integers(0, chosen.size, (BOOTSTRAP, chosen.size))].mean(axis=1)
        low, high = np.percentile(means, [2.5, 97.5])
        print(f"{group:40} {chosen.size:>6} {chosen.mean():>11.0%}   95 % CI {low:.0%}-{high:.0%}"
              + ("   target >= 80 %" if group == "all" else ""))


def fit() -> None:
    """Each word's raw-score quantiles over the reference library, written beside the model as
    ``calibration.json`` with its SHA-256 in ``musicnn.json``."""
    paths = [path for _, path in labelled_set("development")]
    for subset in REFERENCE_SUBSETS:
        paths += [audio for audio, _ in _devset(subset)]
    raw = [sound_tags.raw_word_scores(scores) for scores in _parallel(scores_of, paths) if scores]
    reference = {word: [round(float(value), 6) for value in np.quantile([row[word] for row in raw], sound_tags.QUANTILES)]
                 for word in sound_tags.SOURCES}
    folder = learned.model_folder()
    target = folder / "calibration.json"
    target.write_text(json.dumps(reference, indent=0) + "\n")
    manifest = json.loads((folder / learned.MANIFEST).read_text())
    manifest["calibration"] = {"file": target.name, "sha256": hashlib.sha256(target.read_bytes()).hexdigest(),
                               "fitted_by": "bench/tags.py --fit", "reference_tracks": len(raw),
                               "reference": "bench/soundtracks.py development + bench/devset.py "
                               + ", ".join(REFERENCE_SUBSETS)}
    (folder / learned.MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n")
    print(f"wrote {target} ({len(raw)} reference tracks)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fit", action="store_true", help="print the reference quantiles and exit")
    parser.add_argument("--raw", action="store_true", help="rank genres by raw score, not strength (to compare)")
    arguments = parser.parse_args()
    if arguments.raw:
        _RANK_BY["value"] = "raw"
    if arguments.fit:
        fit()
        return 0
    print(f"Genre among the top 3 of the model's genre words ({learned.PATCHES} patches a track)\n")
    genre_rows(rendered() + real())
    mood_rows()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
