"""The agent end to end: a real `cratesense run` process, real folders, real files, real signals."""

from __future__ import annotations

import json
import shutil
import sqlite3
import signal
import stat
import time
from pathlib import Path

import pytest

from agentproc import AgentProcess, agent_with_music, write_config
from audiogen import encode, fingerprintable_track, synth_track
from cratesense.analysis.constants import ANALYZER_VERSION, STAGE_VERSIONS

SR = 44100


@pytest.fixture
def agent(tmp_path):
    process = agent_with_music(tmp_path)
    yield process
    process.stop(signal.SIGKILL)


def outbox_ids(agent: AgentProcess) -> list[str]:
    """Every observation the agent made: still in its outbox, or already in the embedded catalog."""
    with agent.journal() as db:
        ids = [row[0] for row in db.execute("SELECT observation_id FROM outbox")]
    if agent.catalog_path.exists():
        with sqlite3.connect(f"file:{agent.catalog_path}?mode=ro", uri=True) as db:
            ids += [row[0] for row in db.execute("SELECT id FROM observations")]
    return ids


def test_slow_copy_is_analyzed_once_when_complete(agent, tracks):
    agent.start()
    data = tracks[0].read_bytes()
    target = agent.music / "slow.flac"
    with open(target, "wb") as out:  # ~3 s for the whole file, with a 1.2 s stall in the middle
        step = len(data) // 30
        for index in range(0, len(data), step):
            out.write(data[index : index + step])
            out.flush()
            time.sleep(1.2 if index == 15 * step else 0.06)
    agent.wait_for(lambda s: s["session"]["analyzed"] + s["session"]["failed"] >= 1, what="the copied file")
    # nothing else to come: the watcher holds no path and the library has nothing to do
    status = agent.wait_for(lambda s: s["idle"] and s["settling"] == 0, what="the agent to have nothing left to do")
    assert status["session"]["analyzed"] == 1, status
    assert status["tracks"] == 1 and status["failing_files"] == 0
    assert agent.files() == {str(target): "analyzed"}
    assert len(outbox_ids(agent)) == 1


def test_renames_and_folder_moves_relink_without_reanalysis(agent, tracks, tmp_path):
    album = agent.music / "album"
    album.mkdir()
    for track in tracks[:3]:
        shutil.copy(track, album)
    agent.start()
    assert agent.settled()["session"]["analyzed"] == 3

    (album / "s0.flac").rename(album / "renamed.flac")
    album.rename(agent.music / "Album (2024)")
    status = agent.wait_for(lambda s: str(agent.music / "Album (2024)" / "renamed.flac") in agent.files())
    moved_in = agent.music / "Album (2024)"
    assert set(agent.files()) == {str(moved_in / name) for name in ("renamed.flac", "s1.flac", "s2.flac")}

    outside = tmp_path / "elsewhere"
    moved_in.rename(outside)  # a folder moved out: its tracks are deleted from the library
    agent.wait_for(lambda s: s["files"] == 0, what="the moved-out folder's files to be forgotten")
    outside.rename(agent.music / "back")  # and moved back in: relinked by content, not decoded
    status = agent.wait_for(lambda s: s["files"] == 3, what="the moved-in folder")
    status = agent.settled()
    assert status["session"]["analyzed"] == 3 and status["session"]["linked"] == 3
    assert status["tracks"] == 3 and len(outbox_ids(agent)) == 3


def test_copies_are_analyzed_once_and_edits_are_reanalyzed(agent, tracks):
    agent.start()
    for name in ("a.flac", "b.flac", "c.flac"):  # three copies dropped at once
        shutil.copy(tracks[0], agent.music / name)
    status = agent.wait_for(lambda s: s["files"] == 3 and s["queued"] == 0 and s["analyzing"] == 0)
    assert status["session"]["analyzed"] == 1 and status["session"]["linked"] == 2

    shutil.copy(tracks[1], agent.music / "a.flac")  # the content of a.flac changes
    status = agent.wait_for(lambda s: s["session"]["analyzed"] == 2, what="a changed file's re-analysis")
    assert agent.settled()["tracks"] == 2
    assert len(outbox_ids(agent)) == 2


def test_broken_files_are_recorded_and_the_agent_keeps_going(agent, tracks, tmp_path):
    long_track = encode(synth_track(bpm=100, tonic=0, minor=False, seconds=14, seed=5), SR, tmp_path / "long.flac")
    agent.start()
    (agent.music / "zero.mp3").write_bytes(b"")
    (agent.music / "text.flac").write_text("not audio at all\n" * 100)
    data = long_track.read_bytes()
    (agent.music / "truncated.flac").write_bytes(data[: len(data) // 2])
    (agent.music / "notes.txt").write_text("ignored")
    (agent.music / "download.mp3.part").write_bytes(data)
    shutil.copy(tracks[3], agent.music / "good.flac")
    agent.wait_for(lambda s: s["failing_files"] == 3 and s["tracks"] == 1, what="3 failures and 1 track")
    result = agent.cli("failures")
    assert "zero.mp3: unreadable" in result.stdout and "text.flac: decode" in result.stdout
    assert "truncated.flac: truncated" in result.stdout
    assert set(agent.files()) == {str(agent.music / n) for n in ("zero.mp3", "text.flac", "truncated.flac", "good.flac")}
    asked = agent.call("POST", "rescan")  # a rescan does not retry unchanged failures
    status = agent.wait_for(lambda s: s["scans_completed"] > asked["scans_completed"] and s["idle"], what="the rescan")
    assert status["session"]["failed"] == 3


def test_kill_9_mid_analysis_then_restart_loses_and_duplicates_nothing(agent, tracks):
    for index in range(3):
        for track in tracks:
            shutil.copy(track, agent.music / f"{index}-{track.name}")
    (agent.music / "big").mkdir()
    for index in range(6):  # six more different tracks
        encode(fingerprintable_track(index, pattern="breakbeat"), SR, agent.music / "big" / f"b{index}.flac")
    agent.start(wait=False)
    agent.wait_for(lambda s: s["analyzing"] > 0 or s["session"]["analyzed"] > 0, what="analysis to start")
    agent.stop(signal.SIGKILL)
    before = len(outbox_ids(agent)) if agent.journal_path.exists() else 0
    assert before < 12, "the kill came too late to test anything"

    agent.start()
    status = agent.settled()
    ids = outbox_ids(agent)
    assert status["files"] == 24 and status["tracks"] == 12 and status["failing_files"] == 0
    assert len(ids) == len(set(ids)) == 12
    with agent.journal() as db:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        orphans = db.execute("SELECT COUNT(*) FROM files WHERE content_key NOT IN (SELECT content_key FROM tracks)")
        assert orphans.fetchone()[0] == 0


def test_kill_9_mid_scan_then_restart(agent, tracks):
    # many small non-audio-like folders make the walk long enough to be interrupted
    for index in range(300):
        folder = agent.music / f"d{index:03d}"
        folder.mkdir()
        shutil.copy(tracks[index % 6], folder / "t.flac")
    agent.start(wait=False)
    agent.wait_for(lambda s: True, what="the control socket")
    agent.stop(signal.SIGKILL)
    agent.start()
    status = agent.settled(timeout=120)
    assert status["files"] == 300 and status["tracks"] == 6
    assert len(set(outbox_ids(agent))) == len(outbox_ids(agent)) == 6


def test_second_agent_refuses_and_first_stops_promptly(agent, tracks):
    agent.start()
    second = agent.cli("run", timeout=30)
    assert second.returncode == 1
    assert "already running" in second.stderr and str(agent.process.pid) in second.stderr
    assert agent.status()["pid"] == agent.process.pid  # the socket was not taken over

    mode = stat.S_IMODE(agent.socket.stat().st_mode)
    assert mode == 0o600 and stat.S_IMODE(agent.socket.parent.stat().st_mode) == 0o700
    for track in tracks:
        shutil.copy(track, agent.music)
    agent.wait_for(lambda s: s["analyzing"] > 0, what="analysis in flight")
    took = agent.stop(signal.SIGTERM)
    assert agent.process.returncode == 0 and took < 5
    assert not agent.socket.exists()
    result = agent.cli("status")
    assert result.returncode == 3 and "not running" in result.stderr and "cratesense run" in result.stderr


def test_pause_survives_restart_and_resume_analyzes(agent, tracks):
    agent.start()
    assert agent.cli("pause").returncode == 0
    shutil.copy(tracks[4], agent.music)
    agent.wait_for(lambda s: s["queued"] == 1, what="the new file to be queued while paused")
    agent.stop()
    agent.start()
    status = agent.wait_for(lambda s: s["queued"] == 1)
    assert status["state"] == "paused" and status["tracks"] == 0
    result = agent.cli("resume")
    assert result.returncode == 0 and "state" in result.stdout
    assert agent.wait_for(lambda s: s["tracks"] == 1)["state"] in ("watching", "analyzing", "syncing")

    assert agent.cli("pause", "--until", "07:00").returncode == 0
    assert time.localtime(agent.status()["paused_until"])[3:5] == (7, 0)
    agent.cli("pause", "--for", "1s")
    assert agent.status()["paused_until"] is not None
    shutil.copy(tracks[5], agent.music)
    assert agent.wait_for(lambda s: s["tracks"] == 2, what="a timed pause to end")["paused"] is False


def test_polling_when_configured(tmp_path, tracks):
    music = tmp_path / "music"
    music.mkdir()
    write_config(tmp_path, music, library={"watch": "polling", "poll_interval_seconds": 0.5})
    agent = AgentProcess(tmp_path)
    try:
        status = agent.start().status()
        assert status["watch"][str(music)] == {"mode": "polling", "reason": "library.watch = polling in the config"}
        shutil.copy(tracks[0], music / "polled.flac")
        agent.wait_for(lambda s: s["tracks"] == 1, what="the polled file")
        assert "polling" in agent.cli("status").stdout
    finally:
        agent.stop(signal.SIGKILL)


def test_missing_music_folder_keeps_its_tracks(agent, tracks, tmp_path):
    shutil.copy(tracks[0], agent.music)
    agent.start()
    agent.settled()
    agent.stop()
    aside = tmp_path / "unmounted"
    agent.music.rename(aside)  # the drive is gone
    agent.start()
    status = agent.status()
    assert status["files"] == 1 and str(agent.music) in status["missing_folders"]
    agent.stop()
    aside.rename(agent.music)
    agent.start()
    status = agent.settled()
    assert status["files"] == 1 and status["missing_folders"] == {} and status["session"]["analyzed"] == 0


def test_scan_command_analyzes_and_exits(tmp_path, tracks):
    music = tmp_path / "music"
    music.mkdir()
    for track in tracks[:2]:
        shutil.copy(track, music)
    (music / "bad.flac").write_text("garbage")
    write_config(tmp_path, music)
    agent = AgentProcess(tmp_path)
    result = agent.cli("scan")
    assert result.returncode == 1, result.stderr
    assert "3 files, 2 tracks" in result.stdout and "1 failed" in result.stdout
    result = agent.cli("scan")  # nothing changed: nothing analyzed
    assert "0 analyzed" in result.stdout and "0 failed" in result.stdout and result.returncode == 0


def scanned_over_three(tmp_path, tracks) -> tuple[AgentProcess, Path]:
    """An agent (not running) over a music folder of three real tracks, scanned once."""
    agent = agent_with_music(tmp_path)
    for track in tracks[:3]:
        shutil.copy(track, agent.music)
    assert agent.cli("scan").returncode == 0
    return agent, agent.music


def test_an_upgrade_keeps_the_stages_it_did_not_change(tmp_path, tracks):
    """A new tempo, key or bars stage re-analyzes a track without its native-rate view: its
    loudness and embedding are kept from the earlier analysis. A new loudness stage computes
    them again; a new sound model re-tags the track and keeps its loudness."""
    agent, music = scanned_over_three(tmp_path, tracks)

    def older(stage: str) -> str:
        return ".".join(f"{name[0]}{version - 1 if name == stage else version}" for name, version in STAGE_VERSIONS.items())

    with sqlite3.connect(agent.journal_path) as db:  # as an earlier version left them, with a loudness we never measure
        for name, stage in (("s0.flac", "tempo"), ("s1.flac", "loudness"), ("s2.flac", "model")):
            db.execute("UPDATE tracks SET analyzer_version = ?, analysis = json_set(analysis, '$.descriptors.loudness_lufs', "
                       "-42.0, '$.analyzer_version', ?) WHERE content_key = (SELECT content_key FROM files "
                       "WHERE path = ?)", (older(stage), older(stage), str(music / name).encode()))
        db.execute("UPDATE tracks SET analysis = json_set(analysis, '$.descriptors.genres', json('[\"opera\"]')) "
                   "WHERE content_key = (SELECT content_key FROM files WHERE path = ?)", (str(music / "s2.flac").encode(),))
    result = agent.cli("scan")
    assert result.returncode == 0 and "3 analyzed" in result.stdout, result.stdout
    with agent.journal() as db:
        found = dict(db.execute("SELECT f.path, t.analysis FROM files f JOIN tracks t USING (content_key)"))
    kept, remeasured, retagged = (json.loads(found[str(music / name).encode()]) for name in ("s0.flac", "s1.flac", "s2.flac"))
    assert retagged["descriptors"]["loudness_lufs"] == -42.0  # kept: only the model ran again
    assert retagged["descriptors"]["genres"] and retagged["descriptors"]["genres"] != ["opera"]
    assert retagged["analyzer_version"] == ANALYZER_VERSION
    assert kept["analyzer_version"] == remeasured["analyzer_version"] == ANALYZER_VERSION
    assert kept["descriptors"]["loudness_lufs"] == -42.0 and kept["descriptors"]["embedding"]
    assert kept["descriptors"]["bpm"] is not None  # the changed stage was computed anew
    assert remeasured["descriptors"]["loudness_lufs"] not in (None, -42.0)


def test_a_journal_of_embedding_version_3_upgrades_to_version_4(tmp_path, tracks):
    """Tracks analyzed by the release before (sound model 1, its embedding version 3 alone) get
    the model and the blended embedding anew and keep their loudness; `similar` then finds the
    tracks by today's embeddings only."""
    agent, music = scanned_over_three(tmp_path, tracks)
    before = ".".join(f"{name[0]}{ {'embedding': 3, 'model': 1}.get(name, version)}"
                      for name, version in STAGE_VERSIONS.items())
    planted = [round(0.125, 5)] * 64  # a unit vector no analysis of ours makes
    with sqlite3.connect(agent.journal_path) as db:
        db.execute("UPDATE tracks SET analyzer_version = ?, analysis = json_set(analysis, '$.analyzer_version', ?, "
                   "'$.descriptors.loudness_lufs', -42.0, '$.descriptors.embedding', json(?))",
                   (before, before, json.dumps(planted)))
    result = agent.cli("scan")
    assert result.returncode == 0 and "3 analyzed" in result.stdout, result.stdout
    with agent.journal() as db:
        analyses = [json.loads(row[0]) for row in db.execute("SELECT analysis FROM tracks")]
    assert len(analyses) == 3
    for analysis in analyses:
        assert analysis["analyzer_version"] == ANALYZER_VERSION
        assert analysis["descriptors"]["loudness_lufs"] == -42.0  # kept: loudness did not change
        embedding = analysis["descriptors"]["embedding"]
        assert len(embedding) == 64 and embedding != planted and analysis["descriptors"]["genres"]
    result = agent.cli("similar", str(music / "s0.flac"), "--json")
    assert result.returncode == 0, result.stderr
    found = json.loads(result.stdout)["similar"]
    assert {Path(row["track"]["path"]).name for row in found} == {"s1.flac", "s2.flac"}


def test_tracks_analyzed_while_the_sound_model_was_damaged_get_it_once_it_loads(tmp_path, tracks):
    """A damaged model file (a real copy of the shipped files, CRATESENSE_SOUND_MODEL): the tracks
    are analyzed without genres or embedding; while it stays damaged a scan tries the model on
    few of them, not all again; once the file is restored every one of them gets the model's
    stages, the rest of its analysis kept."""
    import re

    from cratesense.analysis import learned
    from cratesense.analysis.constants import WITHOUT_MODEL_VERSION

    music = tmp_path / "music"
    music.mkdir()
    for track in tracks[:3]:
        shutil.copy(track, music)
    write_config(tmp_path, music)
    models = tmp_path / "models"
    shutil.copytree(learned.model_folder(), models)
    damaged = models / "musicnn-msd.onnx"
    original = damaged.read_bytes()
    damaged.write_bytes(original[:1000])
    agent = AgentProcess(tmp_path)
    agent.env["CRATESENSE_SOUND_MODEL"] = str(models)

    def analyses() -> list[dict]:
        with agent.journal() as db:
            return [json.loads(row[0]) for row in db.execute("SELECT analysis FROM tracks")]

    result = agent.cli("scan")
    assert result.returncode == 0 and "3 analyzed" in result.stdout, result.stdout + result.stderr
    for analysis in analyses():
        assert analysis["analyzer_version"] == WITHOUT_MODEL_VERSION
        assert "musicnn-msd.onnx is damaged" in analysis["descriptors"]["model_error"]
        assert analysis["descriptors"]["genres"] is None and analysis["descriptors"]["embedding"] is None
    with sqlite3.connect(agent.journal_path) as db:  # a loudness we never measure: kept means not measured again
        db.execute("UPDATE tracks SET analysis = json_set(analysis, '$.descriptors.loudness_lufs', -42.0)")
    result = agent.cli("scan")  # still damaged: the first track tried says so, the others wait
    tried = int(re.search(r"(\d+) analyzed", result.stdout).group(1))
    assert result.returncode == 0 and tried <= 2, result.stdout  # two workers may each start one
    damaged.write_bytes(original)
    result = agent.cli("scan")
    assert result.returncode == 0 and "3 analyzed" in result.stdout, result.stdout + result.stderr
    for analysis in analyses():
        assert analysis["analyzer_version"] == ANALYZER_VERSION and analysis["descriptors"]["model_error"] is None
        assert analysis["descriptors"]["genres"] and len(analysis["descriptors"]["embedding"]) == 64
        assert analysis["descriptors"]["loudness_lufs"] == -42.0
    assert "0 analyzed" in agent.cli("scan").stdout  # and nothing more to do
