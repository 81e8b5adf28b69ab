"""The DJ's library end to end: a real agent analyzes real (synthesized, encoded) files; the
commands read its journal the way a DJ runs them; exports are read back by real readers."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import mutagen
import numpy as np
import pytest

from agentproc import AgentProcess, write_config
from audiogen import cadence, encode, fingerprintable_track, metric_piece, synth_track, tag
from cratesense.dj.harmony import relation

SR = 44100
# name -> (BPM, tonic, minor, pattern): keys around 8A (A minor) to test the wheel
LIBRARY = {
    "alpha": (124, 9, True, "four"),  # 8A
    "bravo": (125, 9, True, "boombap"),  # 8A, same key
    "charlie": (126, 4, True, "four"),  # 9A, one step
    "delta": (124, 0, False, "boombap"),  # 8B, relative major
    "echo": (124, 6, True, "four"),  # 11A: clashes with 8A
    "foxtrot": (140, 9, True, "four"),  # 8A, but far outside the pitch range
    "golf": (174, 9, True, "breakbeat"),  # 8A drum & bass: double time of 87
    "hotel": (87, 9, True, "boombap"),  # 8A
}
ARTISTS = {"alpha": "Ann", "bravo": "Ann", "charlie": "Ann", "delta": "Bob", "echo": "Cy", "foxtrot": "Bob",
           "golf": "Dee", "hotel": "Eve"}


@pytest.fixture(scope="module")
def library(tmp_path_factory):
    """A real agent's journal over eight tagged tracks (its agent stopped: the commands read the
    journal on their own)."""
    home = tmp_path_factory.mktemp("dj")
    music = home / "music"
    music.mkdir()
    for name, (bpm, tonic, minor, pattern) in LIBRARY.items():
        path = encode(synth_track(bpm=bpm, tonic=tonic, minor=minor, seconds=24, seed=len(name), pattern=pattern),
                      SR, music / f"{name}.flac")
        tag(path, ARTISTS[name], name.title())
    write_config(home, music, analysis={"workers": 2})
    agent = AgentProcess(home)
    agent.music = music
    agent.start()
    try:
        agent.analyzed(len(LIBRARY))
    finally:
        agent.stop()
    return agent


def cli(agent: AgentProcess, *args: str) -> subprocess.CompletedProcess:
    return agent.cli(*args, timeout=120)


def as_json(agent: AgentProcess, *args: str) -> dict:
    result = cli(agent, *args, "--json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_tracks_filters_by_bpm_and_key_in_every_notation(library):
    every = as_json(library, "tracks")["tracks"]
    assert sorted(track["title"] for track in every) == sorted(name.title() for name in LIBRARY)
    by_title = {track["title"]: track for track in every}
    assert by_title["Alpha"]["key"] == "8A" and abs(by_title["Alpha"]["bpm"] - 124) < 1
    assert by_title["Alpha"]["path"].endswith("/alpha.flac") and os.path.isfile(by_title["Alpha"]["path"])
    for key in ("8A", "Am", "A minor", "1m"):
        found = as_json(library, "tracks", "--bpm", "120-128", "--key", key)["tracks"]
        assert sorted(track["title"] for track in found) == ["Alpha", "Bravo"], key
    compatible = as_json(library, "tracks", "--compatible-with", "8A", "--bpm", "120-130")["tracks"]
    assert sorted(track["title"] for track in compatible) == ["Alpha", "Bravo", "Charlie", "Delta"]
    assert [t["title"] for t in as_json(library, "tracks", "--search", "echo")["tracks"]] == ["Echo"]
    by_bpm = [track["bpm"] for track in as_json(library, "tracks", "--sort", "bpm")["tracks"]]
    assert by_bpm == sorted(by_bpm)
    assert len(as_json(library, "tracks", "--limit", "3")["tracks"]) == 3
    table = cli(library, "tracks", "--sort", "bpm")
    assert table.returncode == 0 and table.stdout.splitlines()[0].split()[:4] == ["artist", "title", "BPM", "key"]
    assert "Hotel" in table.stdout.splitlines()[1]  # the slowest first


def test_the_users_key_notation_is_used_everywhere(library):
    config = library.home / "config" / "cratesense" / "config.toml"
    original = config.read_text()
    try:
        config.write_text(original + '[dj]\nkey_notation = "musical"\n')
        assert as_json(library, "tracks", "--search", "alpha")["tracks"][0]["key"] == "A minor"
        assert "A minor" in cli(library, "next", "alpha").stdout
        config.write_text(original + '[dj]\nkey_notation = "open-key"\n')
        assert as_json(library, "tracks", "--search", "alpha")["tracks"][0]["key"] == "1m"
    finally:
        config.write_text(original)


def test_next_proposes_only_compatible_tracks_with_reasons(library):
    answer = as_json(library, "next", "alpha", "--limit", "10")
    titles = [item["track"]["title"] for item in answer["next"]]
    assert set(titles) == {"Bravo", "Charlie", "Delta"}  # echo clashes, foxtrot is too fast, golf/hotel too
    for item in answer["next"]:
        assert relation("8A", item["track"]["camelot"]) is not None
        assert any("BPM" in reason for reason in item["reasons"]) and any("→" in r for r in item["reasons"])
    scores = [item["score"] for item in answer["next"]]
    assert scores == sorted(scores, reverse=True)
    delta = next(item for item in answer["next"] if item["track"]["title"] == "Delta")
    assert any("relative major/minor" in reason for reason in delta["reasons"])
    # double time counts: drum & bass at 174 mixes with 87
    golf = as_json(library, "next", "golf")["next"]
    assert [item["track"]["title"] for item in golf] == ["Hotel"]
    assert any("half time" in reason for reason in golf[0]["reasons"])
    # pitched without key lock, a semitone's move is named
    wide = as_json(library, "next", "alpha", "--pitch-range", "15")["next"]
    foxtrot = next(item for item in wide if item["track"]["title"] == "Foxtrot")
    assert any("without key lock" in reason and "semitones" in reason for reason in foxtrot["reasons"])
    printed = cli(library, "next", str(library.music / "alpha.flac"))  # a path names the track too
    assert printed.returncode == 0 and "Bravo" in printed.stdout and "same key" in printed.stdout


def test_when_nothing_is_compatible_the_reasons_say_what_was_relaxed(library):
    answer = as_json(library, "next", "echo")["next"]  # 11A: nothing in the library mixes with it
    assert answer and all("relaxed" in item["reasons"][0] for item in answer)


def test_similar_ranks_by_sound(library):
    answer = as_json(library, "similar", "alpha", "--limit", "7")["similar"]
    assert len(answer) == 7 and "Alpha" not in [item["track"]["title"] for item in answer]
    scores = [item["score"] for item in answer]
    assert scores == sorted(scores, reverse=True) and all(-1 <= score <= 1 for score in scores)


def test_playlist_is_a_mixable_path_with_an_artist_cap(library, tmp_path):
    result = cli(library, "playlist", "--from", "alpha", "--length", "6", "--per-artist", "2", "--json")
    tracks = [item["track"] for item in json.loads(result.stdout)["playlist"]]
    # Ann's third track is capped, the rest clash or are too far in tempo: it stops, and says so
    assert [t["title"] for t in tracks[:2]] == ["Alpha", "Bravo"] and len(tracks) >= 3
    assert "only" in result.stderr and len({t["content_key"] for t in tracks}) == len(tracks)
    for before, after in zip(tracks, tracks[1:]):
        assert relation(before["camelot"], after["camelot"]) is not None, (before, after)
    artists = [ARTISTS[t["title"].lower()] for t in tracks]
    assert max(artists.count(artist) for artist in artists) <= 2
    output = tmp_path / "set.m3u8"
    result = cli(library, "playlist", "--from", "alpha", "--length", "3", "--output", str(output))
    assert result.returncode == 0
    lines = output.read_text(encoding="utf-8").splitlines()
    assert lines[0] == "#EXTM3U" and lines[1].startswith("#EXTINF:24,Ann - Alpha")
    assert all(os.path.isfile(line) for line in lines[2::2]) and len(lines) == 7
    relative = tmp_path / "rel.m3u8"
    cli(library, "playlist", "--bpm", "120-130", "--length", "10", "--output", str(relative),
        "--relative-to", str(library.music))
    assert "alpha.flac" in relative.read_text().splitlines()


def test_bad_input_is_one_line_and_exit_2(library):
    for args, words in ((("next", "nothing-like-this"), "no track matches"),
                        (("tracks", "--bpm", "130-120"), "backwards"),
                        (("tracks", "--key", "H#"), "not a key"),
                        (("next", "a"), "matches"),  # several tracks
                        (("next", "alpha", "--limit", "0"), "at least 1"),
                        (("export", "--format", "rekordbox", "--output", "/nonexistent/x.xml"), "cannot write")):
        result = cli(library, *args)
        assert result.returncode == 2, (args, result.stdout, result.stderr)
        assert "Traceback" not in result.stderr and words in result.stderr, (args, result.stderr)
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr


def test_rekordbox_export_is_read_by_pyrekordbox(library, tmp_path):
    from pyrekordbox.rbxml import RekordboxXml

    output = tmp_path / "collection.xml"
    result = cli(library, "export", "--format", "rekordbox", "--output", str(output), "--compatible-with", "8A")
    assert result.returncode == 0, result.stderr
    xml = RekordboxXml(str(output))
    tracks = xml.get_tracks()
    assert xml.num_tracks == len(tracks) == 7  # every 8A, 9A and 8B track
    for track in tracks:  # every exported track resolves to a file that exists
        assert os.path.isfile("/" + track["Location"]), track["Location"]
        assert track["AverageBpm"] > 0 and track["Tonality"] in ("Am", "Em", "C")
        # four-beat grooves: a 4/4 grid, counted from its first beat (whichever beat of the bar)
        assert track.tempos and 1 <= track.tempos[0].Battito <= 4 and track.tempos[0].Metro == "4/4"
    playlist = xml.get_playlist("CrateSense")
    assert playlist.key_type == "TrackID" and len(playlist.get_tracks()) == 7
    root = ET.parse(output).getroot()  # the published structure, beyond what pyrekordbox checks
    assert root.tag == "DJ_PLAYLISTS" and root.get("Version") == "1.0.0" and root.find("PRODUCT") is not None
    first = root.find("COLLECTION/TRACK")
    assert first.get("Location").startswith("file://localhost/") and "%20" not in first.get("Location")
    assert float(first.get("AverageBpm")) == round(float(first.get("AverageBpm")), 2)
    node = root.find("PLAYLISTS/NODE[@Name='ROOT']/NODE")
    assert node.get("Type") == "1" and node.get("KeyType") == "0" and node.get("Entries") == "7"


def test_traktor_export_follows_the_nml_structure(library, tmp_path):
    output = tmp_path / "collection.nml"
    assert cli(library, "export", "--format", "traktor", "--output", str(output)).returncode == 0
    root = ET.parse(output).getroot()
    assert root.tag == "NML" and root.get("VERSION") == "19"
    entries = root.findall("COLLECTION/ENTRY")
    assert len(entries) == len(LIBRARY) == int(root.find("COLLECTION").get("ENTRIES"))
    keys = []
    for entry in entries:
        location = entry.find("LOCATION")
        directory = location.get("DIR")
        assert directory.startswith("/:") and directory.endswith("/:")
        path = "/" + "/".join(part for part in directory.split("/:") if part) + "/" + location.get("FILE")
        assert os.path.isfile(path), path
        keys.append(location.get("VOLUME") + directory + location.get("FILE"))
        value = int(entry.find("MUSICAL_KEY").get("VALUE"))
        title = entry.get("TITLE").lower()
        tonic, minor = LIBRARY[title][1], LIBRARY[title][2]
        assert value == tonic + (12 if minor else 0)  # 0-11 C..B major, 12-23 C..B minor
        assert abs(float(entry.find("TEMPO").get("BPM")) - LIBRARY[title][0]) < 1
        assert entry.find("CUE_V2").get("TYPE") == "4"
    playlist = root.find("PLAYLISTS/NODE/SUBNODES/NODE/PLAYLIST")
    assert [e.find("PRIMARYKEY").get("KEY") for e in playlist.findall("ENTRY")] == keys


# name -> (BPM, beats a bar, pickup beats): bar 1 comes after a pickup
BARS = {"pickup": (124, 4, 3)}


@pytest.fixture(scope="module")
def bar_library(tmp_path_factory):
    """A real agent's journal over pieces whose bar lines are known: a 4/4 groove with an
    accented bar start after a three-beat pickup."""
    home = tmp_path_factory.mktemp("bars")
    music = home / "music"
    music.mkdir()
    downbeats = {}
    for name, (bpm, beats, pickup) in BARS.items():
        samples, downbeats[name] = metric_piece(bpm=bpm, bars=cadence(5, False) * 6, beats_per_bar=beats,
                                                drums=beats == 4, pickup_beats=pickup, sr=SR, seed=2)
        tag(encode(np.stack([samples, samples]), SR, music / f"{name}.flac"), "Ann", name.title())
    write_config(home, music)
    agent = AgentProcess(home)
    agent.start()
    try:
        agent.analyzed(len(BARS))
    finally:
        agent.stop()
    return agent, downbeats


def _off_by(grid_downbeat: float, bar: float, truth: float) -> float:
    """How far the grid's nearest bar line (a downbeat every ``bar`` s) is from the true one."""
    return abs((truth - grid_downbeat + bar / 2) % bar - bar / 2)


def test_exports_place_bar_1_on_the_downbeat(bar_library, tmp_path):
    """rekordbox counts the grid from Inizio as beat Battito of a Metro bar; Traktor's grid
    marker is a downbeat. Both put bar 1 within 70 ms of the piece's (after its pickup), where
    a grid counted from the first beat would be a beat or two off."""
    from pyrekordbox.rbxml import RekordboxXml

    agent, downbeats = bar_library
    rekordbox, traktor = tmp_path / "collection.xml", tmp_path / "collection.nml"
    assert cli(agent, "export", "--format", "rekordbox", "--output", str(rekordbox)).returncode == 0
    assert cli(agent, "export", "--format", "traktor", "--output", str(traktor)).returncode == 0
    for track in RekordboxXml(str(rekordbox)).get_tracks():
        name = track["Name"].lower()
        bpm, beats, _ = BARS[name]
        tempo = track.tempos[0]
        assert tempo.Metro == f"{beats}/4" and tempo.Bpm == pytest.approx(bpm, abs=0.5)
        period = 60.0 / tempo.Bpm
        bar_1 = tempo.Inizio + ((1 - tempo.Battito) % beats) * period
        assert _off_by(bar_1, beats * period, downbeats[name]) < 0.07, (name, tempo.Inizio, tempo.Battito)
    entries = ET.parse(traktor).getroot().findall("COLLECTION/ENTRY")
    assert len(entries) == len(BARS)
    for entry in entries:
        name = entry.get("TITLE").lower()
        if BARS[name][1] != 4:
            continue  # Traktor's grid is 4/4 only: its bars are the 4/4 piece's
        period = 60.0 / float(entry.find("TEMPO").get("BPM"))
        marker = float(entry.find("CUE_V2").get("START")) / 1000
        assert _off_by(marker, 4 * period, downbeats[name]) < 0.07, (name, marker)


@pytest.mark.parametrize("beats_per_bar, metro", [(3, "3/4"), (4, "4/4"), (2, "4/4"), (None, "4/4")])
def test_the_grid_counts_bars_of_the_meter_found(tmp_path, beats_per_bar, metro):
    """A waltz's grid is 3/4 (the other meters as DJ programs count them, 4/4), and whatever
    the bar, the first beat's Battito puts bar 1 on the downbeat: here the first beat (0.383 s)
    is the last of a pickup bar, bar 1 starts a beat later."""
    from pyrekordbox.rbxml import RekordboxXml

    from cratesense.dj.collection import Track
    from cratesense.dj.exports import rekordbox, traktor

    path = encode(synth_track(bpm=150, tonic=0, minor=False, seconds=4), SR, tmp_path / "waltz.flac")
    bar_1 = 0.783 if beats_per_bar else 0.383  # without a bar, the first beat is beat 1
    track = Track(content_key="k", path=str(path), copies=1, artist="Ann", title="Waltz", album=None, isrc=None,
                  catalog_number=None, duration=4.0, bpm=150.0, key=None, loudness=None, replaygain=None,
                  true_peak=None, beat_offset=0.383, downbeat_offset=0.783 if beats_per_bar else None,
                  beats_per_bar=beats_per_bar, codec="flac", sample_rate=SR, channels=2, added_at=None)
    output = tmp_path / "collection.xml"
    output.write_bytes(rekordbox([track]))
    tempo = RekordboxXml(str(output)).get_tracks()[0].tempos[0]
    beats = int(metro[0])
    assert tempo.Metro == metro and tempo.Inizio == pytest.approx(0.383)
    assert tempo.Inizio + ((1 - tempo.Battito) % beats) * 0.4 == pytest.approx(bar_1)
    marker = ET.fromstring(traktor([track])).find("COLLECTION/ENTRY/CUE_V2")
    assert float(marker.get("START")) == pytest.approx(1000 * bar_1)


def test_duplicates_finds_every_encode_and_no_false_group(tmp_path):
    music = tmp_path / "music"
    music.mkdir()
    for index in range(3):  # three recordings, each in four versions
        samples = fingerprintable_track(index)
        encode(samples, SR, music / f"r{index}.flac")
        encode(samples, SR, music / f"r{index}-128k.mp3", bitrate=128_000)
        encode(samples, SR, music / f"r{index}-64k.opus", bitrate=64_000)
        encode(samples[:, 2 * SR:], SR, music / f"r{index}-trimmed.flac")
    for index in range(3, 6):  # three more, once each
        encode(fingerprintable_track(index), SR, music / f"single{index}.flac")
    shutil.copy(music / "single3.flac", music / "single3-copy.flac")  # identical bytes
    write_config(tmp_path, music, analysis={"workers": 2})
    agent = AgentProcess(tmp_path)
    assert agent.cli("scan", timeout=600).returncode == 0
    groups = as_json(agent, "duplicates")["groups"]
    found = sorted(sorted(Path(f["path"]).name for f in group["files"]) for group in groups)
    assert found == sorted([sorted([f"r{i}.flac", f"r{i}-128k.mp3", f"r{i}-64k.opus", f"r{i}-trimmed.flac"])
                            for i in range(3)] + [["single3-copy.flac", "single3.flac"]])
    for group in groups:
        keep = [f for f in group["files"] if f["keep"]]
        assert len(keep) == 1 and group["files"][0]["keep"] and keep[0]["lossless"]  # lossless first
    printed = agent.cli("duplicates").stdout
    assert "keep" in printed and "nothing was deleted" in printed
    assert all(path.exists() for path in music.iterdir())  # it never deletes
    # similar on the sound model's embedding (v3): each encode's nearest tracks are its own versions
    for index in range(3):
        for encode_name in (f"r{index}-128k.mp3", f"r{index}-64k.opus"):
            found = as_json(agent, "similar", str(music / encode_name), "--limit", "3")["similar"]
            names = [Path(item["track"]["path"]).name for item in found]
            assert all(name.startswith(f"r{index}") for name in names), (encode_name, names)
            assert f"r{index}.flac" in names and found[0]["score"] > 0.9, (encode_name, found)


def test_a_mix_over_the_same_backing_track_is_not_a_duplicate(tmp_path):
    """Another part played over one track shares much of its fingerprint (enough for the catalog's
    "same recording", as two real soundtracks' variants do); a low-bitrate encode shares far more.
    Only the encode is a duplicate."""
    from cratesense.analysis.pipeline import analyze_file
    from cratesense.catalog import matching
    from cratesense.catalog.contract import fingerprint_items
    from cratesense.dj.duplicates import same_recording

    def items(path: Path) -> list[int]:
        return fingerprint_items("fingerprint", analyze_file(path, descriptors=False).fingerprint.chromaprint)

    track = fingerprintable_track(0)
    part = synth_track(bpm=96, tonic=5, minor=False, seconds=24, seed=71, pattern="four")[:, : track.shape[1]]
    original = items(encode(track, SR, tmp_path / "track.flac"))
    mix = items(encode((track + 0.7 * part) / 1.7, SR, tmp_path / "mix.flac"))
    low_bitrate = items(encode(track, SR, tmp_path / "track.opus", bitrate=32_000))
    assert matching.score(original, mix) >= matching.SAME_RECORDING  # the case this guards
    assert same_recording(original, mix) is None
    assert same_recording(original, low_bitrate) is not None


def _decoded(path: Path) -> np.ndarray:
    import av

    with av.open(str(path)) as container:
        return np.concatenate([frame.to_ndarray().reshape(-1) for frame in container.decode(audio=0)])


@pytest.fixture
def taggable(tmp_path):
    """A fresh library of one file per format, analyzed (the agent stopped)."""
    music = tmp_path / "music"
    music.mkdir()
    samples = synth_track(bpm=124, tonic=9, minor=True, seconds=20, seed=3)
    files = {ext: encode(samples, SR, music / f"song.{ext}") for ext in ("mp3", "flac", "m4a", "opus")}
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-i", str(files["flac"]), "-c:a", "libvorbis", str(music / "song.ogg")],
                   check=True)
    files["ogg"] = music / "song.ogg"
    write_config(tmp_path, music, analysis={"workers": 2})
    agent = AgentProcess(tmp_path)
    agent.music, agent.files = music, files
    assert agent.cli("scan", timeout=600).returncode == 0
    yield agent
    agent.stop(signal.SIGKILL)


def test_tags_are_written_in_each_formats_standard_fields_and_the_audio_is_untouched(taggable):
    import mediafile

    files = taggable.files
    audio_before = {ext: _decoded(path) for ext, path in files.items()}
    modes = {}
    for ext, path in files.items():
        os.chmod(path, 0o640)
        modes[ext] = os.stat(path).st_mode
    dry = taggable.cli("tags", "write", "--dry-run")
    assert dry.returncode == 0 and "TBPM: (none) -> 124" in dry.stdout and "dry run" in dry.stdout
    assert mutagen.File(files["mp3"]).tags is None or "TBPM" not in mutagen.File(files["mp3"]).tags
    result = taggable.cli("tags", "write")
    assert result.returncode == 0, result.stderr
    id3 = mutagen.File(files["mp3"]).tags
    assert str(id3["TBPM"]) == "124" and str(id3["TKEY"]) == "Am"
    assert str(id3["TXXX:REPLAYGAIN_TRACK_GAIN"]).endswith(" dB") and "." in str(id3["TXXX:REPLAYGAIN_TRACK_PEAK"])
    flac = mutagen.File(files["flac"]).tags
    assert abs(float(flac["BPM"][0]) - 124) < 0.5 and flac["INITIALKEY"] == ["8A"]
    assert "KEY" not in flac  # never Mixed In Key's own field
    mp4 = mutagen.File(files["m4a"]).tags
    assert mp4["tmpo"] == [124] and bytes(mp4["----:com.apple.iTunes:initialkey"][0]) == b"8A"
    opus = mutagen.File(files["opus"]).tags
    assert "R128_TRACK_GAIN" in opus and "REPLAYGAIN_TRACK_GAIN" not in opus and int(opus["R128_TRACK_GAIN"][0])
    for ext in ("mp3", "flac", "m4a", "ogg"):  # a second reader agrees
        second = mediafile.MediaFile(str(files[ext]))
        assert abs(second.bpm - 124) <= 0.5 and second.initial_key in ("Am", "8A"), ext
    for ext, path in files.items():
        assert np.array_equal(_decoded(path), audio_before[ext]), f"the audio of {ext} changed"
        assert os.stat(path).st_mode == modes[ext]
    again = taggable.cli("scan", timeout=300)  # our own write is not a change to analyze
    assert "0 analyzed" in again.stdout and "0 failed" in again.stdout, again.stdout
    assert "changed 0 of" in taggable.cli("tags", "write").stdout  # nothing left to write


def test_a_tag_write_that_fails_midway_leaves_the_old_file(taggable, monkeypatch):
    """mutagen (a boundary we do not own) fails half-way through saving: the file is as before."""
    from cratesense.dj import tagging

    path = taggable.files["flac"]
    before = path.read_bytes()
    import mutagen.flac

    def half_then_fail(self, *args, **kwargs):
        with open(self.filename, "r+b") as file:
            file.write(b"\0" * 4096)  # the copy is damaged ...
        raise OSError(28, "No space left on device")  # ... then the disk fills

    monkeypatch.setattr(mutagen.flac.FLAC, "save", half_then_fail)
    result = tagging.retag(str(path), tagging.Wanted(bpm=124.0), ("bpm",), "camelot")
    assert result.error and "nothing was changed" in result.error
    assert path.read_bytes() == before
    assert not [name for name in os.listdir(path.parent) if name.endswith(".cratesense-tags")]  # no leftovers


def test_a_read_only_file_is_reported_not_failed_silently(taggable):
    from unprivileged import without_bypass

    path = taggable.files["mp3"]
    os.chmod(path, 0o444)
    command = without_bypass([sys.executable, "-m", "cratesense", "tags", "write", "--fields", "bpm", "song.mp3"])
    result = subprocess.run(command, env=taggable.env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 1 and "read-only" in result.stderr and "Traceback" not in result.stderr
    assert "TBPM" not in (mutagen.File(path).tags or {})


def test_the_running_agent_writes_tags_itself_and_into_new_files_when_asked(taggable, tracks):
    write_config(taggable.home, taggable.music, analysis={"workers": 2}, tags={"write_new": True})
    taggable.start()
    analyzed = taggable.status()["session"]["analyzed"]
    result = taggable.cli("tags", "write", "--fields", "bpm", "song.flac")  # through the agent
    assert result.returncode == 0 and "BPM: (none) -> 124" in result.stdout, result.stderr
    assert mutagen.File(taggable.files["flac"]).tags["BPM"] == ["124"]
    new = taggable.music / "new.flac"
    shutil.copy(tracks[0], new)  # a new file: tagged right after its analysis
    status = taggable.wait_for(lambda s: s["session"]["analyzed"] == analyzed + 1 and s["queued"] + s["analyzing"] == 0)
    # The agent logs the write once its journal knows the file's new identity (the tags reach the
    # file before that: a rescan in between would rightly see a changed file).
    written = re.compile(r"wrote \d+ tag\(s\) into \S*new\.flac")
    taggable.wait_for(lambda s: written.search(taggable.log.read_text()) is not None,
                      what="the agent to record its write into the new file")
    assert "BPM" in (mutagen.File(new).tags or {})
    later = taggable.call("POST", "rescan")
    status = taggable.wait_for(lambda s: s["scans_completed"] > later["scans_completed"] and s["queued"] == 0
                               and s["analyzing"] == 0, what="a rescan after the writes")
    assert status["session"]["analyzed"] == analyzed + 1  # neither write made a re-analysis


def test_the_control_api_answers_the_library_questions(library):
    library.start()
    try:
        answer = library.call("GET", "tracks")
        assert answer["total"] == len(LIBRARY) and len(answer["tracks"]) == len(LIBRARY)
        from cratesense.daemon.control_client import request

        page = request("GET", "tracks", path=library.socket, query="bpm=120-128&key=8A&limit=1&offset=1")
        assert page["total"] == 2 and len(page["tracks"]) == 1
        nxt = request("GET", "next", path=library.socket, query="track=alpha&limit=2")
        assert len(nxt["next"]) == 2 and {item["track"]["title"] for item in nxt["next"]} <= {"Bravo", "Charlie", "Delta"}
        document = request("GET", "library-export", path=library.socket, query="format=m3u&key=8A")
        assert document["document"].startswith("#EXTM3U") and document["tracks"] == 5
        from cratesense.errors import QueryError

        with pytest.raises(QueryError, match="backwards"):  # the server's own kind: the user's mistake
            request("GET", "tracks", path=library.socket, query="bpm=130-120")
        refused = library.cli("recommendations")
        assert refused.returncode == 2 and "shared catalog" in refused.stderr
    finally:
        library.stop()
    assert library.cli("recommendations").returncode == 3  # it needs the agent


def test_recommendations_come_from_djs_with_similar_taste(tmp_path, tracks):
    """Two agents share a catalog with two more DJs (who send their observations straight to it);
    B holds two of the others' three tracks: B is recommended the third (held by 3 DJs: never
    fewer), with the catalog's artist and title and the reason in words."""
    import asyncio
    import secrets

    import aiohttp

    from catalogkit import Client
    from cratesense.analysis.model import observation_fields
    from cratesense.analysis.pipeline import analyze_file

    import socket as sockets

    with sockets.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen([sys.executable, "-m", "cratesense", "catalog", "serve", "--port", str(port),
                               "--db", str(tmp_path / "shared.sqlite")], stderr=subprocess.DEVNULL)
    agents = []
    try:
        for name, held in (("a", tracks[:3]), ("b", tracks[:2])):
            home = tmp_path / name
            music = home / "music"
            music.mkdir(parents=True)
            for index, track in enumerate(held):
                tag(shutil.copy(track, music / track.name), f"Artist {index}", f"Title {index}")
            write_config(home, music, sync={"quiet_seconds": 0.5, "catalog_url": f"http://127.0.0.1:{port}",
                                            "skip_known_descriptors": False})
            agent = AgentProcess(home)
            agents.append(agent)
            agent.start()
            agent.analyzed(len(held), timeout=120)
            assert agent.cli("sync").returncode == 0

        async def two_more_djs() -> None:
            fields = [observation_fields(analyze_file(track)) for track in tracks[:3]]
            async with aiohttp.ClientSession() as session:
                for _ in range(2):
                    client = await Client(session, f"http://127.0.0.1:{port}").register()
                    status, _ = await client.ingest([{"id": secrets.token_hex(16), **f} for f in fields])
                    assert status == 200

        asyncio.run(two_more_djs())
        answer = json.loads(agents[1].cli("recommendations", "--json").stdout)
        titles = [item["metadata"]["title"] for item in answer["recommendations"]]
        assert titles == ["Title 2"], answer
        assert answer["recommendations"][0]["reason"] == "held by 3 DJs whose libraries overlap yours by 100 %"
        printed = agents[1].cli("recommendations").stdout
        assert "Artist 2 - Title 2" in printed and "DJs with similar taste" in printed and "overlap yours" in printed
    finally:
        for agent in agents:
            agent.stop(signal.SIGKILL)
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=10)


def test_the_cli_and_the_control_api_give_the_same_answers(library):
    """One use-case layer (dj/usecases.py): the same inputs give the same answers through the
    CLI (reading the journal itself) and through the running agent's control API, and the
    same mistakes the same error, naming the field, as exit 2 or as a 400 of kind "query"."""
    from cratesense.errors import QueryError

    asks = [
        (("tracks", "--bpm", "120-130", "--compatible-with", "8A", "--sort", "bpm"),
         ("tracks", {"bpm": "120-130", "compatible_with": "8A", "sort": "bpm"})),
        (("tracks", "--search", "an", "--limit", "2"), ("tracks", {"search": "an", "limit": "2"})),
        (("next", "alpha", "--limit", "5", "--pitch-range", "8"),
         ("next", {"track": "alpha", "limit": "5", "pitch_range": "8"})),
        (("similar", "alpha", "--limit", "3"), ("similar", {"track": "alpha", "limit": "3"})),
        (("playlist", "--from", "alpha", "--length", "4"), ("playlist", {"from": "alpha", "length": "4"})),
        (("playlist", "--bpm", "120-130"), ("playlist", {"bpm": "120-130"})),
        (("duplicates",), ("duplicates", {})),
    ]
    offline = [as_json(library, *args) for args, _ in asks]
    mistakes = [("next", {"track": "alpha", "pitch_range": "80"}, ("next", "alpha", "--pitch-range", "80")),
                ("tracks", {"bpm": "130-120"}, ("tracks", "--bpm", "130-120")),
                ("tracks", {"sort": "colour"}, ("tracks", "--sort", "colour"))]
    library.start()
    try:
        for (args, (name, query)), expected in zip(asks, offline):
            assert library.call("GET", name, query) == expected, args
        for name, query, args in mistakes:
            with pytest.raises(QueryError) as refused:  # the client raises the server's own kind again
                library.call("GET", name, query)
            result = cli(library, *args)
            assert result.returncode == 2 and result.stderr.strip() == f"cratesense: {refused.value}", result.stderr
    finally:
        library.stop()


# --- one recording everywhere: duplicates, transcodes, codec names, the title fallback (#26) ---

def _ffmpeg(source: Path, target: Path, *arguments: str) -> Path:
    """A real transcode with Debian's ffmpeg (what users encode with; PyAV has no libvorbis)."""
    subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-y", "-i", str(source), *arguments, str(target)], check=True)
    return target


@pytest.fixture(scope="module")
def transcodes(tmp_path_factory):
    """Four recordings that mix with each other, three of them in several files made as people
    make them: a 128 kb/s MP3 original re-encoded as FLAC and as a 320 kb/s MP3; a Vorbis
    original re-encoded as a 192 kb/s MP3 (the case a DJ met); a FLAC original and a 320 kb/s
    MP3 of it; and a track whose file has an artist tag and no title."""
    home = tmp_path_factory.mktemp("transcodes")
    source, music = home / "source", home / "music"
    source.mkdir()
    music.mkdir()
    made = {}
    for name, (bpm, tonic, minor, pattern) in (("alpha", LIBRARY["alpha"]), ("bravo", LIBRARY["bravo"]),
                                               ("charlie", LIBRARY["charlie"]), ("delta", LIBRARY["delta"])):
        made[name] = encode(synth_track(bpm=bpm, tonic=tonic, minor=minor, seconds=24, seed=len(name), pattern=pattern),
                            SR, source / f"{name}.flac")
    original = _ffmpeg(made["alpha"], music / "alpha.mp3", "-c:a", "libmp3lame", "-b:a", "128k")
    _ffmpeg(original, music / "alpha (lossless).flac", "-c:a", "flac")
    _ffmpeg(original, music / "alpha (320).mp3", "-c:a", "libmp3lame", "-b:a", "320k")
    vorbis = _ffmpeg(made["bravo"], music / "bravo.ogg", "-c:a", "libvorbis", "-q:a", "5")
    _ffmpeg(vorbis, music / "bravo (192).mp3", "-c:a", "libmp3lame", "-b:a", "192k")
    shutil.copy(made["charlie"], music / "charlie.flac")
    _ffmpeg(made["charlie"], music / "charlie (320).mp3", "-c:a", "libmp3lame", "-b:a", "320k")
    shutil.copy(made["delta"], music / "Delta Dub.flac")
    for path in music.iterdir():
        name = path.name.split(" ")[0].split(".")[0].lower()
        if name == "delta":
            audio = mutagen.File(path, easy=True)
            audio["artist"] = "Bob"  # an artist and no title
            audio.save()
        else:
            tag(path, ARTISTS[name], name.title())
    write_config(home, music, analysis={"workers": 2})
    agent = AgentProcess(home)
    agent.music = music
    assert agent.cli("scan", timeout=600).returncode == 0
    return agent


def test_duplicates_keep_the_original_and_name_each_transcode(transcodes):
    groups = {Path(group["files"][0]["path"]).name.split(" ")[0].split(".")[0]: group
              for group in as_json(transcodes, "duplicates")["groups"]}
    assert sorted(groups) == ["alpha", "bravo", "charlie"]
    by_name = {name: {Path(f["path"]).name: f for f in group["files"]} for name, group in groups.items()}
    # a 128 kb/s MP3, its FLAC and its 320 kb/s MP3: the MP3 is kept, the others are named transcodes
    alpha = by_name["alpha"]
    assert alpha["alpha.mp3"]["keep"] and alpha["alpha.mp3"]["transcode"] is None
    assert "lossy-to-lossless transcode" in alpha["alpha (lossless).flac"]["transcode"]
    assert "lossy-to-lossy transcode" in alpha["alpha (320).mp3"]["transcode"]
    assert 15.5 <= alpha["alpha.mp3"]["cutoff_khz"] <= 18.0  # LAME's lowpass at 128 kb/s, kept by both
    for name in ("alpha (lossless).flac", "alpha (320).mp3"):
        assert abs(alpha[name]["cutoff_khz"] - alpha["alpha.mp3"]["cutoff_khz"]) <= 0.5, name
    # a 192 kb/s MP3 made from a ~160 kb/s Vorbis: the Vorbis original is kept
    bravo = by_name["bravo"]
    assert bravo["bravo.ogg"]["keep"] and bravo["bravo.ogg"]["format"] == "Vorbis"
    assert "less of the recording" in bravo["bravo (192).mp3"]["holds_less"]
    # a real lossless original and a 320 kb/s MP3 of it: the FLAC is kept, nothing called a transcode
    charlie = by_name["charlie"]
    assert charlie["charlie.flac"]["keep"] and charlie["charlie.flac"]["transcode"] is None
    assert charlie["charlie (320).mp3"]["transcode"] is None and charlie["charlie (320).mp3"]["holds_less"]
    # codecs as people name them, in the JSON and in the table
    assert {f["format"] for group in groups.values() for f in group["files"]} == {"MP3", "FLAC", "Vorbis"}
    printed = cli(transcodes, "duplicates").stdout
    assert "mp3float" not in printed and " MP3 " in printed and "lossy-to-lossless transcode" in printed
    assert "mp3float" not in cli(transcodes, "tracks", "--json").stdout


def test_a_recording_is_never_proposed_after_itself_or_twice_in_a_playlist(transcodes):
    """Before, ``playlist --from`` put two encodes of one recording back to back, ``similar``
    called a track's own duplicate "very much alike" and ``next`` proposed it."""
    start = str(transcodes.music / "alpha.mp3")
    others = {"alpha (lossless).flac", "alpha (320).mp3"}
    following = as_json(transcodes, "next", start, "--limit", "10")["next"]
    assert following and not {Path(item["track"]["path"]).name for item in following} & others
    played = as_json(transcodes, "playlist", "--from", start, "--length", "8")["playlist"]
    recordings = [Path(step["track"]["path"]).name.split(" ")[0].split(".")[0].lower() for step in played]
    assert len(recordings) >= 3 and len(set(recordings)) == len(recordings), recordings
    similar = as_json(transcodes, "similar", start, "--limit", "10")["similar"]
    marked = {Path(item["track"]["path"]).name for item in similar if item["duplicate"]}
    assert marked == others
    for item in similar:
        if item["duplicate"]:
            assert "duplicate" in item["reasons"][0] and "alike" not in " ".join(item["reasons"])
    assert "a duplicate: the same recording" in cli(transcodes, "similar", start).stdout


def _copy(name: str, codec: str, kbps: float | None, cutoff: float | None, *, rate: int = 44100, channels: int = 2,
          duration: float = 200.0):
    from cratesense.dj.collection import Track
    from cratesense.dj.duplicates import Copy

    track = Track(content_key=name, path=f"/music/{name}", copies=1, artist="Ann", title="Song", album=None,
                  isrc=None, catalog_number=None, duration=duration, bpm=None, key=None, loudness=None, replaygain=None,
                  true_peak=None, beat_offset=None, downbeat_offset=None, beats_per_bar=None, codec=codec,
                  sample_rate=rate, channels=channels, added_at=None)
    return Copy(f"/music/{name}", track, 1, kbps, cutoff_hz=cutoff)


@pytest.mark.parametrize("copies, kept, verdicts", [
    # FFmpeg's AAC puts coding noise above its source's 20.6 kHz: it never shows a lossless file holds less
    ([("orig.flac", "flac", None, 20_600.0), ("aac.m4a", "aac", 265.0, 22_050.0), ("320.mp3", "mp3float", 320.0, 20_300.0)],
     "orig.flac", {"orig.flac": (None, None), "aac.m4a": (None, None)}),
    # a 320 kb/s MP3 stopping where the 128 kb/s Vorbis it came from stops (LAME keeps ~20.2 kHz at 320)
    ([("orig.ogg", "vorbis", 128.0, 19_300.0), ("320.mp3", "mp3float", 320.0, 19_350.0)],
     "orig.ogg", {"320.mp3": ("just where", None)}),
    # a lossless edge above 19.5 kHz proves nothing, even where a lossy copy stops too: the FLAC is kept
    ([("orig.flac", "flac", None, 20_700.0), ("q5.ogg", "vorbis", 160.0, 20_720.0)],
     "orig.flac", {"orig.flac": (None, None), "q5.ogg": (None, None)}),
    # an MP3 in which no edge was found (48 kHz: it runs to 24 kHz) and an Opus (it fills its top)
    # say nothing of the others; with nothing against it, the bitrate decides
    ([("orig.ogg", "vorbis", 112.0, 17_100.0), ("320.mp3", "mp3float", 320.0, 24_000.0),
      ("64.opus", "opus", 64.0, 20_400.0)], "320.mp3", {"orig.ogg": (None, None), "64.opus": (None, None)}),
    # a mono 128 kb/s MP3 keeps what a stereo 256 kb/s one does: 20.3 kHz is no transcode
    ([("mono.mp3", "mp3float", 128.0, 20_300.0), ("mono-64.mp3", "mp3float", 64.0, 16_000.0)],
     "mono.mp3", {"mono.mp3": (None, None)}),
    # a FLAC made from a Vorbis that keeps its top (nothing in its spectrum tells) but cut by 2 s
    # holds less: a whole copy is kept, never the trimmed one (bench/duplicates.py); a whole FLAC
    # made from the same Vorbis cannot be told from an original (the limit of the cutoff)
    ([("orig.ogg", "vorbis", 160.0, 20_000.0, 200.0), ("trim.flac", "flac", None, 20_050.0, 198.0),
      ("copy.flac", "flac", None, 20_050.0, 199.95)],
     "copy.flac", {"orig.ogg": (None, None), "trim.flac": (None, "2.0 s shorter"), "copy.flac": (None, None)}),
    ([("orig.ogg", "vorbis", 160.0, 20_000.0, 200.0), ("trim.flac", "flac", None, 20_050.0, 198.0)],
     "orig.ogg", {"orig.ogg": (None, None), "trim.flac": (None, "2.0 s shorter")}),
])
def test_the_copy_kept_is_the_best_source(copies, kept, verdicts):
    from cratesense.dj.duplicates import judge

    made = [_copy(name, codec, kbps, cutoff, channels=1 if name.startswith("mono") else 2,
                  rate=48_000 if cutoff == 24_000.0 else 44_100, duration=(*rest, 200.0)[0])
            for name, codec, kbps, cutoff, *rest in copies]
    judged = {Path(copy.path).name: copy for copy in judge(made)}
    assert [name for name, copy in judged.items() if copy.keep] == [kept]
    for name, (transcode, holds_less) in verdicts.items():
        copy = judged[name]
        assert (copy.transcode is None) if transcode is None else transcode in copy.transcode, (name, copy.transcode)
        assert (copy.holds_less is None) if holds_less is None else holds_less in copy.holds_less, (name, copy.holds_less)
