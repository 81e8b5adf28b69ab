"""Catalog figures (issue #5), on synthetic-but-realistic fingerprints:

    python bench/catalog.py [--index 100000] [--delete 50000] [--ingest 2000]

* ingest rate: observations/s through the real HTTP API (gzip'd batches of 100, guard and
  matching included) into a catalog already holding the index;
* look-up p50/p99 (in-process ``Store.lookup``, the matching cost) with ``--index`` fingerprints in
  the index: queries are stored fingerprints with 3% of their bits flipped and shifted by up to
  5 s, plus as many fingerprints that are in no recording;
* deletion of a contributor holding ``--delete`` observations (each on its own recording);
* database bytes per observation.

Fingerprints are random walks of 32-bit items (a few bits change from one item to the next, as
in real Chromaprint output), 120 s long (948 items). The index is filled in bulk with SQL that
mirrors ``Store._new_fingerprint`` (ingesting 1M fingerprints through the API would take hours).
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import json
import os
import random
import secrets
import sys
import tempfile
import time
from pathlib import Path

import chromaprint

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from catalogkit import random_fingerprint  # noqa: E402
from cratesense.catalog import matching  # noqa: E402
from cratesense.catalog.server import start  # noqa: E402
from cratesense.catalog.store import Store  # noqa: E402



def noisy(rng: random.Random, items: list[int], bit_error_rate: float = 0.03, shift: int = 0) -> list[int]:
    out = []
    for item in items[shift:]:
        for bit in range(32):
            if rng.random() < bit_error_rate:
                item ^= 1 << bit
        out.append(item)
    return out


def fill_index(store: Store, count: int, rng: random.Random, contributor: str) -> list[list[int]]:
    """``count`` recordings, each with one fingerprint and one observation; returns a sample."""
    db = store._db  # bulk fill for the benchmark only, mirroring Store._new_fingerprint
    sample = []
    now = time.time()
    batch = 10_000
    for start_index in range(0, count, batch):
        db.execute("BEGIN")
        for index in range(start_index, min(count, start_index + batch)):
            items = random_fingerprint(rng)
            if len(sample) < 200:
                sample.append(items)
            recording = db.execute("INSERT INTO recordings (contributors, updated_at) VALUES (1, ?)", (now,)).lastrowid
            terms = matching.index_terms(items)
            fingerprint = db.execute(
                "INSERT INTO fingerprints (recording, items, terms, duration) VALUES (?, ?, ?, ?)",
                (recording, matching.pack(items), matching.pack(terms), 180.0),
            ).lastrowid
            db.executemany("INSERT OR IGNORE INTO fingerprint_terms VALUES (?, ?)", [(t, fingerprint) for t in terms])
            db.execute(
                "INSERT INTO observations (id, contributor, recording, fingerprint, fingerprint_duration, title, bpm, "
                "analyzer_version, received_at) VALUES (?, ?, ?, ?, 180.0, ?, 120.0, 'bench', ?)",
                (secrets.token_hex(16), contributor, recording, fingerprint, f"Track {index}", now),
            )
        db.execute("COMMIT")
        print(f"\r  indexed {min(count, start_index + batch)}/{count}", end="", file=sys.stderr, flush=True)
    print(file=sys.stderr)
    return sample


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def lookups(store: Store, sample: list[list[int]], rng: random.Random) -> None:
    times, found, false_hits = [], 0, 0
    for items in sample:
        query = noisy(rng, items, shift=rng.randrange(0, 40))
        started = time.perf_counter()
        [result] = store.lookup([(query, 180.0 - 2)])
        times.append(time.perf_counter() - started)
        found += result is not None
    for _ in sample:
        started = time.perf_counter()
        [result] = store.lookup([(random_fingerprint(rng), 180.0)])
        times.append(time.perf_counter() - started)
        false_hits += result is not None
    print(f"look-up: p50 {1000 * percentile(times, 0.5):.1f} ms, p99 {1000 * percentile(times, 0.99):.1f} ms "
          f"(target p99 < 20 ms at 1M); noisy stored queries found: {found}/{len(sample)}, "
          f"false hits on unknown fingerprints: {false_hits}/{len(sample)}")


async def ingest_rate(store: Store, count: int, rng: random.Random) -> None:
    import aiohttp

    runner, url = await start(store, rate=1e6, burst=1e6)
    try:
        async with aiohttp.ClientSession() as session:
            async with session.post(url + "/v1/contributors") as response:
                token = (await response.json())["token"]
            headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json", "Content-Encoding": "gzip"}
            bodies = []
            for start_index in range(0, count, 100):
                observations = []
                for _ in range(min(100, count - start_index)):
                    items = random_fingerprint(rng)
                    observations.append({
                        "id": secrets.token_hex(16),
                        "fingerprint": {"chromaprint": chromaprint.encode_fingerprint(items, 1).decode(), "duration": 180.0},
                        "metadata": {"artist": "Bench", "title": f"T{rng.random()}"},
                        "analysis": {"analyzer_version": "bench", "bpm": 120.0, "key": "A minor", "camelot": "8A"},
                    })
                bodies.append(gzip.compress(json.dumps({"observations": observations}).encode()))
            started = time.perf_counter()
            for body in bodies:
                async with session.post(url + "/v1/observations", data=body, headers=headers) as response:
                    assert response.status == 200, await response.text()
            seconds = time.perf_counter() - started
        print(f"ingest over HTTP: {count / seconds:.0f} observations/s ({count} in {seconds:.1f} s, batches of 100)")
    finally:
        await runner.cleanup()


def deletion(store: Store, count: int, rng: random.Random) -> None:
    contributor, _ = store.register()
    fill_index(store, count, rng, contributor)
    started = time.perf_counter()
    deleted = store.delete_contributor_observations(contributor)
    seconds = time.perf_counter() - started
    print(f"deletion of a contributor with {deleted} observations: {seconds:.1f} s (target < 10 s)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--index", type=int, default=100_000)
    parser.add_argument("--delete", type=int, default=50_000)
    parser.add_argument("--ingest", type=int, default=2_000)
    parser.add_argument("--folder", type=Path, help="where the database goes (default: a temporary folder)")
    args = parser.parse_args()
    rng = random.Random(1)
    with tempfile.TemporaryDirectory(prefix="cratesense-catalog-bench-", dir=args.folder) as temp:
        store = Store(Path(temp) / "catalog.sqlite")
        contributor, _ = store.register()
        started = time.perf_counter()
        sample = fill_index(store, args.index, rng, contributor)
        print(f"index of {args.index} fingerprints built in {time.perf_counter() - started:.0f} s")
        lookups(store, sample, rng)
        asyncio.run(ingest_rate(store, args.ingest, rng))
        store._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        size = os.path.getsize(store.path)
        observations = store.counts()["observations"]
        print(f"database: {size / 1e6:.0f} MB for {observations} observations: {size / observations:.0f} bytes each "
              "(with their fingerprints and index terms)")
        deletion(store, args.delete, rng)
        store.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
