"""Sync of a large outbox to a local catalog (issue #6): throughput and the process's peak RSS.

    python bench/sync.py [--observations 100000]

As in `cratesense run` with no configuration: the journal's outbox holds N observations (random
-walk fingerprints, 120 s each, all different recordings), the embedded catalog serves on a Unix
socket in the same process, and one ``Syncer`` sends everything in gzip'd batches. The reference
is the same process's RSS just before the sync starts.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import secrets
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
import chromaprint

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from catalogkit import random_fingerprint

from cratesense.catalog.server import start_unix
from cratesense.catalog.store import Store
from cratesense.daemon.identity import Identity
from cratesense.daemon.journal import FileIdentity, Journal, Observation
from cratesense.daemon.sync import Syncer
from trackkit import track_analysis


def memory(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return 0.0


def fill_outbox(journal: Journal, count: int) -> None:
    rng = random.Random(5)
    for index in range(count):
        payload = {
            "fingerprint": {"chromaprint": chromaprint.encode_fingerprint(random_fingerprint(rng), 1).decode(),
                            "duration": 180.0},
            "metadata": {"artist": "Bench", "title": f"Track {index}", "album": None, "isrc": None,
                         "catalog_number": None, "duration": 180.0},
            "analysis": {"analyzer_version": "bench", "bpm": 120.0, "key": "A minor", "camelot": "8A",
                         "loudness_lufs": -9.0, "embedding": None},
        }
        journal.record_analysis(f"/m/{index}.flac", FileIdentity(1, index, 1, 1), f"k{index}", track_analysis("bench"),
                                Observation(secrets.token_hex(16), payload))
        if index % 5000 == 0:
            print(f"\r  queued {index}/{count}", end="", file=sys.stderr, flush=True)
    print(file=sys.stderr)


async def sync(folder: Path) -> tuple[float, int]:
    store = Store(folder / "catalog.sqlite")
    socket_path = folder / "catalog.sock"
    runner = await start_unix(store, socket_path)
    try:
        with Journal(folder / "journal.sqlite") as journal:
            syncer = Syncer(journal, Identity(folder / "identity.json"), "http://embedded", label="embedded",
                            session_factory=lambda: aiohttp.ClientSession(connector=aiohttp.UnixConnector(path=str(socket_path))))
            loop = asyncio.create_task(syncer.run())
            started = time.perf_counter()
            while journal.counts()["outbox"]:
                await syncer.sync_now(timeout=3600)
            seconds = time.perf_counter() - started
            loop.cancel()
            return seconds, store.counts()["observations"]
    finally:
        await runner.cleanup()
        store.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--observations", type=int, default=100_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="cratesense-sync-bench-") as temp:
        folder = Path(temp)
        with Journal(folder / "journal.sqlite") as journal:
            fill_outbox(journal, args.observations)
        before = memory("VmRSS")
        seconds, stored = asyncio.run(sync(folder))
        print(f"synced {stored} of {args.observations} observations in {seconds:.0f} s: "
              f"{stored / seconds:.0f} observations/s (agent and embedded catalog in one process)")
        print(f"peak RSS {memory('VmHWM'):.0f} MB (before the sync: {before:.0f} MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
