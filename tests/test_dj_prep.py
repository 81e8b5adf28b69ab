"""A DJ's prep end to end (#26): a real agent analyzes generated arrangements whose sections are
known; the phrases and cues reach `cratesense prep`, the exports (read back by pyrekordbox and
traktor-nml-utils), Serato's own tags (read back by serato-tools and by Debian's Mixxx), `next` and `playlist` (where to
mix), and duplicates (one recording everywhere; transcodes told by their spectrum)."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import mutagen
import numpy as np
import pytest

import mixxxrun
from agentproc import AgentProcess, write_config
from audiogen import arrangement, encode, tag

SR = 44100
FORM = (("intro", 8), ("drop", 8), ("breakdown", 8), ("drop", 8), ("outro", 8))
# name -> (BPM, tonic, minor, seed, extension)
SONGS = {"alpha": (126, 9, True, 5, "flac"), "bravo": (126, 4, True, 7, "mp3"), "charlie": (127, 9, True, 9, "flac")}


def ffmpeg(*args: str) -> None:
    subprocess.run(["ffmpeg", "-v", "error", "-y", *args], check=True)


@pytest.fixture(scope="module")
def prepped(tmp_path_factory):
    """A real agent's journal over three arrangements, a drone without a beat, a track with an
    artist and no title, and transcodes of alpha (the agent stopped afterwards)."""
    home = tmp_path_factory.mktemp("prep")
    music = home / "music"
    music.mkdir()
    starts = {}
    for name, (bpm, tonic, minor, seed, ext) in SONGS.items():
        samples, starts[name] = arrangement(FORM, bpm=bpm, tonic=tonic, minor=minor, seed=seed)
        path = encode(samples, SR, music / f"{name}.{ext}", bitrate=320_000 if ext == "mp3" else None)
        tag(path, "Ann" if name != "charlie" else "Bob", name.title())
    t = np.arange(30 * SR) / SR
    drone = (0.3 * np.sin(2 * np.pi * 110 * t) + 0.1 * np.sin(2 * np.pi * 165 * t)).astype(np.float32)
    tag(encode(np.stack([drone, drone]), SR, music / "drone.flac"), "Cy", "Drone")
    samples, _ = arrangement(FORM, bpm=124, tonic=2, minor=False, seed=13)
    tag(encode(samples, SR, music / "untitled take.flac"), "Dee", None)
    # alpha, transcoded: to MP3 at 128 kb/s, that MP3 back to FLAC (lossy to lossless) and to MP3 at
    # 320 kb/s (lossy to lossy), kept outside the library first so the copies are real transcodes
    work = home / "work"
    work.mkdir()
    ffmpeg("-i", str(music / "alpha.flac"), "-c:a", "libmp3lame", "-b:a", "128k", str(work / "alpha-128.mp3"))
    ffmpeg("-i", str(work / "alpha-128.mp3"), "-c:a", "flac", str(music / "alpha (from mp3).flac"))
    ffmpeg("-i", str(work / "alpha-128.mp3"), "-c:a", "libmp3lame", "-b:a", "320k", str(music / "alpha 320.mp3"))
    shutil.copy(work / "alpha-128.mp3", music / "alpha 128.mp3")
    write_config(home, music, analysis={"workers": 2})
    agent = AgentProcess(home)
    agent.music, agent.starts = music, starts
    assert agent.cli("scan", timeout=600).returncode == 0
    return agent


def as_json(agent: AgentProcess, *args: str) -> dict:
    result = agent.cli(*args, "--json", timeout=180)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_prep_shows_phrases_and_cues_on_the_grid(prepped):
    answer = as_json(prepped, "prep", str(prepped.music / "alpha.flac"))
    labels = [phrase["label"] for phrase in answer["phrases"]]
    assert labels == [kind for kind, _ in FORM], labels
    bar = 4 * 60 / 126
    for phrase, truth in zip(answer["phrases"], prepped.starts["alpha"]):
        assert abs(phrase["start"] - truth) < bar / 2  # the same bar line as the arrangement's
    hot = {cue["letter"]: cue["name"] for cue in answer["cues"] if cue["hot"] is not None}
    assert hot == {"A": "Mix in", "B": "Drop", "C": "Breakdown", "D": "Mix out"}
    assert 1 <= answer["energy"] <= 10 and "waveform" not in answer  # the overview is for the page
    printed = prepped.cli("prep", str(prepped.music / "alpha.flac"))
    assert printed.returncode == 0 and "A Mix in" in printed.stdout and "breakdown" in printed.stdout
    drone = prepped.cli("prep", "Drone")
    assert drone.returncode == 0 and "no phrases" in drone.stdout


def _on_grid(seconds: float, start: float, bpm: float) -> float:
    """How far a cue is from the nearest beat of a grid; a cue at 0 s stands for the bar line a
    hair before it (at most 30 ms: the grid's first bar line, placed where the music starts)."""
    period = 60.0 / bpm
    beats = (seconds - start) / period
    off = abs(beats - round(beats)) * period
    return 0.0 if seconds == 0.0 and off <= 0.030 else off


def test_rekordbox_and_traktor_read_the_cues_back(prepped, tmp_path):
    from pyrekordbox.rbxml import RekordboxXml
    from traktor_nml_utils import TraktorCollection

    rekordbox, traktor = tmp_path / "collection.xml", tmp_path / "collection.nml"
    assert prepped.cli("export", "--format", "rekordbox", "--output", str(rekordbox)).returncode == 0
    assert prepped.cli("export", "--format", "traktor", "--output", str(traktor)).returncode == 0
    by_name = {track["Name"]: track for track in RekordboxXml(str(rekordbox)).get_tracks()}
    alpha = by_name["Alpha"]
    tempo = alpha.tempos[0]
    marks = alpha.marks
    hot = sorted((mark.Num, mark.Name) for mark in marks if mark.Num >= 0)
    assert hot == [(0, "Mix in"), (1, "Drop"), (2, "Breakdown"), (3, "Mix out")]
    memory = [mark for mark in marks if mark.Num == -1]
    assert [mark.Name for mark in memory] == ["Intro", "Drop", "Breakdown", "Drop", "Outro"]
    for mark in marks:  # every cue on rekordbox's own grid and inside the track
        assert mark.Type == "cue" and 0 <= mark.Start < alpha["TotalTime"]
        assert _on_grid(mark.Start, tempo.Inizio, tempo.Bpm) <= 0.010, mark.Start
    mix_in = next(mark for mark in marks if mark.Num == 0)
    # the colour, as rekordbox 6 writes it (pyrekordbox models no colour: read the raw attributes)
    assert tuple(mix_in._element.get(name) for name in ("Red", "Green", "Blue")) == ("0", "204", "0")
    assert not by_name["Drone"].marks  # no grid, no cue: and the file is still whole
    entries = {entry.info.playtime and entry.title: entry for entry in TraktorCollection(traktor).nml.collection.entry}
    entry = entries["Alpha"]
    cues = entry.cue_v2
    grid = [cue for cue in cues if cue.type == 4]
    assert len(grid) == 1 and grid[0].hotcue == 0
    assert sorted((cue.hotcue, cue.name) for cue in cues if cue.type == 0 and cue.hotcue >= 0) == [
        (1, "Mix in"), (2, "Drop"), (3, "Breakdown"), (4, "Mix out")]
    bpm = entry.tempo.bpm
    for cue in cues:
        assert _on_grid(cue.start / 1000, grid[0].start / 1000, bpm) <= 0.010
    assert not [cue for cue in entries["Drone"].cue_v2 or [] if cue.type == 0]


def _decoded(path: Path) -> np.ndarray:
    import av

    with av.open(str(path)) as container:
        return np.concatenate([frame.to_ndarray().reshape(-1) for frame in container.decode(audio=0)])


def test_serato_tags_are_written_only_when_asked_and_read_by_serato_tools(prepped):
    from serato_tools.track_beatgrid import TrackBeatgrid
    from serato_tools.track_cues_v2 import TrackCuesV2

    from cratesense.dj import serato

    mp3, flac = prepped.music / "bravo.mp3", prepped.music / "alpha.flac"
    before = {path: _decoded(path) for path in (mp3, flac)}
    plain = prepped.cli("tags", "write", "--dry-run")
    assert plain.returncode == 0 and "Serato" not in plain.stdout  # never unless asked
    result = prepped.cli("tags", "write", "--fields", "serato", "bravo", str(flac), timeout=300)
    assert result.returncode == 0, result.stderr
    assert "GEOB:Serato Markers2" in result.stdout and "SERATO_MARKERS_V2" in result.stdout
    cues = {entry.index: entry for entry in TrackCuesV2(str(mp3)).entries if entry.NAME == "CUE"}
    assert {index: cue.name for index, cue in cues.items()} == {0: "Mix in", 1: "Drop", 2: "Breakdown", 3: "Mix out"}
    assert cues[1].color == bytes.fromhex("CC0000")
    assert any(entry.NAME == "BPMLOCK" and entry.enabled for entry in TrackCuesV2(str(mp3)).entries)
    grid = TrackBeatgrid(str(mp3)).entries
    prep = as_json(prepped, "prep", "bravo")
    assert grid[-2].bpm == pytest.approx(prep["bpm"], abs=0.01)
    for cue in cues.values():  # on the grid Serato got (to its whole milliseconds)
        assert _on_grid(cue.position / 1000, grid[-2].position, grid[-2].bpm) <= 0.011
    comment = mutagen.File(flac).tags["SERATO_MARKERS_V2"][0]
    name, data = serato.unenveloped(comment)
    assert name == "Serato Markers2" and [e.name for e in TrackCuesV2(data).entries if e.NAME == "CUE"] == [
        "Mix in", "Drop", "Breakdown", "Mix out"]
    for path, audio in before.items():
        assert np.array_equal(_decoded(path), audio), f"the audio of {path.name} changed"
    again = prepped.cli("tags", "write", "--fields", "serato", "bravo")
    assert "changed 0 of" in again.stdout  # nothing left to write
    # a file Serato has analyzed keeps Serato's data: nothing of it is overwritten
    theirs = prepped.music / "charlie.flac"
    audio = mutagen.File(theirs)
    audio["SERATO_ANALYSIS"] = [serato.enveloped("Serato Analysis", b"\x02\x01")]
    audio.save()
    left = prepped.cli("tags", "write", "--fields", "serato", "charlie")
    assert "left as it is" in left.stdout and "SERATO_MARKERS_V2" not in mutagen.File(theirs).tags
    prepped.cli("scan", timeout=300)  # the journal follows the edited files


# Serato stores a cue's colour from one palette and shows it from another (Mixxx does the same,
# src/util/color/predefinedcolorpalettes.cpp): ours are Serato's own, so each has its shown twin.
SERATO_SHOWN = {"#00CC00": "#1FAD26", "#CC0000": "#C02626", "#0000CC": "#173BA2", "#CC4400": "#DB4E27"}


@pytest.mark.skipif(bool(mixxxrun.MISSING), reason=f"missing {', '.join(mixxxrun.MISSING)} "
                    "(scripts/setup.sh test installs mixxx xvfb xdotool)")
def test_debians_mixxx_reads_our_serato_tags(prepped, tmp_path):
    """A DJ who plays with Mixxx gets our hot cues (slots, names, colours), the BPM lock and a
    beat grid over the whole track from the Serato tags, read by Mixxx's own library scan."""
    result = prepped.cli("tags", "write", "--fields", "serato", "bravo", str(prepped.music / "alpha.flac"), timeout=300)
    assert result.returncode == 0, result.stderr
    music = tmp_path / "music"
    music.mkdir()
    for name in ("alpha.flac", "bravo.mp3"):
        shutil.copy(prepped.music / name, music / name)
    stored = mixxxrun.scan_with_mixxx(music, tmp_path / "mixxx", expected=2)
    for name in ("alpha.flac", "bravo.mp3"):
        prep, track = as_json(prepped, "prep", str(prepped.music / name)), stored[name]
        hot = sorted((cue for cue in prep["cues"] if cue["hot"] is not None), key=lambda cue: cue["hot"])
        assert [(cue.hotcue, cue.label) for cue in track.cues] == [(cue["hot"], cue["name"]) for cue in hot], name
        assert [cue.colour for cue in track.cues] == [SERATO_SHOWN[cue["colour"]] for cue in hot], name
        # Mixxx moves an MP3's Serato positions by the decoder delay it guesses (-26 ms with its MAD
        # decoder); a FLAC's are ours to the millisecond Serato stores
        shift = -0.026 if name.endswith(".mp3") else 0.0
        for ours, theirs in zip(hot, track.cues):
            assert theirs.seconds == pytest.approx(ours["start"] + shift, abs=0.0016), (name, ours, theirs)
        assert track.bpm == pytest.approx(prep["bpm"], abs=0.01) and track.bpm_lock, name
        beat, bar = 60.0 / prep["bpm"], 4 * 60.0 / prep["bpm"]
        gaps = np.diff(track.beats)
        assert gaps.size and np.all(np.abs(gaps - beat) < 0.0011), name  # one tempo, every beat there
        assert track.beats[0] < bar and track.beats[-1] > prep["duration"] - bar - 0.03, (name, track.beats[:2], track.beats[-2:])
        anchor = next(cue["start"] for cue in hot if cue["start"] > 0)  # (one at 0 s may stand for a bar line before it)
        for second in track.beats:  # on the grid of our cues
            beats = (second - shift - anchor) / beat
            assert abs(beats - round(beats)) * beat < 0.0016, (name, second)


def test_next_says_where_to_mix(prepped):
    answer = as_json(prepped, "next", str(prepped.music / "alpha.flac"))
    bravo = next(item for item in answer["next"] if item["track"]["title"] == "Bravo")
    mix = bravo["mix"]
    assert mix["bring_b_in"]["phrase"] == "intro" and mix["bring_b_in"]["bar"] == 1
    assert mix["on_a"]["phrase"] == "outro" and mix["overlap_bars"] == 8 and not mix["drops_clash"]
    assert any("bring B in at its intro" in reason for reason in bravo["reasons"])
    assert any(reason.startswith("energy ") for reason in bravo["reasons"])


def test_a_playlist_says_where_to_mix_at_each_step(prepped):
    steps = as_json(prepped, "playlist", "--from", str(prepped.music / "alpha.flac"), "--length", "3",
                    "--per-artist", "3")["playlist"]
    assert len(steps) == 3 and steps[0]["mix"] is None  # nothing plays before the first
    for step in steps[1:]:  # the arrangements: each brought in at its intro over the last one's outro
        mix = step["mix"]
        assert mix is not None and mix["bring_b_in"]["phrase"] == "intro" and mix["on_a"]["phrase"] == "outro", step
        assert any("bring B in at its intro" in reason for reason in step["reasons"]), step["reasons"]


def test_one_recording_is_one_recording_everywhere(prepped):
    copies = {"alpha.flac", "alpha (from mp3).flac", "alpha 320.mp3", "alpha 128.mp3"}
    alpha = str(prepped.music / "alpha.flac")

    def names(items):
        return [Path(item["track"]["path"]).name for item in items]

    nexts = names(as_json(prepped, "next", alpha, "--limit", "20")["next"])
    assert not copies & set(nexts), nexts  # never proposed after itself
    steps = names(as_json(prepped, "playlist", "--from", "bravo", "--length", "6", "--per-artist", "5")["playlist"])
    assert len(copies & set(steps)) <= 1, steps  # never twice in a playlist
    similar = as_json(prepped, "similar", alpha, "--limit", "8")["similar"]
    marked = {Path(item["track"]["path"]).name for item in similar if item["duplicate"]}
    assert marked and marked <= copies, similar


def test_duplicates_keep_the_best_source_and_say_why(prepped):
    groups = as_json(prepped, "duplicates")["groups"]
    group = next(group for group in groups if any(Path(f["path"]).name == "alpha.flac" for f in group["files"]))
    files = {Path(f["path"]).name: f for f in group["files"]}
    assert group["files"][0]["path"].endswith("alpha.flac") and files["alpha.flac"]["keep"]
    assert "lossy-to-lossless" in files["alpha (from mp3).flac"]["transcode"]
    assert "lossy-to-lossy" in files["alpha 320.mp3"]["transcode"]
    assert files["alpha 128.mp3"]["transcode"] is None and files["alpha 128.mp3"]["holds_less"]
    order = [Path(f["path"]).name for f in group["files"]]
    assert order.index("alpha 128.mp3") < order.index("alpha 320.mp3")  # the original before its transcode
    assert {f["format"] for f in group["files"]} == {"FLAC", "MP3"}  # not FFmpeg's "mp3float"
    printed = prepped.cli("duplicates").stdout
    assert "mp3float" not in printed and "lossy-to-lossless" in printed


def test_one_title_fallback_for_every_face(prepped):
    track = as_json(prepped, "tracks", "--search", "untitled")["tracks"][0]
    assert track["title"] is None and track["shown_title"] == "untitled take" and track["label"] == "Dee - untitled take"
    table = prepped.cli("tracks", "--search", "untitled").stdout
    assert "untitled take" in table.splitlines()[1]
