"""The agent's core under pressure: coalesced scans, a slow journal writer, workers that die with
the agent. A real `cratesense run` process, real folders, real signals."""

from __future__ import annotations

import os
import shutil
import signal
import time
from pathlib import Path

import pytest

from agentproc import AgentProcess, agent_with_music, write_config
from trackkit import track_analysis
from cratesense.analysis.constants import ANALYZER_VERSION
from cratesense.daemon.journal import Journal
from cratesense.daemon.scan import walk


@pytest.fixture
def agent(tmp_path):
    process = agent_with_music(tmp_path)
    yield process
    process.stop(signal.SIGKILL)


def known_tree(agent: AgentProcess, files: int) -> None:
    """``files`` tiny files the journal already knows (as after a first scan): a rescan of them
    is pure walking and comparing."""
    for index in range(files):
        folder = agent.music / f"a{index // 1000:02d}" / f"b{index // 100:04d}"
        if index % 100 == 0:
            folder.mkdir(parents=True)
        (folder / f"{index % 100:02d}.flac").write_bytes(b"x")
    found = list(walk([agent.music]))
    agent.journal_path.parent.mkdir(parents=True, exist_ok=True)
    with Journal(agent.journal_path) as journal:
        (first, identity), links = found[0], found[1:]
        journal.record_analysis(first, identity, "known", track_analysis(ANALYZER_VERSION), None, links=links)


def test_a_rescan_asked_for_during_a_scan_runs_once_after_it(agent):
    """Asked for while a scan runs, a rescan is neither dropped (APScheduler's max_instances
    dropped it) nor run twice: exactly one more scan follows the one in progress."""
    known_tree(agent, 20_000)
    agent.start(wait=False)
    for _ in range(20):  # catch a scan in progress (each rescan asks for the next one)
        agent.wait_for(lambda s: s["scanning"] is not None, what="a scan in progress")
        answer = agent.call("POST", "rescan")
        if answer["scanning"] is not None:  # the request arrived while that scan ran
            break
    else:
        pytest.fail("never caught a scan in progress")
    during = answer["scans_completed"]
    settled = agent.settled()
    assert settled["scans_completed"] == during + 2, (during, settled["scans_completed"])
    assert settled["files"] == 20_000 and settled["session"]["deleted"] == 0
    idle = agent.wait_for(lambda s: s["idle"], what="nothing more to do")  # no scan running or asked for
    assert idle["scans_completed"] == during + 2


def test_a_slow_journal_writer_does_not_delay_a_status_request(agent, tracks):
    """Every journal write made 2 s slower (on the writer thread only): status requests, which
    read through their own connections and the agent's memory, keep answering at once."""
    agent.env["CRATESENSE_DEBUG_WRITE_DELAY"] = "2"
    agent.start()
    for track in tracks[:3]:
        shutil.copy(track, agent.music)
    agent.wait_for(lambda s: s["queued"] + s["analyzing"] > 0, what="analysis to begin")
    slowest, polls, tracks_seen = 0.0, 0, set()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        started = time.monotonic()
        status = agent.status()
        slowest = max(slowest, time.monotonic() - started)
        polls += 1
        tracks_seen.add(status["tracks"])
        if status["tracks"] == 3:
            break
        time.sleep(0.1)
    assert status["tracks"] == 3 and len(tracks_seen) >= 2  # writes landed while we were asking
    assert polls >= 20 and slowest < 1.0, (polls, slowest)  # a status that waited would take >= 2 s


def _children(pid: int) -> list[int]:
    return [int(child) for task in Path(f"/proc/{pid}/task").iterdir()
            for child in (task / "children").read_text().split()]


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state != "Z"  # a zombie has exited; only its exit status waits to be collected


def test_kill_9_of_the_agent_leaves_no_worker_behind(agent, tracks):
    """A worker busy decoding when its agent is killed dies within 2 s (the parent-death signal)
    instead of finishing its file and writing into a broken pipe."""
    for index, track in enumerate(tracks):
        shutil.copy(track, agent.music / f"{index}.flac")
    write_config(agent.home, agent.music, analysis={"workers": 2})
    agent.start(wait=False)
    agent.wait_for(lambda s: s["workers"] >= 1 and s["analyzing"] > 0, what="workers at work")
    workers = _children(agent.process.pid)
    assert workers
    agent.stop(signal.SIGKILL)
    deadline = time.monotonic() + 2.0
    while time.monotonic() < deadline and any(_alive(pid) for pid in workers):
        time.sleep(0.05)
    assert not [pid for pid in workers if _alive(pid)]


def test_an_idle_agent_holds_no_worker(agent, tracks):
    """Workers start when there is work and leave after an idle minute (here: one second)."""
    write_config(agent.home, agent.music, analysis={"workers": 1, "idle_worker_seconds": 1})
    agent.start()
    assert agent.status()["workers"] == 0  # nothing to analyze: nothing started
    shutil.copy(tracks[0], agent.music)
    agent.wait_for(lambda s: s["tracks"] == 1, what="the new file, analyzed by a worker started for it")
    agent.wait_for(lambda s: s["workers"] == 0, what="the idle worker to leave")
    assert not [pid for pid in _children(agent.process.pid) if _alive(pid)]
    shutil.copy(tracks[1], agent.music)
    assert agent.wait_for(lambda s: s["tracks"] == 2)["failing_files"] == 0  # a new one when needed
    assert os.path.exists(agent.journal_path)
