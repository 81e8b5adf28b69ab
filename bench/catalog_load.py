"""Catalog under load (issues #9, #16): N concurrent agents syncing and looking up, over loopback.

    python bench/catalog_load.py [--agents 200] [--batches 5] [--batch-size 20] [--spread 0]
                                 [--configs sqlite:1,postgresql:2]

Each configuration (backend:workers) runs in turn, in the same run: by default SQLite with one
process and PostgreSQL (a throwaway server with fsync on: tests/pgserver.py) with two workers.
The catalog runs as its own process (`cratesense catalog serve`), as it would in production;
each agent registers, sends its batches (gzip'd, overlapping recordings with other agents) and
looks up what it sent. Reports p50/p99 per request kind, errors (target: no 5xx, no lost
observation, ingest and look-up p99 under 200 ms on this machine's 2 cores), observations/s
answered and matched end to end, and the CPU time of the catalog's processes and (PostgreSQL) of
the database server.

With every agent sending back to back (the default), requests queue at the catalog and a
request's latency is about (agents in flight) x (time per request); ``--spread`` lets agents
arrive over a window instead, as syncs spread over their interval do. The load generator
shares the machine's 2 cores with the catalog and the database.
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import json
import os
import random
import secrets
import socket
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import aiohttp
import chromaprint

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from catalogkit import query, random_fingerprint
from cratesense.catalog.store import Store


def percentile(values, share):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))] if ordered else float("nan")


def batch(recordings, args, rng) -> tuple[list, bytes]:
    """One batch an agent sends: the recordings chosen and the gzip'd body."""
    chosen = rng.sample(recordings, args.batch_size)
    observations = [{
        "id": secrets.token_hex(16),
        "fingerprint": {"chromaprint": fp, "duration": 180.0},
        "metadata": {"artist": "Load", "title": title},
        "analysis": {"analyzer_version": "bench", "bpm": 120.0},
    } for fp, title in chosen]
    return chosen, gzip.compress(json.dumps({"observations": observations}).encode())


async def one_agent(session, url, recordings, args, timings, errors, sent, prebuilt=None):
    await asyncio.sleep(random.uniform(0, args.spread))  # 0: every agent at once (saturation)
    async with session.post(url + "/v1/contributors") as response:
        token = (await response.json())["token"]
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    rng = random.Random()
    for number in range(args.batches):
        chosen, body = prebuilt[number] if prebuilt else batch(recordings, args, rng)
        started = time.perf_counter()
        async with session.post(url + "/v1/observations", data=body,
                                headers={**headers, "Content-Encoding": "gzip"}) as response:
            answer = await response.json(content_type=None)
            timings["ingest"].append(time.perf_counter() - started)
            if response.status != 200:
                errors[response.status] += 1
                continue
            sent.update(r["id"] for r in answer["results"] if r["status"] in ("accepted", "duplicate"))
        started = time.perf_counter()
        query = {"fingerprints": [{"chromaprint": fp, "duration": 180.0} for fp, _ in chosen[:5]]}
        async with session.post(url + "/v1/lookup", json=query, headers=headers) as response:
            await response.read()
            timings["lookup"].append(time.perf_counter() - started)
            if response.status != 200:
                errors[response.status] += 1


async def main_async(args, url, target) -> dict:
    rng = random.Random(3)
    recordings = [(chromaprint.encode_fingerprint(random_fingerprint(rng), 1).decode(), f"Song {i}")
                  for i in range(args.recordings)]
    timings, errors, sent = defaultdict(list), defaultdict(int), set()
    # --prebuilt: every body built before the clock starts (the generator's own JSON and gzip
    # work, ~5 ms a batch on one core, then no longer shares the burst with the catalog)
    prebuilt = [[batch(recordings, args, rng) for _ in range(args.batches)] for _ in range(args.agents)] \
        if args.prebuilt else [None] * args.agents
    connector = aiohttp.TCPConnector(limit=args.agents)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=300)) as session:
        started = time.perf_counter()
        await asyncio.gather(*(one_agent(session, url, recordings, args, timings, errors, sent, bodies)
                               for bodies in prebuilt))
        seconds = time.perf_counter() - started
    # under load the catalog answers before matching: wait until every accepted batch is matched
    store = Store(target)
    try:
        drain_started = time.perf_counter()
        while True:
            waiting = store.waiting()
            if waiting == 0 or time.perf_counter() - drain_started > 900:
                break
            await asyncio.sleep(0.2)
        drained = time.perf_counter() - drain_started
        stored = {oid for (oid,) in query(store, "SELECT id FROM observations")}
        recording_count = store.counts()["recordings"]
    finally:
        store.close()
    result = {"requests": sum(len(v) for v in timings.values()), "seconds": seconds, "acknowledged": len(sent),
              "stored": len(stored), "lost": len(sent - stored), "waiting": waiting, "drain_s": drained,
              "recordings": recording_count, "matched_obs_per_s": len(stored) / (seconds + drained),
              "answered_obs_per_s": len(sent) / seconds, "5xx": sum(v for k, v in errors.items() if k >= 500),
              "errors": dict(errors)}
    for kind, values in timings.items():
        result[f"{kind}_p50_ms"] = 1000 * percentile(values, 0.5)
        result[f"{kind}_p99_ms"] = 1000 * percentile(values, 0.99)
    return result


def cpu_seconds(pid: int) -> float:
    """CPU time (user + system) of a process and of the workers it started, from /proc."""
    total, ticks = 0.0, os.sysconf("SC_CLK_TCK")
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(entry) == pid or int(fields[1]) == pid:
            total += (int(fields[11]) + int(fields[12])) / ticks
    return total


def server_cpu_seconds(postmaster: int) -> float:
    """CPU time of a PostgreSQL server: the postmaster, its live backends, and the backends
    that have exited (the postmaster's reaped children)."""
    with open(f"/proc/{postmaster}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    reaped = (int(fields[13]) + int(fields[14])) / os.sysconf("SC_CLK_TCK")
    return cpu_seconds(postmaster) + reaped


def run_config(args, backend: str, workers: int, target, checkout: Path | None = None,
               postmaster: int | None = None) -> dict:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {**os.environ, "PYTHONPATH": str(checkout)} if checkout else None
    server = subprocess.Popen([sys.executable, "-m", "cratesense", "catalog", "serve", "--port", str(port),
                               "--db", str(target), "--workers", str(workers)], stderr=subprocess.DEVNULL, env=env,
                              cwd="/")
    try:
        for _ in range(600):  # until it answers
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    break
            except OSError:
                time.sleep(0.1)
        time.sleep(2.0)  # every worker listening (each starts in its own interpreter)
        database_before = server_cpu_seconds(postmaster) if postmaster else None
        result = asyncio.run(main_async(args, f"http://127.0.0.1:{port}", target))
        result["catalog_cpu_s"] = cpu_seconds(server.pid)
        # the database's CPU for the burst and its drain (the bench's own few reads included)
        result["database_cpu_s"] = server_cpu_seconds(postmaster) - database_before if postmaster else None
    finally:
        server.terminate()
        server.wait(timeout=30)
    return {"config": f"{backend} x{workers}" + (f" ({checkout.name})" if checkout else ""), **result}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--agents", type=int, default=200)
    parser.add_argument("--batches", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=20)
    parser.add_argument("--recordings", type=int, default=400)
    parser.add_argument("--spread", type=float, default=0.0,
                        help="agents start at random moments over this many seconds (default 0: all at once)")
    parser.add_argument("--prebuilt", action="store_true",
                        help="build every agent's bodies before the clock starts (the generator's CPU out of the burst)")
    parser.add_argument("--configs", default="sqlite:1,postgresql:2",
                        help="backend:workers, comma-separated (default: sqlite:1,postgresql:2)")
    parser.add_argument("--against", type=Path, help="another checkout (e.g. main before #28), run first in the same run")
    parser.add_argument("--against-configs", default="sqlite:1,postgresql:2")
    args = parser.parse_args()
    configs = [(name, int(workers), None) for name, workers in (item.split(":") for item in args.configs.split(","))]
    if args.against:
        configs = [(name, int(workers), args.against)
                   for name, workers in (item.split(":") for item in args.against_configs.split(","))] + configs
    results, server = [], None
    try:
        with tempfile.TemporaryDirectory(prefix="cratesense-load-") as temp:
            for backend, workers, checkout in configs:
                if backend == "sqlite":
                    target = Path(temp) / f"catalog-{len(results)}.sqlite"
                else:
                    if server is None:
                        from pgserver import PostgresServer

                        server = PostgresServer(fsync=True).start()
                    target = server.new_database("load")
                postmaster = int((server.data / "postmaster.pid").read_text().split()[0]) if backend != "sqlite" else None
                results.append(run_config(args, backend, workers, target, checkout, postmaster))
                print(json.dumps(results[-1]), flush=True)
    finally:
        if server is not None:
            server.stop()
    columns = ("config", "ingest_p50_ms", "ingest_p99_ms", "lookup_p50_ms", "lookup_p99_ms", "5xx", "lost",
               "answered_obs_per_s", "matched_obs_per_s", "drain_s", "catalog_cpu_s", "database_cpu_s")
    print(f"{args.agents} agents x {args.batches} batches of {args.batch_size} (spread {args.spread:g} s"
          f"{', bodies prebuilt' if args.prebuilt else ''}):")
    print("| " + " | ".join(columns) + " |")
    print("|" + "---|" * len(columns))
    for result in results:
        print("| " + " | ".join(f"{result[c]:.0f}" if isinstance(result[c], float) else "–" if result[c] is None else str(result[c])
                                for c in columns) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
