"""The agent's library costs, as ratios in one run (issue #4):

    python bench/library.py [--files 100000] [--real]

1. Rescan of an unchanged tree of N small files: ``Library.scan`` vs
   ``find DIR -type f -printf '%i %s %T@\\n'`` on the same tree (target: at most 3x).
2. An idle ``cratesense run`` watching that tree: CPU seconds used over 20 s and the daemon's
   peak RSS (VmHWM; target under 150 MB), with the worker processes reported apart.
3. With ``--real``: initial scan + analysis of the cached real recordings (see
   tests/realaudio.py) by ``cratesense scan`` vs ``cratesense analyze`` on the same files, same
   worker count (target: the daemon adds at most 10%).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from cratesense.analysis.constants import ANALYZER_VERSION
from cratesense.daemon.journal import Journal
from cratesense.daemon.journal_io import JournalIO
from cratesense.daemon.library import Library
from cratesense.daemon.pool import AnalysisPool
from cratesense.daemon.scan import walk
from trackkit import track_analysis


def make_tree(root: Path, files: int, per_folder: int = 100) -> None:
    for index in range(files):
        folder = root / f"artist{index // (per_folder * 10):03d}" / f"album{index // per_folder:05d}"
        if index % per_folder == 0:
            folder.mkdir(parents=True)
        (folder / f"{index % per_folder:02d} track.flac").write_bytes(b"x")


def known_journal(root: Path, journal_path: Path) -> None:
    """A journal that already knows every file (as after a first scan)."""
    found = list(walk([root]))
    with Journal(journal_path) as journal:
        (first, identity), links = found[0], found[1:]
        journal.record_analysis(first, identity, "bench", track_analysis(ANALYZER_VERSION), None, links=links)


def best_of(repeat: int, action) -> float:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        action()
        times.append(time.perf_counter() - started)
    return min(times)


def rescan_ratio(root: Path, journal_path: Path) -> None:
    def find() -> None:
        subprocess.run(["find", str(root), "-type", "f", "-printf", "%i %s %T@\n"], stdout=subprocess.DEVNULL, check=True)

    def rescan() -> None:
        async def scan() -> None:
            io = JournalIO(journal_path)
            await io.open()
            with AnalysisPool(workers=1) as pool:  # workers start on demand: none here
                library = await Library.assemble(io, pool, [root], secret=b"0" * 32)
                running = asyncio.create_task(library.run())
                library.request_scan()
                await library.wait_idle()
                running.cancel()
                assert library.stats["deleted"] == 0 and library.queue.empty
            await io.close()

        asyncio.run(scan())

    find_seconds = best_of(3, find)
    scan_seconds = best_of(3, rescan)
    print(f"rescan of an unchanged tree: {scan_seconds:.2f} s, find: {find_seconds:.2f} s, "
          f"ratio {scan_seconds / find_seconds:.2f}x (target <= 3)")


def _proc_value(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _env(home: Path, music: Path) -> dict:
    config = home / "config" / "cratesense" / "config.toml"
    config.parent.mkdir(parents=True, exist_ok=True)
    config.write_text(f'[library]\nfolders = ["{music}"]\n[analysis]\nworkers = 1\n[web]\nport = 0\n')
    (home / "run").mkdir(mode=0o700, exist_ok=True)
    return {**os.environ, "XDG_CONFIG_HOME": str(home / "config"), "XDG_DATA_HOME": str(home / "data"),
            "XDG_RUNTIME_DIR": str(home / "run")}


def idle_daemon(root: Path, home: Path, files: int) -> None:
    from cratesense.daemon.control_client import request

    env = _env(home, root)
    known_journal(root, home / "data" / "cratesense" / "journal.sqlite")
    agent = subprocess.Popen([sys.executable, "-m", "cratesense", "run"], env=env, stderr=subprocess.DEVNULL)
    socket = home / "run" / "cratesense" / "control.sock"
    try:
        status = None
        while status is None or status["last_scan_at"] is None:
            time.sleep(0.5)
            try:
                status = request("GET", "status", path=socket)
            except Exception:
                pass
        before = _cpu_seconds(agent.pid)
        time.sleep(20)
        idle_cpu = _cpu_seconds(agent.pid) - before
        daemon_peak = _proc_value(agent.pid, "VmHWM") / 1024
        daemon_now = _proc_value(agent.pid, "VmRSS") / 1024
        children = [int(pid) for task in Path(f"/proc/{agent.pid}/task").iterdir()
                    for pid in (task / "children").read_text().split()]
        worker_rss = [_proc_value(pid, "VmRSS") / 1024 for pid in children]
        print(f"idle agent watching {files} files ({status['watch'][str(root)]['mode']}): "
              f"{idle_cpu:.2f} CPU s over 20 s; RSS now {daemon_now:.0f} MB (peak {daemon_peak:.0f} MB during its "
              f"first scan); child processes: {len(children)} ({sum(worker_rss):.0f} MB); "
              f"total {daemon_now + sum(worker_rss):.0f} MB (target < 80)")
    finally:
        agent.send_signal(signal.SIGTERM)
        agent.wait(timeout=10)


def real_throughput(home: Path) -> None:
    from realaudio import fetch

    files = fetch()
    music = home / "real"
    music.mkdir(parents=True)
    for path in files:
        shutil.copy(path, music / path.name)
    env = _env(home, music)
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "cratesense", "analyze", "--jobs", "1", str(music)],
                   env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    analyze_seconds = time.perf_counter() - started
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "cratesense", "scan", "--workers", "1"], env=env, stdout=subprocess.DEVNULL)
    scan_seconds = time.perf_counter() - started
    print(f"initial scan+analysis of {len(files)} real recordings: cratesense scan {scan_seconds:.1f} s, "
          f"cratesense analyze {analyze_seconds:.1f} s, overhead {100 * (scan_seconds / analyze_seconds - 1):+.1f}% "
          "(target <= +10%)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--files", type=int, default=100_000)
    parser.add_argument("--real", action="store_true", help="also measure scan+analysis of real recordings")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="cratesense-bench-") as temp:
        temp = Path(temp)
        tree = temp / "tree"
        make_tree(tree, args.files)
        journal_path = temp / "rescan.sqlite"
        known_journal(tree, journal_path)
        rescan_ratio(tree, journal_path)
        idle_daemon(tree, temp / "idle", args.files)
        if args.real:
            real_throughput(temp / "realhome")
    return 0


if __name__ == "__main__":
    sys.exit(main())
