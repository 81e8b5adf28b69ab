"""Hostile libraries and faults, against a real agent (issue #9)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess

import pytest

from agentproc import AgentProcess, write_config


@pytest.fixture
def agent(tmp_path):
    music = tmp_path / "music"
    music.mkdir()
    write_config(tmp_path, music, sync={"quiet_seconds": 0.5})
    process = AgentProcess(tmp_path)
    process.music = music
    yield process
    process.stop(signal.SIGKILL)


def test_odd_names_links_and_long_paths(agent, tracks, tmp_path):
    music = bytes(agent.music)
    shutil.copy(tracks[0], music + b"/caf\xe9 \xff latin-1.flac")  # not valid UTF-8
    shutil.copy(tracks[1], music + b"/two\nlines.flac")
    deep = music + b"/" + b"/".join([b"d" * 200] * 4)  # a path over 800 bytes
    os.makedirs(deep)
    shutil.copy(tracks[2], deep + b"/" + b"n" * 200 + b".flac")
    os.link(tracks[3], agent.music / "hard link.flac")  # the same inode twice: analyzed once
    os.link(tracks[3], agent.music / "hard link 2.flac")
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    shutil.copy(tracks[4], outside / "linked.flac")
    (agent.music / "link to elsewhere").symlink_to(outside)  # followed once
    (agent.music / "link again").symlink_to(outside)  # a second way in: not walked twice
    (outside / "loop").symlink_to(agent.music)  # a loop back into the library: not followed
    (agent.music / "self").symlink_to(agent.music)
    agent.start()
    status = agent.settled()
    assert status["failing_files"] == 0, agent.cli("failures").stdout
    assert status["files"] == 6 and status["tracks"] == 5
    assert status["session"]["analyzed"] == 5 and status["session"]["linked"] == 1
    files = agent.files()
    assert any(path.endswith("linked.flac") and "link to elsewhere" in path or "link again" in path for path in files)

    out = tmp_path / "export"
    result = agent.cli("export", "--output", str(out))
    assert result.returncode == 0, result.stderr
    paths = [entry["path"] for entry in json.loads((out / "cratesense-journal.json").read_text())["files"]]
    assert any("caf\\xe9 \\xff latin-1.flac" in path for path in paths)  # shown, not lost or crashed
    with open(music + b"/bad \xff.flac", "w") as broken:  # a failure whose name is not UTF-8
        broken.write("not audio")
    agent.wait_for(lambda s: s["failing_files"] == 1)
    result = agent.cli("failures")
    assert result.returncode == 0 and "bad \\xff.flac: decode" in result.stdout


def test_a_damaged_journal_is_moved_aside_and_rebuilt(agent, tracks):
    for track in tracks[:2]:
        shutil.copy(track, agent.music)
    agent.start()
    agent.wait_for(lambda s: s["tracks"] == 2 and s["waiting_to_sync"] == 0 and s["last_sync_at"])
    agent.stop()
    for suffix in ("-wal", "-shm"):
        path = agent.journal_path.with_name(agent.journal_path.name + suffix)
        if path.exists():
            path.unlink()
    with open(agent.journal_path, "r+b") as journal:  # garbage over the pages after the header
        journal.seek(4096)
        journal.write(os.urandom(8192))
    agent.start()
    status = agent.settled()
    assert status["journal_rebuilt_from"] and os.path.exists(status["journal_rebuilt_from"])
    assert status["files"] == 2 and status["tracks"] == 2
    with sqlite3.connect(agent.journal_path) as db:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    # the identity survived: the same observation ids, the same contributor; nothing duplicated
    agent.wait_for(lambda s: s["waiting_to_sync"] == 0 and s["parked"] == 0 and s["last_sync_at"])
    with sqlite3.connect(agent.catalog_path) as db:
        assert db.execute("SELECT COUNT(*) FROM observations").fetchone()[0] == 2
        assert db.execute("SELECT COUNT(*) FROM contributors").fetchone()[0] == 1


def test_a_journal_deleted_while_stopped_is_rebuilt_and_keeps_the_users_choices(agent, tracks):
    """Contribution turned off, then the journal deleted while the agent is stopped: the rescan
    rebuilds it, and the agent does not come back contributing (the choice lives with the
    identity, not in the journal)."""
    for track in tracks[:2]:
        shutil.copy(track, agent.music)
    agent.start()
    assert agent.cli("contribute", "off").returncode == 0
    agent.settled()
    agent.stop()
    for suffix in ("", "-wal", "-shm"):
        path = agent.journal_path.with_name(agent.journal_path.name + suffix)
        if path.exists():
            path.unlink()
    agent.start()
    status = agent.settled()
    assert status["files"] == 2 and status["tracks"] == 2 and status["contribute"] is False
    assert agent.cli("sync").returncode == 0
    with sqlite3.connect(agent.catalog_path) as db:
        assert db.execute("SELECT COUNT(*) FROM observations").fetchone()[0] == 0


def test_an_analyzer_upgrade_reanalyzes_only_what_changed(agent, tracks):
    for track in tracks[:3]:
        shutil.copy(track, agent.music)
    agent.start()
    agent.settled()
    agent.stop()
    with sqlite3.connect(agent.journal_path) as db:  # as if one track came from an older analyzer
        db.execute("UPDATE tracks SET analyzer_version = 'f1.t0' WHERE rowid = (SELECT MIN(rowid) FROM tracks)")
    agent.start()
    status = agent.wait_for(lambda s: s["session"]["analyzed"] == 1 and s["queued"] == 0 and s["analyzing"] == 0)
    assert status["tracks"] == 3


def test_a_stale_socket_after_kill_9_is_recovered(agent, tracks):
    agent.start()
    agent.stop(signal.SIGKILL)
    assert agent.socket.exists()  # left behind by the killed agent
    result = agent.cli("status")
    assert result.returncode == 3 and "not running" in result.stderr
    agent.start()
    assert agent.status()["pid"] == agent.process.pid


def test_disk_full_under_the_journal_loses_nothing_and_resumes(agent, tracks, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=6m", "tmpfs", str(data)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here ({mounted.stderr.decode().strip()}); needs root")
    try:
        shutil.copy(tracks[0], agent.music)
        agent.start()
        agent.wait_for(lambda s: s["tracks"] == 1)
        filler = data / "filler"
        with open(filler, "wb") as out:  # take every free byte
            try:
                while True:
                    out.write(b"\0" * 65536)
                    out.flush()
            except OSError:
                pass
        for track in tracks[1:3]:
            shutil.copy(track, agent.music)
        status = agent.wait_for(lambda s: s["journal_error"] is not None, timeout=60, what="the full disk to show")
        assert status["state"] == "error" and "full" in status["journal_error"]
        assert "free some space" in status["journal_error"]
        # one meaning everywhere: the CLI, the tray and the typed status all call it a journal error
        assert status["error_kind"] == "journal" and {"kind": "journal", "message": status["journal_error"]} in status["problems"]
        printed = agent.cli("status").stdout
        assert "journal error" in printed and "free some space" in printed
        from cratesense.tray.app import TrayController

        tray = TrayController(agent.socket)
        try:
            tray.refresh()
            assert tray.status_line().startswith("Journal error") and "free some space" in tray.status_line()
            assert tray.icon_state == "error"
        finally:
            tray.close()
        filler.unlink()
        status = agent.wait_for(lambda s: s["tracks"] == 3 and s["journal_error"] is None, timeout=60,
                                what="the agent to resume once space is back")
        assert status["files"] == 3
        agent.stop()
        with sqlite3.connect(agent.journal_path) as db:
            assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    finally:
        agent.stop(signal.SIGKILL)
        subprocess.run(["umount", "-l", str(data)], capture_output=True)


def test_control_over_loopback_tcp_with_a_private_token(agent):
    """Where there are no Unix sockets the control API uses loopback TCP and a token file."""
    import http.client
    import stat

    agent.env["CRATESENSE_CONTROL"] = "tcp"
    agent.start()
    endpoint_file = agent.socket.with_name("control.json")
    assert not agent.socket.exists() and stat.S_IMODE(endpoint_file.stat().st_mode) == 0o600
    result = agent.cli("pause")  # the CLI finds the endpoint itself
    assert result.returncode == 0 and agent.status()["paused"]
    port = json.loads(endpoint_file.read_text())["port"]
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    connection.request("POST", "/v1/resume", body="{}", headers={"Authorization": "Bearer guessed"})
    assert connection.getresponse().status == 401 and agent.status()["paused"]
    agent.stop()
    assert not endpoint_file.exists()


def test_the_clock_jumping_backwards_stalls_nothing(tmp_path, tracks):
    """The system clock steps back 2 hours under a running agent (an RTC reset, a manual
    change). We cannot step this machine's clock (no CAP_SYS_TIME, and it is shared), so the
    jump is made for the agent's process alone by libfaketime, a boundary stand-in: its wall
    clock jumps, its monotonic clock and the files' real mtimes do not, as on a real machine.
    Periodic scans and syncs must keep their pace, and new files (whose mtimes now lie 2 hours
    in the agent's future) must still be analyzed and synced."""
    import glob

    libraries = glob.glob("/usr/lib/*/faketime/libfaketime.so.1")
    if not libraries:
        pytest.skip("libfaketime is not installed (scripts/setup.sh test installs it on Debian)")
    music = tmp_path / "music"
    music.mkdir()
    write_config(tmp_path, music, library={"scan_interval_minutes": 0.05},
                 sync={"interval_minutes": 0.05, "quiet_seconds": 0.5})
    offset = tmp_path / "clock-offset"
    offset.write_text("+0\n")
    agent = AgentProcess(tmp_path)
    agent.env.update(LD_PRELOAD=libraries[0], FAKETIME_TIMESTAMP_FILE=str(offset), FAKETIME_NO_CACHE="1",
                     FAKETIME_DONT_FAKE_MONOTONIC="1", NO_FAKE_STAT="1")
    shutil.copy(tracks[0], music)
    try:
        agent.start()
        before = agent.wait_for(lambda s: s["tracks"] == 1 and s["waiting_to_sync"] == 0 and s["last_sync_at"])
        offset.write_text("-2h\n")
        agent.wait_for(lambda s: s["last_scan_at"] < before["last_scan_at"] - 3600, timeout=30,
                       what="a periodic scan after the clock jumped back")
        agent.wait_for(lambda s: s["last_sync_at"] < before["last_sync_at"] - 3600, timeout=30,
                       what="a periodic sync after the clock jumped back")
        shutil.copy(tracks[1], music)
        status = agent.wait_for(lambda s: s["tracks"] == 2 and s["waiting_to_sync"] == 0 and s["queued"] == 0,
                                timeout=60, what="a new file analyzed and synced")
        # healthy, not stuck: with a scan every 3 s here, "scanning" is as likely as the others
        assert status["state"] in ("watching", "syncing", "scanning") and status["journal_error"] is None
        with sqlite3.connect(f"file:{agent.catalog_path}?mode=ro", uri=True) as db:
            assert db.execute("SELECT COUNT(*) FROM observations").fetchone()[0] == 2
        # the follower looks every 5 s: with scans every 3 s the rest can be done before it did
        agent.wait_for(lambda _: "the system clock jumped -72" in agent.log.read_text(), timeout=30,
                       what="the clock jump in the log")
    finally:
        agent.stop(signal.SIGKILL)


def _rss_kb(pid: int, field: str = "VmRSS") -> int:
    for line in open(f"/proc/{pid}/status"):
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise AssertionError(f"no {field} for {pid}")


def test_ten_thousand_files_dropped_at_once(tmp_path, tracks):
    """`cp -r` of 10,000 files into a watched folder (an event storm, more than the kernel's
    inotify queue of 16,384 events): every file is accounted for, the analysis queue is the
    pool's (one file per worker in flight, the rest waits as paths), memory stays bounded."""
    import random

    source = tmp_path / "import" / "crate"
    for index in range(100):
        folder = source / f"d{index:02d}"
        folder.mkdir(parents=True)
        for item in range(100 if index else 97):
            # not audio (each different, so none is linked to another): recorded and skipped
            (folder / f"{item:03d}.mp3").write_bytes(random.randbytes(2048))
    for index in range(3):
        shutil.copy(tracks[index], source / "d00" / f"real{index}.flac")
    music = tmp_path / "music"
    music.mkdir()
    write_config(tmp_path, music, sync={"quiet_seconds": 0.5})
    agent = AgentProcess(tmp_path)
    try:
        agent.start()
        agent.settled()
        pid = agent.status()["pid"]
        rss_before = _rss_kb(pid)
        subprocess.run(["cp", "-r", str(source), str(music)], check=True)
        most_in_flight = 0

        def done(status: dict) -> bool:
            nonlocal most_in_flight
            most_in_flight = max(most_in_flight, status["analyzing"])
            return status["files"] == 10_000 and status["queued"] == 0 and status["analyzing"] == 0

        status = agent.wait_for(done, timeout=600, what="10,000 files to be recorded")
        peak_growth_mb = (_rss_kb(pid, "VmHWM") - rss_before) / 1024
        assert status["tracks"] == 3 and status["failing_files"] == 9_997
        assert most_in_flight <= 2  # one worker's file, and one being identified
        on_disk = {os.fsdecode(p) for p in subprocess.run(["find", str(music), "-type", "f"], capture_output=True,
                                                          check=True).stdout.split(b"\n") if p}
        assert set(agent.files()) == on_disk
        print(f"10,000 files: peak RSS growth {peak_growth_mb:.1f} MB over {rss_before / 1024:.1f} MB")
        assert peak_growth_mb < 100
    finally:
        agent.stop(signal.SIGKILL)


def test_a_music_folder_on_a_read_only_file_system(tmp_path, tracks):
    """A read-only mount (a write-protected card, an ro network share): read, watched through
    changes made elsewhere, analyzed and synced; the agent never needs to write there."""
    source = tmp_path / "source"
    source.mkdir()
    shutil.copy(tracks[0], source)
    music = tmp_path / "music"
    music.mkdir()
    _bind_mount_or_skip(source, music)
    agent = AgentProcess(tmp_path)
    try:
        subprocess.run(["mount", "-o", "remount,bind,ro", str(music)], check=True)
        assert subprocess.run(["touch", str(music / "probe")], capture_output=True).returncode != 0
        write_config(tmp_path, music, sync={"quiet_seconds": 0.5})
        agent.start()
        agent.wait_for(lambda s: s["tracks"] == 1 and s["waiting_to_sync"] == 0 and s["failing_files"] == 0)
        shutil.copy(tracks[1], source)  # written through the writable side: seen on the read-only one
        status = agent.wait_for(lambda s: s["tracks"] == 2 and s["waiting_to_sync"] == 0, what="the second track")
        assert status["state"] in ("watching", "syncing") and not status["missing_folders"]
    finally:
        agent.stop(signal.SIGKILL)
        subprocess.run(["umount", str(music)])



def test_the_data_folder_turning_read_only_under_the_agent_loses_nothing(tmp_path, tracks, failing_disk):
    """The disk under the journal fails and the kernel remounts it read-only, dropping what was not
    yet flushed (ext4's errors=remount-ro, triggered for real): the agent says so and keeps
    answering, stops cleanly, and after a repair is still the same contributor and picks up what
    changed meanwhile, each observation in the catalog once."""
    music = tmp_path / "music"
    music.mkdir()
    write_config(tmp_path, music, sync={"quiet_seconds": 0.5})
    agent = AgentProcess(tmp_path)
    agent.env["XDG_DATA_HOME"] = str(failing_disk.folder)
    data = failing_disk.folder / "cratesense"
    try:
        shutil.copy(tracks[0], music)
        agent.start()
        agent.wait_for(lambda s: s["tracks"] == 1 and s["waiting_to_sync"] == 0)
        contributor = _contributor_id(data / "identity.json")
        failing_disk.fail()
        for track in tracks[1:3]:
            shutil.copy(track, music)
        status = agent.wait_for(lambda s: s["journal_error"] is not None, what="the read-only journal to show")
        assert status["state"] == "error" and "read-only" in status["journal_error"], status["journal_error"]
        assert agent.process.poll() is None
        assert agent.stop() < 10
        failing_disk.repair()
        agent.start()
        status = agent.wait_for(lambda s: s["tracks"] == 3 and s["waiting_to_sync"] == 0 and s["journal_error"] is None,
                                what="the agent to catch up after the repair")
        assert status["files"] == 3
        agent.stop()
        assert _contributor_id(data / "identity.json") == contributor
        with sqlite3.connect(data / "journal.sqlite") as db:
            assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        with sqlite3.connect(f"file:{data / 'catalog.sqlite'}?mode=ro", uri=True) as db:
            ids = [row[0] for row in db.execute("SELECT id FROM observations")]
            assert db.execute("SELECT COUNT(*) FROM contributors").fetchone()[0] == 1
        assert len(ids) == len(set(ids)) == 3
    finally:
        agent.stop(signal.SIGKILL)


def _contributor_id(identity_file):
    (credentials,) = [value for key, value in json.loads(identity_file.read_text()).items() if key.startswith("catalog:")]
    return credentials["contributor_id"]


def test_a_drive_unmounted_and_mounted_again_while_the_agent_runs(tmp_path, tracks):
    """A music folder on a drive that is unmounted under the running agent: its tracks are kept
    (not "every track deleted") and the folder is reported missing; once the drive is mounted
    again, files added to it meanwhile and afterwards are analyzed without a restart."""
    drive, music = tmp_path / "drive", tmp_path / "music"
    drive.mkdir()
    music.mkdir()
    for track in tracks[:2]:
        shutil.copy(track, drive)
    _bind_mount_or_skip(drive, music)
    write_config(tmp_path, music, sync={"quiet_seconds": 0.5})
    agent = AgentProcess(tmp_path)
    try:
        agent.start()
        agent.wait_for(lambda s: s["tracks"] == 2 and s["waiting_to_sync"] == 0)
        subprocess.run(["umount", str(music)], check=True)
        status = agent.wait_for(lambda s: str(music) in s["missing_folders"], timeout=30,
                                what="the unmounted folder to be reported")
        assert status["files"] == 2 and status["tracks"] == 2
        shutil.copy(tracks[2], drive)  # added elsewhere while the drive is away
        subprocess.run(["mount", "--bind", str(drive), str(music)], check=True)
        status = agent.wait_for(lambda s: s["tracks"] == 3 and not s["missing_folders"], timeout=60,
                                what="the drive to be back and its new file analyzed")
        shutil.copy(tracks[3], music)
        status = agent.wait_for(lambda s: s["tracks"] == 4 and s["waiting_to_sync"] == 0, timeout=30,
                                what="a file added after the drive came back (the folder watched again)")
        assert status["files"] == 4
    finally:
        agent.stop(signal.SIGKILL)
        subprocess.run(["umount", "-l", str(music)], capture_output=True)


def _bind_mount_or_skip(source, target):
    mounted = subprocess.run(["mount", "--bind", str(source), str(target)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot bind-mount here ({mounted.stderr.decode().strip()}); needs root")
