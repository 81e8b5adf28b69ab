"""Several catalog worker processes over one PostgreSQL database (`catalog serve --workers 2`):
real processes, a real port shared with SO_REUSEPORT (or one inherited socket), real races."""

from __future__ import annotations

import asyncio
import os
import random
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
import chromaprint
import pytest

from catalogkit import Client, observation, query, random_fingerprint
from cratesense.catalog.store import Store


class Workers:
    """`cratesense catalog serve --workers N` as a process, its log in a file."""

    def __init__(self, url: str, log: Path, workers: int = 2, sharing: str | None = None) -> None:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.log_path = log
        self.url = f"http://127.0.0.1:{self.port}"
        if sharing is None:
            command = [sys.executable, "-m", "cratesense", "catalog", "serve", "--port", str(self.port), "--db", url,
                       "--workers", str(workers)]
        else:  # the other way to share the port, through the same function the command calls
            command = [sys.executable, "-c", "import logging, sys; from cratesense.catalog.service import serve; "
                       "logging.basicConfig(); logging.getLogger('cratesense').setLevel(logging.INFO); "
                       f"sys.exit(serve({url!r}, '127.0.0.1', {self.port}, {workers}, socket_sharing={sharing!r}))"]
        self._log = open(log, "w")
        self.process = subprocess.Popen(command, stderr=self._log, stdout=self._log, cwd="/")
        self.wait_for(lambda text: len(re.findall(r"worker \d .*catalog listening", text)) >= workers,
                      "every worker to listen")

    def text(self) -> str:
        return self.log_path.read_text()

    def wait_for(self, condition, what: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while not condition(self.text()):
            assert self.process.poll() is None, f"the catalog exited: {self.text()[-2000:]}"
            assert time.monotonic() < deadline, f"timed out waiting for {what}: {self.text()[-2000:]}"
            time.sleep(0.05)

    def pids(self) -> dict[int, int]:
        """worker number -> pid of its latest start."""
        return {int(n): int(pid) for n, pid in re.findall(r"worker (\d+) started \(pid (\d+)\)", self.text())}

    def served_by(self, route: str) -> set[str]:
        return set(re.findall(rf"worker (\d+) cratesense\.catalog\.access: {re.escape(route)}", self.text()))

    def stop(self) -> None:
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=30)
        finally:
            self._log.close()


@pytest.fixture
def database(postgres):
    url = postgres.new_database()
    Store(url).close()  # migrated before the workers start (they would too, one at a time)
    return url


@pytest.fixture
def workers(database, tmp_path):
    server = Workers(database, tmp_path / "catalog.log")
    yield server
    server.stop()


def fingerprint(rng: random.Random) -> list[int]:
    return random_fingerprint(rng)


def encode(items: list[int]) -> tuple[str, float]:
    return chromaprint.encode_fingerprint(items, 1).decode(), 180.0


def another_encode(items: list[int]) -> list[int]:
    """The same recording as a different encode: 3 low bits of every item differ (score 0.81:
    a new fingerprint attached to the same recording, not the same fingerprint; the index
    terms, the top 28 bits, are the same)."""
    return [item ^ 0b111 for item in items]


async def fresh_client(url: str) -> tuple[Client, aiohttp.ClientSession]:
    """A client on its own connection (so the kernel may give it to any worker)."""
    session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True))
    return await Client(session, url).register(), session


def invariants(store: Store) -> None:
    """What a consistent catalog never breaks: nothing points at nothing, nothing is kept that
    no observation holds, and each recording counts its contributors right."""
    assert query(store, "SELECT COUNT(*) FROM observations o WHERE NOT EXISTS "
                        "(SELECT 1 FROM recordings r WHERE r.id = o.recording)") == [(0,)]
    assert query(store, "SELECT COUNT(*) FROM observations o WHERE NOT EXISTS "
                        "(SELECT 1 FROM fingerprints f WHERE f.id = o.fingerprint AND f.recording = o.recording)") == [(0,)]
    assert query(store, "SELECT COUNT(*) FROM recordings r WHERE NOT EXISTS "
                        "(SELECT 1 FROM observations o WHERE o.recording = r.id)") == [(0,)]
    assert query(store, "SELECT COUNT(*) FROM fingerprints f WHERE NOT EXISTS "
                        "(SELECT 1 FROM observations o WHERE o.fingerprint = f.id)") == [(0,)]
    assert query(store, "SELECT COUNT(*) FROM fingerprint_terms t WHERE NOT EXISTS "
                        "(SELECT 1 FROM fingerprints f WHERE f.id = t.fingerprint)") == [(0,)]
    assert query(store, "SELECT COUNT(*) FROM recordings r WHERE contributors != "
                        "(SELECT COUNT(DISTINCT contributor) FROM observations o WHERE o.recording = r.id)") == [(0,)]


async def drained(store: Store, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while store.waiting():
        assert time.monotonic() < deadline, f"{store.waiting()} arrivals still waiting"
        await asyncio.sleep(0.1)


def test_workers_are_refused_on_sqlite(tmp_path):
    result = subprocess.run([sys.executable, "-m", "cratesense", "catalog", "serve", "--db", str(tmp_path / "c.sqlite"),
                             "--workers", "2"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "cratesense: --workers 2 needs a PostgreSQL database (--db postgresql://...): "
        "a SQLite file has one writer, so one process serves it"]


def test_an_unreachable_database_is_one_line(tmp_path):
    result = subprocess.run([sys.executable, "-m", "cratesense", "catalog", "serve", "--workers", "2", "--db",
                             f"postgresql://nobody@/none?host={tmp_path}&port=1"], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1
    assert "cannot connect to PostgreSQL" in result.stderr


async def test_the_same_track_from_two_contributors_at_two_workers_is_one_recording(workers, database):
    """Two contributors send the same recording (different encodes) at the same moment, each
    on its own connection; over many pairs, both workers match at once. Each pair must end in
    one recording: matching looks again, under the cluster-wide lock, at what was stored since
    it scored its candidates."""
    rng = random.Random(16)
    tracks = [fingerprint(rng) for _ in range(24)]
    clients = [await fresh_client(workers.url) for _ in range(2)]
    try:
        for items in tracks:
            first = observation(encode(items), title="Same")
            second = observation(encode(another_encode(items)), title="Same")
            answers = await asyncio.gather(clients[0][0].ingest([first]), clients[1][0].ingest([second]))
            assert all(status == 200 and body["accepted"] == 1 for status, body in answers), answers
    finally:
        for _, session in clients:
            await session.close()
    store = Store(database)
    try:
        await drained(store)
        assert workers.served_by("POST /v1/observations 200") == {"1", "2"}  # both took part
        counts = store.counts()
        assert counts["observations"] == 48 and counts["recordings"] == 24 and counts["fingerprints"] == 48
        invariants(store)
    finally:
        store.close()


async def test_a_deletion_racing_an_ingest_leaves_no_orphan(workers, database):
    """Alice erases herself while Bob, at the other worker, sends encodes of the recordings only
    Alice holds (they would attach to recordings the erasure drops). Whichever wins, nothing is
    left pointing at nothing, and everything Bob was told is stored is there."""
    rng = random.Random(7)
    for _ in range(3):
        alice, alice_session = await fresh_client(workers.url)
        bob, bob_session = await fresh_client(workers.url)
        try:
            tracks = [fingerprint(rng) for _ in range(20)]
            status, body = await alice.ingest([observation(encode(items), title="A") for items in tracks])
            assert status == 200 and body["accepted"] == 20
            bobs = [observation(encode(another_encode(items)), title="B") for items in tracks]
            (deleted_status, deleted), *answers = await asyncio.gather(
                alice.call("DELETE", "/v1/contributors/me/observations"),
                *(bob.ingest(bobs[i:i + 2]) for i in range(0, 20, 2)))
            assert deleted_status == 200 and deleted == {"deleted": 20}
            assert all(status == 200 for status, _ in answers)
            acknowledged = {r["id"] for _, body in answers for r in body["results"] if r["status"] == "accepted"}
        finally:
            await alice_session.close()
            await bob_session.close()
        store = Store(database)
        try:
            await drained(store)
            invariants(store)
            held = {oid for (oid,) in query(store, "SELECT id FROM observations")}
            assert acknowledged <= held and len(acknowledged) == 20
            assert query(store, "SELECT COUNT(*) FROM observations WHERE contributor = ?", (alice.id,)) == [(0,)]
        finally:
            store.close()
    assert len(workers.served_by("DELETE /v1/contributors/me/observations 200")) >= 1


async def test_a_worker_killed_mid_batch_loses_nothing_acknowledged(workers, database):
    """Agents keep sending while worker 1 is killed with SIGKILL mid-stream: what any worker
    acknowledged is in the catalog once matching settles (arrivals a dead worker had claimed
    are taken over when its claim runs out), and the supervisor starts the worker again."""
    rng = random.Random(9)
    acknowledged: set[str] = set()
    stop = asyncio.Event()

    async def agent() -> None:
        client, session = await fresh_client(workers.url)
        try:
            while not stop.is_set():
                batch = [observation(encode(fingerprint(rng))) for _ in range(10)]
                try:
                    status, body = await client.ingest(batch)
                except (TimeoutError, aiohttp.ClientError):
                    continue  # the connection died with the worker: the agent sends again later
                if status == 200:
                    acknowledged.update(r["id"] for r in body["results"] if r["status"] in ("accepted", "duplicate"))
        finally:
            await session.close()

    agents = [asyncio.create_task(agent()) for _ in range(8)]
    deadline = time.monotonic() + 60
    while len(acknowledged) < 200:
        assert time.monotonic() < deadline
        await asyncio.sleep(0.05)
    victim = workers.pids()[1]
    os.kill(victim, signal.SIGKILL)
    while not re.search(r"worker 1 \(pid \d+\) exited with status -9; starting it again", workers.text()):
        assert time.monotonic() < deadline + 60, workers.text()[-2000:]
        await asyncio.sleep(0.05)
    after = len(acknowledged)
    while len(acknowledged) < after + 100:
        assert time.monotonic() < deadline + 60
        await asyncio.sleep(0.05)
    stop.set()
    await asyncio.gather(*agents)
    assert workers.pids()[1] != victim
    store = Store(database)
    try:
        await drained(store, timeout=120)
        held = {oid for (oid,) in query(store, "SELECT id FROM observations")}
        assert acknowledged <= held, f"{len(acknowledged - held)} acknowledged observations lost"
        invariants(store)
    finally:
        store.close()


async def guesses(url: str, count: int) -> list[int]:
    """Statuses of ``count`` requests with unknown tokens, each on a connection of its own."""
    statuses = []
    for _ in range(count):
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as session:
            async with session.get(url + "/v1/recommendations", headers={"Authorization": "Bearer guessed"}) as response:
                statuses.append(response.status)
    return statuses


async def test_rate_limits_are_one_budget_for_every_worker(workers):
    """Token guesses are limited per address (10 per burst) whichever worker answers: the
    buckets are in the database, not in each process. 20 connections: both workers answer
    some (a 1 in 500,000 chance that the kernel gives all of them to one)."""
    statuses = await guesses(workers.url, 20)
    assert statuses[:10] == [401] * 10 and statuses[10:] == [429] * 10
    assert {n for route in ("GET /v1/recommendations 401", "GET /v1/recommendations 429")
            for n in workers.served_by(route)} == {"1", "2"}


async def test_one_inherited_socket_serves_too(database, tmp_path):
    """Where the OS has no SO_REUSEPORT balancing, the workers accept from one socket the
    supervisor bound (which worker accepts is up to the OS: not asserted)."""
    server = Workers(database, tmp_path / "catalog.log", sharing="inherited")
    try:
        assert "one shared socket" in server.text()
        statuses = await guesses(server.url, 12)
        assert statuses[:10] == [401] * 10 and statuses[-1] == 429
        assert server.served_by("GET /v1/recommendations 401")
    finally:
        server.stop()
