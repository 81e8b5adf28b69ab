"""The DJ commands on a big library, from a cold CLI process (issue #18):

    python bench/dj.py [--tracks 100000] [--runs 30]

A journal of N generated tracks (random tempi and keys as a DJ library has them, embeddings in
clusters as real libraries have them; cached in ~/.cache/cratesense-bench) is queried by
`cratesense tracks --bpm 124-128 --key 8A`, `cratesense next TRACK` and `cratesense similar
TRACK`, each a new process, as a user runs them. Reported: p50 / p99 / max wall time, and the
same for a bare `python -c pass` (the interpreter's own start) as the reference. Target: each
under 200 ms p99.

Also: how well the sketch search (128-bit SimHash, then the exact cosine of the best 300)
finds the true 10 nearest neighbours, against an exact brute-force search (numpy, here only).
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from cratesense.analysis.constants import ANALYZER_VERSION
from cratesense.analysis.keys import Key
from cratesense.daemon.journal import SCHEMA_VERSION, Journal
from cratesense.daemon.trackview import COLUMNS, pack_embedding, sound_sketch

CACHE = Path.home() / ".cache" / "cratesense-bench"


def generate(path: Path, count: int, seed: int = 7) -> None:
    rng = random.Random(seed)
    numbers = np.random.default_rng(seed)
    centres = numbers.standard_normal((max(8, count // 500), 64))
    with Journal(path) as journal, journal._transaction() as db:
        for index in range(count):
            bpm = round(rng.choice([rng.gauss(124, 4), rng.gauss(128, 3), rng.gauss(174, 2), rng.gauss(90, 6)]), 1)
            key = Key(rng.randrange(12), rng.random() < 0.6)
            vector = centres[rng.randrange(len(centres))] + 0.6 * numbers.standard_normal(64)
            vector /= np.linalg.norm(vector)
            embedding = [float(v) for v in vector]
            content_key = f"{index:032x}"
            db.execute("INSERT INTO tracks VALUES (?, ?, ?, ?)", (content_key, "{}", ANALYZER_VERSION, time.time()))
            db.execute("INSERT INTO files (path, device, inode, size, mtime_ns, content_key, state, updated_at, "
                       "analyzer_version) VALUES (?, 1, ?, 8000000, 1, ?, 'analyzed', 0, ?)",
                       (f"/music/artist {index % 3000}/album {index % 9000}/{index:06d} track.flac".encode(), index,
                        content_key, ANALYZER_VERSION))
            row = dict.fromkeys(COLUMNS)
            row.update(content_key=content_key, artist=f"Artist {index % 3000}", title=f"Track {index}", bpm=bpm,
                       key=key.name, camelot=key.camelot, loudness=round(rng.uniform(-14, -6), 1), duration=300.0,
                       codec="flac", embedding=pack_embedding(embedding), sound_sketch=sound_sketch(embedding))
            db.execute(f"INSERT INTO library ({', '.join(COLUMNS)}, added_at) VALUES "
                       f"({', '.join('?' * (len(COLUMNS) + 1))})", [*(row[name] for name in COLUMNS), float(index)])
            if index % 10000 == 0:
                print(f"\r  generated {index}/{count}", end="", file=sys.stderr, flush=True)
    print(file=sys.stderr)


def timed(command: list[str], env: dict, runs: int) -> list[float]:
    subprocess.run(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd="/")  # bytecode
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        result = subprocess.run(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd="/")
        times.append(time.perf_counter() - started)
        if result.returncode != 0:
            raise SystemExit(f"{' '.join(command)} failed: {result.stderr.decode()[-500:]}")
    return times


def line(name: str, times: list[float]) -> str:
    ms = sorted(1000 * t for t in times)
    p99 = ms[min(len(ms) - 1, int(0.99 * len(ms)))]
    return f"{name:<48} p50 {statistics.median(ms):6.1f} ms  p99 {p99:6.1f} ms  max {ms[-1]:6.1f} ms"


def sketch_recall(path: Path, queries: int = 50) -> str:
    """Recall@10 of ``similar`` (the sketch search, then the exact cosine of its shortlist)
    against an exact brute-force search, over random queries."""
    from cratesense.dj.collection import Collection
    from cratesense.dj.mixing import similar_tracks

    with Collection.open(path) as collection:
        rowids, _ = collection.reader.sketch_block()
        keys = list(collection.reader.content_keys([int(rowid) for rowid in rowids]).values())
        vectors = collection.reader.embeddings(keys)
        matrix = np.array([vectors[key] for key in keys], dtype=np.float32)
        rng = random.Random(3)
        found = 0
        for _ in range(queries):
            query = rng.randrange(len(keys))
            exact = {keys[i] for i in np.argsort(-(matrix @ matrix[query]))[1:11]}
            answer = similar_tracks(collection, collection.track(keys[query]), limit=10)
            found += len(exact & {suggestion.track.content_key for suggestion in answer})
    return f"similar's recall@10 vs exact brute force: {found / (10 * queries):.3f} ({queries} queries)"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tracks", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=30)
    args = parser.parse_args()
    home = CACHE / f"dj-{args.tracks}-v{SCHEMA_VERSION}"  # a journal of another schema is made anew
    journal = home / "data" / "cratesense" / "journal.sqlite"
    if not journal.exists():
        journal.parent.mkdir(parents=True, exist_ok=True)
        generate(journal, args.tracks)
    # As an installed package runs: bytecode cached (this machine's environment sets
    # PYTHONDONTWRITEBYTECODE, which makes every cold start compile every module again).
    environment = {name: value for name, value in os.environ.items() if name != "PYTHONDONTWRITEBYTECODE"}
    env = {**environment, "XDG_DATA_HOME": str(home / "data"), "XDG_CONFIG_HOME": str(home / "config"),
           "XDG_RUNTIME_DIR": str(home / "run")}
    cli = [sys.executable, "-m", "cratesense"]
    rng = random.Random(11)
    picks = [f"Track {rng.randrange(args.tracks)}" for _ in range(args.runs)]
    print(line("python -c pass (the interpreter's start)", timed([sys.executable, "-c", "pass"], env, args.runs)))
    print(line("cratesense tracks --bpm 124-128 --key 8A", timed(cli + ["tracks", "--bpm", "124-128", "--key", "8A"],
                                                               env, args.runs)))
    for command in ("next", "similar"):
        times = []
        for pick in picks:
            times += timed(cli + [command, f"/music/artist {int(pick.split()[1]) % 3000}/album "
                                           f"{int(pick.split()[1]) % 9000}/{int(pick.split()[1]):06d} track.flac"], env, 1)
        print(line(f"cratesense {command} TRACK", times))
    print(sketch_recall(journal))
    return 0


if __name__ == "__main__":
    sys.exit(main())
