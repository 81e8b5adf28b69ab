"""Permissions, for real: the agent runs without the power to bypass them (root without
CAP_DAC_OVERRIDE when the tests run as root, see unprivileged.py), so unreadable files and
folders and a read-only data folder are what they would be on a user's machine (issue #9)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys

import pytest

from agentproc import AgentProcess, write_config
from unprivileged import without_bypass


@pytest.fixture
def home(tmp_path):
    yield tmp_path
    for folder, subfolders, _ in os.walk(tmp_path):  # so the temporary folder can be removed
        for name in subfolders:
            os.chmod(os.path.join(folder, name), 0o755)


def rescan(agent: AgentProcess) -> dict:
    before = agent.status()["last_scan_at"]
    agent.call("POST", "rescan")
    agent.wait_for(lambda s: s["last_scan_at"] != before, what="the rescan")
    return agent.settled()


def test_unreadable_files_and_folders_are_recorded_kept_not_retried_and_picked_up_once_fixed(home, tracks):
    music = home / "music"
    (music / "private").mkdir(parents=True)
    shutil.copy(tracks[0], music / "ok.flac")
    shutil.copy(tracks[1], music / "private" / "kept.flac")
    locked = shutil.copy(tracks[2], music / "locked.flac")
    outside = home / "outside" / "sealed"
    outside.mkdir(parents=True)
    shutil.copy(tracks[3], outside / "inside.flac")
    write_config(home, music, sync={"quiet_seconds": 0.5})
    locked.chmod(0)
    agent = AgentProcess(home, unprivileged=True)
    try:
        agent.start()
        status = agent.settled()
        assert status["tracks"] == 2 and status["files"] == 3 and status["failing_files"] == 1
        failures = agent.cli("failures").stdout
        assert "locked.flac: permission" in failures and "Permission denied" in failures

        # a folder that becomes unreadable: its tracks are kept (not "deleted"), and it is named
        (music / "private").chmod(0)
        status = rescan(agent)
        assert status["files"] == 3 and status["unreadable"] == 1
        assert status["unreadable_paths"][0][0].endswith("/private")
        assert "cannot read" in agent.cli("status").stdout
        failed_so_far = status["session"]["failed"]
        status = rescan(agent)  # recorded, not retried in a loop
        assert status["session"]["failed"] == failed_so_far == 1

        # an unreadable folder moved in while watching: the watcher survives it
        outside.chmod(0)
        outside.rename(music / "sealed")
        shutil.copy(tracks[4], music / "later.flac")
        status = agent.wait_for(lambda s: s["files"] == 4 and s["queued"] == 0 and s["analyzing"] == 0,
                                what="a file dropped after the unreadable folder")
        assert status["tracks"] == 3

        # permissions fixed (a chmod changes neither size nor mtime): picked up at the next scan
        locked.chmod(0o644)
        (music / "private").chmod(0o755)
        (music / "sealed").chmod(0o755)
        status = rescan(agent)
        assert status["failing_files"] == 0 and status["unreadable"] == 0
        assert status["files"] == 5 and status["tracks"] == 5
    finally:
        agent.stop(signal.SIGKILL)


def test_a_read_only_data_folder_is_one_clear_line_not_a_traceback(home, tracks):
    """Before the first start (nothing can be created) and after a clean stop (the journal is
    there but cannot be written): exit 2 with one line that names the folder."""
    music = home / "music"
    music.mkdir()
    shutil.copy(tracks[0], music)
    write_config(home, music)
    agent = AgentProcess(home, unprivileged=True)
    data = home / "data"
    data.mkdir()

    def start_fails() -> str:
        result = subprocess.run(without_bypass([sys.executable, "-m", "cratesense", "run"]), env=agent.env,
                                capture_output=True, text=True, timeout=60)
        assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
        [line] = result.stderr.strip().splitlines()
        return line

    data.chmod(0o555)
    line = start_fails()
    assert line.startswith("cratesense: cannot write in the data folder") and str(data) in line

    data.chmod(0o755)
    agent.start()
    agent.settled()
    agent.stop(signal.SIGTERM)
    (data / "cratesense").chmod(0o555)
    line = start_fails()
    assert "read-only" in line and str(data / "cratesense") in line
