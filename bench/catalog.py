"""Catalog figures (issues #5, #16) on each backend, in the same run:

    python bench/catalog.py [--backend both|sqlite|postgresql] [--index 1000000] [--delete 50000]
                            [--lookups 200] [--ingest 2000] [--folder DIR]

* look-up p50/p99 (in-process ``Store.lookup``: the term query, the candidates' items, the
  scoring, and the consensus read) with ``--index`` fingerprints in the index: queries are stored
  fingerprints with 3% of their bits flipped and shifted by up to 5 s, plus as many
  fingerprints that are in no recording (target p99 < 5 ms at 1M);
* bytes per fingerprint: the whole database (items, index terms, recording, observation) over
  the fingerprints it holds;
* ingest rate: observations/s through the real HTTP API (gzip'd batches of 100, guard and
  matching included) into the catalog holding the index;
* erasure of a contributor holding ``--delete`` observations (each on its own recording) from
  that catalog (target < 10 s; 15.5 s on SQLite before #16).

Fingerprints are random walks of 32-bit items (a few bits change from one item to the next, as
in real Chromaprint output), 120 s long (948 items). The index is filled in bulk (a million
fingerprints through the API would take hours): numpy makes the items, the terms are those of
``matching.index_terms`` (checked on a sample), and rows go in sorted, with COPY on PostgreSQL.
PostgreSQL is a throwaway server (tests/pgserver.py, fsync on) unless ``--postgres-url`` names
one. ``--lock FILE`` (a shared machine's heavy-job lock): the bulk fills hold it shared and
only the timed parts hold it exclusively.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import fcntl
import gzip
import json
import random
import secrets
import struct
import sys
import tempfile
import time
from pathlib import Path

import chromaprint
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from catalogkit import random_fingerprint
from cratesense.catalog import matching
from cratesense.catalog.server import start
from cratesense.catalog.store import Store

ITEMS = 948
DURATION = 180.0
CHUNK = 20_000


def random_walks(generator: np.random.Generator, count: int) -> np.ndarray:
    """``count`` fingerprints as a (count, 948) uint32 array, each item 5 bits from the last."""
    bits = generator.integers(0, 32, size=(count, ITEMS, 5), dtype=np.uint32)
    masks = np.bitwise_or.reduce(np.left_shift(np.uint32(1), bits), axis=2).astype(np.uint32)
    masks[:, 0] = generator.integers(0, 2**32, size=count, dtype=np.uint64).astype(np.uint32)
    return np.bitwise_xor.accumulate(masks, axis=1)


def terms_of(items: np.ndarray) -> list[list[int]]:
    """``matching.index_terms`` of each row, vectorized where the rows allow (no repeated term
    or silence among the 120 items from 10 s in: nearly always, for random walks)."""
    start = min(int(10 * matching.ITEMS_PER_SECOND), ITEMS - matching.TERMS)
    window = items[:, start:start + matching.TERMS] >> matching.TERM_SHIFT
    ordered = np.sort(window, axis=1)
    simple = ~((ordered[:, 1:] == ordered[:, :-1]).any(axis=1) | (items[:, start:] == matching.SILENCE).any(axis=1))
    return [window[i].tolist() if simple[i] else matching.index_terms(items[i].tolist()) for i in range(len(items))]


def fill(store: Store, count: int, contributor: str, seed: int, *, fresh_index: bool) -> list[list[int]]:
    """``count`` recordings, each with one fingerprint and one observation of ``contributor``;
    returns the first 200 fingerprints (to query). Mirrors Store._new_fingerprint in bulk."""
    generator = np.random.default_rng(seed)
    sample: list[list[int]] = []
    with store.backend.reading() as db:
        first = 1 + max(db.execute("SELECT COALESCE(MAX(id), 0) FROM recordings").fetchone()[0],
                        db.execute("SELECT COALESCE(MAX(id), 0) FROM fingerprints").fetchone()[0])
    pairs = []
    now = time.time()
    postgres = store.backend.name == "postgresql"
    for chunk_start in range(0, count, CHUNK):
        n = min(CHUNK, count - chunk_start)
        items = random_walks(generator, n)
        terms = terms_of(items)
        if chunk_start == 0:
            assert all(terms[i] == matching.index_terms(items[i].tolist()) for i in range(200))
            sample = [items[i].tolist() for i in range(min(200, n))]
        ids = np.arange(first + chunk_start, first + chunk_start + n, dtype=np.int64)
        rows_r = [(int(i), 1, now, 1, 1) for i in ids]
        rows_f = [(int(i), int(i), items[k].astype("<u4").tobytes(), struct.pack(f"<{len(terms[k])}I", *terms[k]), DURATION)
                  for k, i in enumerate(ids)]
        rows_o = [(secrets.token_hex(16), contributor, int(i), int(i), DURATION, f"Track {i}", 120.0, "bench", now)
                  for i in ids]
        for k, i in enumerate(ids):
            term_array = np.asarray(terms[k], dtype=np.int64)
            pairs.append((term_array << 32) | int(i))
        if postgres:
            _copy_rows(store, rows_r, rows_f, rows_o)
        else:
            with store.backend.transaction() as db:
                db.executemany("INSERT INTO recordings (id, contributors, updated_at, observations, derived_observations) "
                               "VALUES (?, ?, ?, ?, ?)", rows_r)
                db.executemany("INSERT INTO fingerprints (id, recording, items, terms, duration) VALUES (?, ?, ?, ?, ?)", rows_f)
                db.executemany("INSERT INTO observations (id, contributor, recording, fingerprint, fingerprint_duration, "
                               "title, bpm, analyzer_version, received_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", rows_o)
        print(f"\r  {chunk_start + n}/{count} fingerprints", end="", file=sys.stderr, flush=True)
    with store.backend.transaction() as db:  # fingerprint ids come from a counter (Store._new_fingerprint)
        db.execute("UPDATE counters SET value = (SELECT MAX(id) FROM fingerprints) WHERE counter = 'fingerprint'")
        db.execute("UPDATE counters SET value = (SELECT MAX(id) FROM recordings) WHERE counter = 'recording'")
    print(" ... index terms", end="", file=sys.stderr, flush=True)
    packed = np.sort(np.concatenate(pairs))
    if postgres:
        _copy_terms(store, packed, fresh_index)
    else:
        with store.backend.transaction() as db:
            db.executemany("INSERT INTO fingerprint_terms VALUES (?, ?)",
                           ((int(v) >> 32, int(v) & 0xFFFFFFFF) for v in packed))
    print(" done", file=sys.stderr)
    return sample


def _copy_rows(store: Store, recordings, fingerprints, observations) -> None:
    with store.backend.transaction() as db:
        cursor = db._connection.cursor()
        for table, columns, rows in (
            ("recordings", "id, contributors, updated_at, observations, derived_observations", recordings),
            ("fingerprints", "id, recording, items, terms, duration", fingerprints),
            ("observations", "id, contributor, recording, fingerprint, fingerprint_duration, title, bpm, "
                             "analyzer_version, received_at", observations),
        ):
            with cursor.copy(f"COPY {table} ({columns}) FROM STDIN") as copy:
                for row in rows:
                    copy.write_row(row)


def _copy_terms(store: Store, packed: np.ndarray, fresh_index: bool) -> None:
    """(term, fingerprint) rows in PostgreSQL's binary COPY format, built by numpy; into a table
    without its primary key when it is empty (the key is then built once, by sorting)."""
    rows = np.empty(len(packed), dtype=[("fields", ">i2"), ("l1", ">i4"), ("term", ">i4"), ("l2", ">i4"), ("fp", ">i8")])
    rows["fields"], rows["l1"], rows["l2"] = 2, 4, 8
    rows["term"], rows["fp"] = packed >> 32, packed & 0xFFFFFFFF
    with store.backend.transaction() as db:
        if fresh_index:
            db.execute("ALTER TABLE fingerprint_terms DROP CONSTRAINT fingerprint_terms_pkey")
        with db._connection.cursor().copy("COPY fingerprint_terms (term, fingerprint) FROM STDIN WITH (FORMAT BINARY)") as copy:
            copy.write(b"PGCOPY\n\xff\r\n\x00" + struct.pack(">ii", 0, 0))
            step = 5_000_000
            for start_row in range(0, len(rows), step):
                copy.write(rows[start_row:start_row + step].tobytes())
            copy.write(struct.pack(">h", -1))
        if fresh_index:
            db.execute("SET maintenance_work_mem = '2GB'")
            db.execute("ALTER TABLE fingerprint_terms ADD PRIMARY KEY (term, fingerprint)")
    with store.backend.transaction() as db:
        db.execute("ANALYZE")


def noisy(rng: random.Random, items: list[int], bit_error_rate: float = 0.03, shift: int = 0) -> list[int]:
    out = []
    for item in items[shift:]:
        for bit in range(32):
            if rng.random() < bit_error_rate:
                item ^= 1 << bit
        out.append(item)
    return out


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def lookups(store: Store, sample: list[list[int]], rng: random.Random) -> dict:
    queries = [(noisy(rng, items, shift=rng.randrange(0, 40)), DURATION - 2, True) for items in sample]
    queries += [(random_fingerprint(rng), DURATION, False) for _ in sample]
    rng.shuffle(queries)
    store.lookup([(queries[0][0], queries[0][1])])  # warm the connection
    result: dict = {}
    # twice: first as the queries come (their index pages mostly not in memory: a catalog just
    # started), then again (a catalog whose index the page cache holds, as a running one's does)
    for suffix in ("", "_again"):
        times, cpu, found, false_hits = [], [], 0, 0
        for items, duration, known in queries:
            started, started_cpu = time.perf_counter(), time.thread_time()
            [answer] = store.lookup([(items, duration)])
            times.append(time.perf_counter() - started)
            cpu.append(time.thread_time() - started_cpu)  # this process's part (SQLite: all of it)
            if known:
                found += answer is not None
            else:
                false_hits += answer is not None
        result.update({f"p50_ms{suffix}": 1000 * percentile(times, 0.5), f"p99_ms{suffix}": 1000 * percentile(times, 0.99),
                       f"cpu_p50_ms{suffix}": 1000 * percentile(cpu, 0.5), f"cpu_p99_ms{suffix}": 1000 * percentile(cpu, 0.99),
                       "found": f"{found}/{len(sample)}", "false_hits": f"{false_hits}/{len(sample)}"})
    return result


async def ingest_rate(store: Store, count: int, rng: random.Random) -> float:
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
                        "fingerprint": {"chromaprint": chromaprint.encode_fingerprint(items, 1).decode(), "duration": DURATION},
                        "metadata": {"artist": "Bench", "title": f"T{rng.random()}"},
                        "analysis": {"analyzer_version": "bench", "bpm": 120.0, "key": "A minor", "camelot": "8A"},
                    })
                bodies.append(gzip.compress(json.dumps({"observations": observations}).encode()))
            started = time.perf_counter()
            for body in bodies:
                async with session.post(url + "/v1/observations", data=body, headers=headers) as response:
                    assert response.status == 200, await response.text()
            seconds = time.perf_counter() - started
        return count / seconds
    finally:
        await runner.cleanup()


class HeavyLock:
    """A shared machine's heavy-job lock file (flock): shared while filling, exclusive while timing."""

    def __init__(self, path: Path | None, wait: float) -> None:
        self._file = open(path, "a") if path else None
        self.wait = wait
        self.was_exclusive = True  # every timed part ran alone

    @contextlib.contextmanager
    def hold(self, exclusive: bool):
        """Shared, or exclusive; waits at most ``wait`` seconds for exclusive (shared holders may
        keep coming: flock lets readers overtake a waiting writer), then goes on shared and
        says so in the results."""
        if self._file is None:
            yield
            return
        if exclusive:
            deadline = time.monotonic() + self.wait
            while True:
                try:
                    fcntl.flock(self._file, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() > deadline:
                        print("  (the exclusive lock did not come: timing beside other jobs)", file=sys.stderr)
                        self.was_exclusive = False
                        fcntl.flock(self._file, fcntl.LOCK_SH)
                        break
                    time.sleep(0.5)
        else:
            fcntl.flock(self._file, fcntl.LOCK_SH)
        try:
            yield
        finally:
            fcntl.flock(self._file, fcntl.LOCK_UN)


def vacuum(store: Store) -> None:
    """What autovacuum does to a table soon after a bulk load (visibility map: index-only scans)."""
    if store.backend.name == "postgresql":
        with store.backend._pool.connection() as connection:  # outside a transaction, as VACUUM must be
            connection.execute("VACUUM ANALYZE")


def run_backend(name: str, target, args, lock: HeavyLock) -> dict:
    rng = random.Random(1)
    store = Store(target)
    try:
        result = {"backend": name}
        contributor, _ = store.register()
        if (args.reuse_sqlite and name == "sqlite") or (args.reuse_postgres and name == "postgresql"):
            # an index a previous run built (the look-ups only: a 1M fill takes 10 min or more)
            with store.backend.reading() as db:
                sample = [matching.unpack(row[0]) for row in db.execute(
                    "SELECT items FROM fingerprints ORDER BY id LIMIT 200").fetchall()]
            result["bytes_per_fingerprint"] = store.size() / store.counts()["fingerprints"]
            with lock.hold(exclusive=True):
                result.update(lookups(store, sample[:args.lookups], rng))
        elif args.index:
            with lock.hold(exclusive=False):
                started = time.perf_counter()
                sample = fill(store, args.index, contributor, seed=1, fresh_index=True)
                result["index_build_s"] = time.perf_counter() - started
                vacuum(store)
                result["bytes_per_fingerprint"] = store.size() / store.counts()["fingerprints"]
            with lock.hold(exclusive=True):
                result.update(lookups(store, sample[:args.lookups], rng))
        if args.ingest:
            with lock.hold(exclusive=True):
                result["ingest_obs_per_s"] = asyncio.run(ingest_rate(store, args.ingest, rng))
        if args.delete:
            with lock.hold(exclusive=False):
                leaving, _ = store.register()
                fill(store, args.delete, leaving, seed=2, fresh_index=not args.index)
                vacuum(store)
            with lock.hold(exclusive=True):
                started, cpu = time.perf_counter(), time.process_time()
                deleted = store.delete_contributor_observations(leaving)
                result["delete_s"] = time.perf_counter() - started
                result["delete_cpu_s"] = time.process_time() - cpu
            assert deleted == args.delete, deleted
            with lock.hold(exclusive=False):  # background work: not timed against a target
                started = time.perf_counter()
                while store.sweep():
                    pass
                result["sweep_s"] = time.perf_counter() - started
        return result
    finally:
        store.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backend", choices=("both", "sqlite", "postgresql"), default="both")
    parser.add_argument("--index", type=int, default=1_000_000)
    parser.add_argument("--lookups", type=int, default=200)
    parser.add_argument("--delete", type=int, default=50_000)
    parser.add_argument("--ingest", type=int, default=2_000)
    parser.add_argument("--folder", type=Path, help="where the databases go (default: a temporary folder)")
    parser.add_argument("--postgres-url", help="an existing, empty PostgreSQL database (default: a throwaway server)")
    parser.add_argument("--lock", type=Path, help="a heavy-job lock file: shared while filling, exclusive while timing")
    parser.add_argument("--lock-wait", type=float, default=600, help="seconds to wait for the exclusive lock")
    parser.add_argument("--reuse-sqlite", type=Path, help="a SQLite catalog an earlier run filled (kept)")
    parser.add_argument("--reuse-postgres", metavar="URL",
                        help="a PostgreSQL catalog an earlier run filled (its database URL; kept)")
    args = parser.parse_args()
    lock = HeavyLock(args.lock, args.lock_wait)
    results = []
    with tempfile.TemporaryDirectory(prefix="cratesense-catalog-bench-", dir=args.folder) as temp:
        if args.backend in ("both", "sqlite"):
            results.append(run_backend("sqlite", args.reuse_sqlite or Path(temp) / "catalog.sqlite", args, lock))
            print(json.dumps(results[-1]), flush=True)
        if args.backend in ("both", "postgresql"):
            server = None
            url = args.reuse_postgres or args.postgres_url
            if url is None:
                from pgserver import PostgresServer

                server = PostgresServer(fsync=True, settings={"shared_buffers": "1GB", "max_wal_size": "8GB"}).start()
                url = server.new_database("bench")
            try:
                results.append(run_backend("postgresql", url, args, lock))
            finally:
                if server:
                    server.stop()
            print(json.dumps(results[-1]), flush=True)
    columns = ("backend", "index_build_s", "p50_ms", "p99_ms", "p50_ms_again", "p99_ms_again", "cpu_p50_ms", "cpu_p99_ms",
               "found", "false_hits",
               "bytes_per_fingerprint", "ingest_obs_per_s", "delete_s", "sweep_s")
    print(f"timed parts alone on the machine (exclusive lock): {lock.was_exclusive}")
    print("| " + " | ".join(columns) + " |")
    print("|" + "---|" * len(columns))
    for result in results:
        print("| " + " | ".join(_cell(result.get(c, "-")) for c in columns) + " |")
    return 0


def _cell(value) -> str:
    return f"{value:.1f}" if isinstance(value, float) and value < 1000 else (f"{value:.0f}" if isinstance(value, float) else str(value))


if __name__ == "__main__":
    sys.exit(main())
