"""A real ``cratesense run`` in a subprocess, with its own config, data and runtime folders."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

from cratesense.daemon.control_client import request
from cratesense.errors import NotRunningError


def write_config(home: Path, music: Path, **sections: dict) -> Path:
    """A config file for a fast test agent; ``sections`` override or add settings."""
    settings = {
        "library": {"folders": [str(music)], "quiet_seconds": 0.5},
        "analysis": {"workers": 1, "timeout_seconds": 60},
        "web": {"port": 0},  # any free port: tests run agents side by side
    }
    for name, values in sections.items():
        settings.setdefault(name, {}).update(values)
    lines = []
    for name, values in settings.items():
        lines.append(f"[{name}]")
        lines.extend(f"{key} = {json.dumps(value)}" for key, value in values.items())
    path = home / "config" / "cratesense" / "config.toml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    return path


def agent_with_music(home: Path, **sections: dict) -> AgentProcess:
    """An agent (not started) over an empty ``home/music`` folder, with a test config."""
    music = home / "music"
    music.mkdir()
    write_config(home, music, **sections)
    agent = AgentProcess(home)
    agent.music = music
    return agent


def agent_over(home: Path, write_music, **sections: dict) -> AgentProcess:
    """An agent started over ``home/music`` once ``write_music(folder)`` has put its files there
    (it returns how many), and waited for until it has analyzed them all."""
    agent = agent_with_music(home, **sections)
    count = write_music(agent.music)
    agent.start()
    agent.analyzed(count)
    return agent


class AgentProcess:
    """Start with ``start()``; ``status()`` asks it over the real control socket."""

    def __init__(self, home: Path, *, unprivileged: bool = False) -> None:
        self.home = home
        self.unprivileged = unprivileged  # permission bits apply even when tests run as root (unprivileged.py)
        self.runtime = home / "run"
        self.env = {
            **os.environ,
            "XDG_CONFIG_HOME": str(home / "config"),
            "XDG_DATA_HOME": str(home / "data"),
            "XDG_RUNTIME_DIR": str(self.runtime),
        }
        self.process: subprocess.Popen | None = None
        self.log = home / "agent.log"

    @property
    def socket(self) -> Path:
        return self.runtime / "cratesense" / "control.sock"

    @property
    def journal_path(self) -> Path:
        return self.home / "data" / "cratesense" / "journal.sqlite"

    @property
    def catalog_path(self) -> Path:
        return self.home / "data" / "cratesense" / "catalog.sqlite"

    def start(self, *extra: str, wait: bool = True) -> AgentProcess:
        self.runtime.mkdir(mode=0o700, exist_ok=True)
        with open(self.log, "ab") as log:
            command = [sys.executable, "-m", "cratesense", "run", *extra]
            if self.unprivileged:
                from unprivileged import without_bypass

                command = without_bypass(command)
            self.process = subprocess.Popen(command, env=self.env, stdout=log, stderr=log)
        if wait:
            self.wait_for(lambda s: s["last_scan_at"] is not None, what="the first scan")
        return self

    def cli(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "cratesense", *args], env=self.env, capture_output=True, text=True, timeout=timeout
        )

    def status(self) -> dict:
        return request("GET", "status", path=self.socket, timeout=5)

    def call(self, method: str, name: str, body: dict | None = None) -> dict:
        return request(method, name, body, path=self.socket, timeout=10)

    def wait_for(self, condition, timeout: float = 60, what: str = "the agent") -> dict:
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise AssertionError(f"the agent exited ({self.process.returncode}):\n{self.log.read_text()}")
            try:
                last = self.status()
                if condition(last):
                    return last
            except NotRunningError:
                pass
            time.sleep(0.1)
        raise AssertionError(f"timed out waiting for {what}; last status: {last}\n{self.log.read_text()[-3000:]}")

    def settled(self, timeout: float = 60) -> dict:
        """Wait until nothing is queued, analyzing or scanning."""
        return self.wait_for(
            lambda s: s["state"] in ("watching", "paused") and s["queued"] == 0 and s["analyzing"] == 0,
            timeout,
            "the agent to settle",
        )

    def analyzed(self, tracks: int, timeout: float = 180) -> dict:
        """Wait until ``tracks`` tracks are known and nothing waits for analysis."""
        return self.wait_for(lambda s: s["tracks"] == tracks and s["queued"] + s["analyzing"] == 0, timeout,
                             f"{tracks} tracks to be analyzed")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10) -> float:
        """Stop it; return how long it took."""
        started = time.monotonic()
        if self.process and self.process.poll() is None:
            self.process.send_signal(sig)
            self.process.wait(timeout=timeout)
        return time.monotonic() - started

    def journal(self) -> sqlite3.Connection:
        return sqlite3.connect(f"file:{self.journal_path}?mode=ro", uri=True)

    def files(self) -> dict[str, str]:
        """Path (relative to nothing: as stored) -> state."""
        with self.journal() as db:
            return {os.fsdecode(path): state for path, state in db.execute("SELECT path, state FROM files")}
