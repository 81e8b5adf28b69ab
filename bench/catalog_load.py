"""Catalog under load (issue #9): N concurrent agents syncing and looking up, over loopback.

    python bench/catalog_load.py [--agents 200] [--batches 5] [--batch-size 20] [--spread 0]

The catalog runs as its own process (`cratesense catalog serve`), as it would in production;
each agent registers, sends its batches (gzip'd, overlapping recordings with other agents) and
looks up what it sent. Reports throughput, p50/p99 per request kind, errors (target: no 5xx, no
lost observation, ingest p99 under 200 ms on this machine's 2 cores).

With every agent sending back to back (the default), requests queue at the one event loop and
a request's latency is about (agents in flight) x (time per request); ``--spread`` lets agents
arrive over a window instead, as syncs spread over their interval do.
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import json
import random
import secrets
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import aiohttp
import chromaprint

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from catalogkit import random_fingerprint  # noqa: E402


def percentile(values, share):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))] if ordered else float("nan")


async def one_agent(session, url, recordings, args, timings, errors, sent):
    await asyncio.sleep(random.uniform(0, args.spread))  # 0: every agent at once (saturation)
    async with session.post(url + "/v1/contributors") as response:
        token = (await response.json())["token"]
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    rng = random.Random()
    for _ in range(args.batches):
        chosen = rng.sample(recordings, args.batch_size)
        observations = [{
            "id": secrets.token_hex(16),
            "fingerprint": {"chromaprint": fp, "duration": 180.0},
            "metadata": {"artist": "Load", "title": title},
            "analysis": {"analyzer_version": "bench", "bpm": 120.0},
        } for fp, title in chosen]
        body = gzip.compress(json.dumps({"observations": observations}).encode())
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


async def main_async(args, url, db_path):
    rng = random.Random(3)
    recordings = [(chromaprint.encode_fingerprint(random_fingerprint(rng), 1).decode(), f"Song {i}")
                  for i in range(args.recordings)]
    timings, errors, sent = defaultdict(list), defaultdict(int), set()
    connector = aiohttp.TCPConnector(limit=args.agents)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=300)) as session:
        started = time.perf_counter()
        await asyncio.gather(*(one_agent(session, url, recordings, args, timings, errors, sent)
                               for _ in range(args.agents)))
        seconds = time.perf_counter() - started
    # under load the catalog answers before matching: wait until every accepted batch is matched
    drain_started = time.perf_counter()
    while True:
        with sqlite3.connect(db_path) as db:
            waiting = db.execute("SELECT COUNT(*) FROM arrivals").fetchone()[0]
        if waiting == 0 or time.perf_counter() - drain_started > 900:
            break
        await asyncio.sleep(0.5)
    drained = time.perf_counter() - drain_started
    with sqlite3.connect(db_path) as db:
        stored = {oid for (oid,) in db.execute("SELECT id FROM observations")}
        recording_count = db.execute("SELECT COUNT(*) FROM recordings").fetchone()[0]
    requests = sum(len(v) for v in timings.values())
    print(f"{args.agents} agents: {requests} requests in {seconds:.1f} s ({requests / seconds:.0f} req/s, "
          f"{len(sent) / seconds:.0f} observations/s)")
    for kind, values in timings.items():
        print(f"  {kind}: p50 {1000 * percentile(values, 0.5):.0f} ms, p99 {1000 * percentile(values, 0.99):.0f} ms")
    print(f"  errors: {dict(errors) or 'none'}; 5xx: {sum(v for k, v in errors.items() if k >= 500)}")
    print(f"  matching finished {drained:.1f} s after the last answer ({waiting} still waiting); "
          f"{len(stored) / (seconds + drained):.0f} observations/s matched end to end")
    print(f"  acknowledged {len(sent)}, stored {len(stored)}, lost {len(sent - stored)}; "
          f"{recording_count} recordings from {args.recordings} distinct fingerprints")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--agents", type=int, default=200)
    parser.add_argument("--batches", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=20)
    parser.add_argument("--recordings", type=int, default=400)
    parser.add_argument("--spread", type=float, default=0.0,
                        help="agents start at random moments over this many seconds (default 0: all at once)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="cratesense-load-") as temp:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        db_path = Path(temp) / "catalog.sqlite"
        server = subprocess.Popen([sys.executable, "-m", "cratesense", "catalog", "serve", "--port", str(port),
                                   "--db", str(db_path)], stderr=subprocess.DEVNULL)
        try:
            time.sleep(2)
            asyncio.run(main_async(args, f"http://127.0.0.1:{port}", db_path))
        finally:
            server.terminate()
            server.wait(timeout=10)
    return 0


if __name__ == "__main__":
    sys.exit(main())
