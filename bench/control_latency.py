"""Control-socket latency while the agent works (issue #20), measured from outside:

    python bench/control_latency.py [--files 300] [--observations 100000] [--tree 100000] [--only a,b,c]

A real ``cratesense run`` (embedded catalog, 2 workers) is asked for its status every 100 ms
over its Unix socket (plain http.client: the request the CLI and the tray make) while it

  (a) runs its first scan and analysis of a few hundred distinct files (synthesized once and
      cached in ~/.cache/cratesense-bench/latency-audio),
  (b) syncs a backlog of N queued observations to its embedded catalog,
  (c) rescans an unchanged tree of N files it already knows.

Reported per scenario: round-trip p50 / p99 / max, and the same at rest (the agent idle)
as the reference. Target (issue #20): p99 under 100 ms and max under 1 s in all three. Also
reported: the wall time of ``cratesense status`` as a fresh process at rest (target < 150 ms).
Only black-box interfaces are used, so the same bench measures the agent before and after a
redesign.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

CACHE = Path.home() / ".cache" / "cratesense-bench" / "latency-audio"


class _Unix(http.client.HTTPConnection):
    def __init__(self, path: Path) -> None:
        super().__init__("localhost", timeout=30)
        self._path = str(path)

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(self.timeout)
        self.sock.connect(self._path)


def status(path: Path) -> tuple[float, dict | None]:
    """(seconds the round trip took, the status or None when nobody answered)."""
    started = time.perf_counter()
    connection = _Unix(path)
    try:
        connection.request("GET", "/v1/status", body="{}", headers={"Content-Type": "application/json"})
        answer = json.loads(connection.getresponse().read())
    except (OSError, ValueError, http.client.HTTPException):
        return time.perf_counter() - started, None
    finally:
        connection.close()
    return time.perf_counter() - started, answer


class Agent:
    def __init__(self, home: Path, music: Path, workers: int = 2) -> None:
        self.home = home
        config = home / "config" / "cratesense" / "config.toml"
        config.parent.mkdir(parents=True, exist_ok=True)
        config.write_text(f'[library]\nfolders = ["{music}"]\nquiet_seconds = 0.5\n'
                          f"[analysis]\nworkers = {workers}\n[sync]\nquiet_seconds = 1\n")
        (home / "run").mkdir(mode=0o700, exist_ok=True)
        self.env = {**os.environ, "XDG_CONFIG_HOME": str(home / "config"), "XDG_DATA_HOME": str(home / "data"),
                    "XDG_RUNTIME_DIR": str(home / "run")}
        self.socket = home / "run" / "cratesense" / "control.sock"
        self.journal = home / "data" / "cratesense" / "journal.sqlite"
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        self.process = subprocess.Popen([sys.executable, "-m", "cratesense", "run"], env=self.env,
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        while status(self.socket)[1] is None:
            if self.process.poll() is not None:
                raise SystemExit(f"the agent exited ({self.process.returncode})")
            time.sleep(0.05)

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            self.process.wait(timeout=30)


def poll_until(agent: Agent, done, limit: float = 3600.0) -> list[float]:
    """Round trips every 100 ms until ``done(status)``."""
    times = []
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        took, answer = status(agent.socket)
        times.append(took)
        if answer is not None and done(answer):
            break
        time.sleep(max(0.0, 0.1 - took))
    return times


def at_rest(agent: Agent, samples: int = 50) -> list[float]:
    times = []
    for _ in range(samples):
        took, _ = status(agent.socket)
        times.append(took)
        time.sleep(0.1)
    return times


def summary(name: str, times: list[float]) -> str:
    ms = sorted(1000 * t for t in times)
    p99 = ms[min(len(ms) - 1, int(0.99 * len(ms)))]
    return (f"{name:<52} n={len(ms):>5}  p50 {statistics.median(ms):6.1f} ms  p99 {p99:7.1f} ms  "
            f"max {ms[-1]:7.1f} ms")


def settled(s: dict) -> bool:
    return s.get("state") in ("watching", "paused") and s.get("queued") == 0 and s.get("analyzing") == 0


def audio_files(count: int) -> list[Path]:
    from audiogen import PATTERNS, encode, synth_track

    CACHE.mkdir(parents=True, exist_ok=True)
    files = []
    for index in range(count):
        path = CACHE / f"t{index:04d}.flac"
        if not path.exists():
            samples = synth_track(bpm=80 + index % 90, tonic=index % 12, minor=index % 2 == 0, seconds=20,
                                  seed=1000 + index, pattern=sorted(PATTERNS)[index % len(PATTERNS)])
            encode(samples, 44100, path)
        files.append(path)
    return files


def scenario_first_analysis(temp: Path, count: int) -> list[str]:
    files = audio_files(count)
    music = temp / "a-music"
    music.mkdir()
    for path in files:
        shutil.copy(path, music)
    agent = Agent(temp / "a-home", music)
    agent.start()
    try:
        busy = poll_until(agent, lambda s: s.get("last_scan_at") is not None and settled(s)
                          and s.get("tracks", 0) + s.get("failing_files", 0) >= count)
        rest = at_rest(agent)
    finally:
        agent.stop()
    return [summary(f"(a) first scan + analysis of {count} files", busy), summary("    at rest", rest)]


def scenario_sync_backlog(temp: Path, observations: int) -> list[str]:
    from cratesense.daemon.journal import Journal
    from sync import fill_outbox  # bench/sync.py's: the same backlog as that benchmark

    music = temp / "b-music"
    music.mkdir()
    agent = Agent(temp / "b-home", music)
    agent.journal.parent.mkdir(parents=True, exist_ok=True)
    with Journal(agent.journal) as journal:
        fill_outbox(journal, observations)
    agent.start()
    try:
        busy = poll_until(agent, lambda s: s.get("waiting_to_sync") == 0 and not s.get("syncing"))
        rest = at_rest(agent)
    finally:
        agent.stop()
    return [summary(f"(b) sync of {observations} queued observations", busy), summary("    at rest", rest)]


def scenario_rescan(temp: Path, files: int) -> list[str]:
    from cratesense.daemon.journal import Journal
    from cratesense.daemon.scan import walk

    tree = temp / "c-tree"
    for index in range(files):
        folder = tree / f"artist{index // 1000:03d}" / f"album{index // 100:05d}"
        if index % 100 == 0:
            folder.mkdir(parents=True)
        (folder / f"{index % 100:02d} track.flac").write_bytes(b"x")
    agent = Agent(temp / "c-home", tree)
    agent.journal.parent.mkdir(parents=True, exist_ok=True)
    with Journal(agent.journal) as journal:
        from cratesense.analysis.constants import ANALYZER_VERSION
        from trackkit import track_analysis

        for index, (path, identity) in enumerate(walk([tree])):
            if index == 0:
                journal.record_analysis(path, identity, "bench", track_analysis(ANALYZER_VERSION), None)
            journal.record_link(path, identity, "bench", ANALYZER_VERSION)
    agent.start()
    busy: list[float] = []
    try:
        first = poll_until(agent, lambda s: s.get("last_scan_at") is not None and settled(s))
        busy += first
        for _ in range(2):  # two more rescans asked for through the socket
            connection = _Unix(agent.socket)
            connection.request("POST", "/v1/rescan", body="{}", headers={"Content-Type": "application/json"})
            before = json.loads(connection.getresponse().read()).get("last_scan_at")
            connection.close()
            busy += poll_until(agent, lambda s, b=before: (s.get("last_scan_at") or 0) > (b or 0) and settled(s))
        rest = at_rest(agent)
    finally:
        agent.stop()
    return [summary(f"(c) rescans of an unchanged {files}-file tree", busy), summary("    at rest", rest)]


def cli_status_seconds(temp: Path) -> str:
    music = temp / "d-music"
    music.mkdir()
    agent = Agent(temp / "d-home", music, workers=1)
    agent.start()
    # As an installed package runs: with its bytecode cached (pip compiles it; this machine's
    # environment sets PYTHONDONTWRITEBYTECODE, which makes every start compile every module).
    env = {name: value for name, value in agent.env.items() if name != "PYTHONDONTWRITEBYTECODE"}
    try:
        poll_until(agent, settled)
        medians = {}
        for command in ("status", "pause", "resume"):
            times = []
            for run in range(11):
                started = time.perf_counter()
                subprocess.run([sys.executable, "-m", "cratesense", command], env=env, cwd=temp,
                               stdout=subprocess.DEVNULL, check=True)
                if run:  # the first run writes the bytecode
                    times.append(time.perf_counter() - started)
            medians[command] = statistics.median(times)
        startup = []
        for _ in range(10):
            started = time.perf_counter()
            subprocess.run([sys.executable, "-c", "pass"], cwd=temp, env=env, check=True)
            startup.append(time.perf_counter() - started)
    finally:
        agent.stop()
    each = ", ".join(f"{command} {1000 * seconds:.0f} ms" for command, seconds in medians.items())
    return (f"`cratesense` as a new process at rest, median: {each} "
            f"(bare `python -c pass`: {1000 * statistics.median(startup):.0f} ms; target < 150 ms)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--files", type=int, default=300, help="(a): distinct audio files")
    parser.add_argument("--observations", type=int, default=100_000, help="(b): queued observations")
    parser.add_argument("--tree", type=int, default=100_000, help="(c): files in the unchanged tree")
    parser.add_argument("--only", default="a,b,c,d", help="scenarios to run (d: the CLI's own start-up)")
    args = parser.parse_args()
    chosen = set(args.only.split(","))
    lines = []
    with tempfile.TemporaryDirectory(prefix="cratesense-latency-") as temp:
        temp = Path(temp)
        if "a" in chosen:
            lines += scenario_first_analysis(temp, args.files)
            print("\n".join(lines[-2:]), flush=True)
        if "b" in chosen:
            lines += scenario_sync_backlog(temp, args.observations)
            print("\n".join(lines[-2:]), flush=True)
        if "c" in chosen:
            lines += scenario_rescan(temp, args.tree)
            print("\n".join(lines[-2:]), flush=True)
        if "d" in chosen:
            lines.append(cli_status_seconds(temp))
            print(lines[-1], flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
