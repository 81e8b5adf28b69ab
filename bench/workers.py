"""How many analysis workers a first pass should run: throughput of 1 and 2 workers (nice 10, idle
I/O class, as the agent starts them), and what they cost a user at the keyboard.

    flock -x /work/heavy.lock .venv/bin/python bench/workers.py [--files 24] [--seconds 6]

The files are the real recordings bench/speed.py transcodes (MP3, AAC, FLAC). With 0, 1 and 2
workers kept busy, a separate foreground process at normal priority measures

* interactive latency: every 20 ms it wakes and does ~5 ms of CPU work (a keystroke, a UI
  redraw); the time from waking to done, as percentiles;
* a CPU-bound task (a build, a game): how much work it gets done in a fixed time.

The first-pass throughput is measured on its own (all files, no foreground load), wall time.
"""

from __future__ import annotations

import argparse
import itertools
import json
import subprocess
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from cratesense.daemon.pool import AnalysisPool, Task
from speed import FORMATS, choose_recordings, transcoded

_FOREGROUND = r"""
import json, sys, time
seconds, units = float(sys.argv[1]), int(sys.argv[2])

def work(units):
    total = 0
    for i in range(units):
        total += i * i
    return total

if seconds == 0:  # calibrate: iterations for ~5 ms of work, best of 30 (no workers running)
    best = min(_timed for _timed in (
        (lambda started: (work(20000), time.perf_counter() - started)[1])(time.perf_counter()) for _ in range(30)))
    print(int(0.005 / (best / 20000)))
    raise SystemExit
latencies = []
end = time.monotonic() + seconds
while time.monotonic() < end:
    time.sleep(0.02)
    started = time.perf_counter()
    work(units)
    latencies.append(time.perf_counter() - started)
done = 0
end = time.monotonic() + seconds
while time.monotonic() < end:
    work(10000)
    done += 1
latencies.sort()
pick = lambda q: latencies[min(len(latencies) - 1, int(q * len(latencies)))] * 1000
print(json.dumps({"p50": pick(0.5), "p95": pick(0.95), "p99": pick(0.99), "cpu_work": done / seconds}))
"""


def foreground(seconds: float, units: int = 0) -> dict | int:
    output = subprocess.run([sys.executable, "-c", _FOREGROUND, str(seconds), str(units)], capture_output=True,
                            text=True, check=True)
    return json.loads(output.stdout)


def keep_busy(pool: AnalysisPool, files: list[Path], stop: threading.Event) -> None:
    """Every worker always has a file, until ``stop``."""
    for _ in pool.run(Task(str(path)) for path in itertools.cycle(files)):
        if stop.is_set():
            return


def throughput(workers: int, files: list[Path]) -> float:
    """Files per second of wall time for one pass over ``files``."""
    with AnalysisPool(workers=workers, timeout=300, nice=10) as pool:
        list(pool.run(Task(str(files[0])) for _ in range(workers)))  # workers started and warm
        started = time.perf_counter()
        outcomes = list(pool.run(Task(str(path)) for path in files))
        elapsed = time.perf_counter() - started
    assert all(outcome.ok for outcome in outcomes), [o.error for o in outcomes if not o.ok]
    return len(files) / elapsed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=24)
    parser.add_argument("--seconds", type=float, default=6.0, help="per foreground measurement")
    args = parser.parse_args()
    vorbis = choose_recordings(max(1, args.files // len(FORMATS)))
    files = [path for ext in FORMATS for path in transcoded(vorbis, ext)]

    rates = {workers: throughput(workers, files) for workers in (1, 2)}
    print(f"first pass over {len(files)} real files (MP3/AAC/FLAC), wall time, nice 10:")
    for workers, rate in rates.items():
        print(f"  {workers} worker{'s' if workers > 1 else ' '}: {rate * 60:6.1f} files/min")
    print(f"  2 workers / 1 worker = {rates[2] / rates[1]:.2f}x")

    print("\nforeground user at normal priority while the workers analyze (~5 ms of work every 20 ms;"
          " then a CPU-bound loop):")
    print(f"{'workers':>8} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8} {'CPU-bound work':>15}")
    units = foreground(0)  # ~5 ms of work, calibrated with no worker running
    results = {}
    for workers in (0, 1, 2):
        stop = threading.Event()
        pool = AnalysisPool(workers=workers, timeout=300, nice=10) if workers else None
        feeder = threading.Thread(target=keep_busy, args=(pool, files, stop)) if pool else None
        try:
            if feeder:
                feeder.start()
                while len(pool.busy_pids()) < workers:  # every worker has a file before measuring
                    time.sleep(0.05)
            results[workers] = foreground(args.seconds, units)
        finally:
            stop.set()
            if feeder:
                feeder.join()
                pool.close()
        result = results[workers]
        print(f"{workers:8} {result['p50']:8.2f} {result['p95']:8.2f} {result['p99']:8.2f} "
              f"{result['cpu_work'] / results[0]['cpu_work']:14.0%}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
