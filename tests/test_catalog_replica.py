"""Reads that may lag from a streaming standby (`catalog serve --read-db URL`), and the faults
around it: a real primary and a real standby on this machine (pg_basebackup -R), a real
catalog process. A look-up is shown served by the standby (its replay paused, it does not yet
know what the primary knows); a standby that lags or stops sends reads to the primary, with a
log line; the primary restarting loses nothing acknowledged."""

from __future__ import annotations

import asyncio
import json
import random
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import aiohttp
import chromaprint
import pytest

from catalogkit import Client, observation, query, random_fingerprint
from cratesense.catalog.store import Store


@pytest.fixture(scope="module")
def primary():
    from pgserver import PostgresServer, binaries

    if binaries() is None:
        pytest.skip("PostgreSQL is not installed (scripts/setup.sh test installs it)")
    server = PostgresServer().start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def standby(primary):
    server = primary.standby()
    yield server
    server.stop()


class Catalog:
    """`cratesense catalog serve` as a process, its log in a file."""

    def __init__(self, log: Path, *arguments: str) -> None:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log
        self._log = open(log, "w")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "cratesense", "catalog", "serve", "--port", str(self.port), *arguments],
            stdout=self._log, stderr=self._log, cwd="/")
        self.wait_for(lambda: "catalog listening" in self.text() or "catalog serving" in self.text(), "listening")

    def text(self) -> str:
        return self.log_path.read_text()

    def wait_for(self, condition, what: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            assert self.process.poll() is None, f"the catalog exited: {self.text()[-3000:]}"
            assert time.monotonic() < deadline, f"timed out waiting for {what}: {self.text()[-3000:]}"
            time.sleep(0.05)

    def health(self) -> dict:
        try:
            with urllib.request.urlopen(self.url + "/health", timeout=10) as response:
                return json.loads(response.read())
        except urllib.error.HTTPError as error:
            return json.loads(error.read())

    def stop(self) -> None:
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=30)
        finally:
            self._log.close()


def encoded(items: list[int]) -> tuple[str, float]:
    return chromaprint.encode_fingerprint(items, 1).decode(), 180.0


async def look_up(client: Client, items: list[int]):
    status, body = await client.call("POST", "/v1/lookup", {"fingerprints": [
        {"chromaprint": encoded(items)[0], "duration": 180.0}]})
    assert status == 200, body
    return body["results"][0]


async def until(condition, what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not await condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.1)


def replay(standby, paused: bool) -> None:
    import psycopg

    with psycopg.connect(standby.url(), autocommit=True) as connection:
        connection.execute(f"SELECT pg_wal_replay_{'pause' if paused else 'resume'}()")


async def test_a_look_up_is_served_by_the_standby(primary, standby, tmp_path):
    """With the standby's replay paused (and a generous lag limit), a recording just stored at
    the primary is unknown to the look-up: the standby answered it. Once replay resumes, the
    standby knows it. Ingests, registration and authentication went to the primary meanwhile."""
    database = primary.new_database()
    Store(database).close()
    catalog = Catalog(tmp_path / "catalog.log", "--db", database, "--read-db", standby.url_of(database),
                      "--read-max-lag", "600")
    rng = random.Random(28)
    try:
        catalog.wait_for(lambda: catalog.health()["replica"]["state"] == "in use", "the standby in use")
        assert re.search(r"read replica \S+ is in use \(lag", catalog.text())
        async with aiohttp.ClientSession() as session:
            client = await Client(session, catalog.url).register()  # written at the primary
            known = random_fingerprint(rng)
            status, body = await client.ingest([observation(encoded(known), title="Known")])
            assert status == 200 and body["accepted"] == 1
            await until(lambda: _found(client, known), "the standby to replay the first recording")
            replay(standby, paused=True)
            try:
                fresh = random_fingerprint(rng)
                status, body = await client.ingest([observation(encoded(fresh), title="Fresh")])
                assert status == 200 and body["accepted"] == 1
                store = Store(database)
                try:  # the primary has it, matched
                    assert query(store, "SELECT COUNT(*) FROM recordings WHERE title = 'Fresh'") == [(1,)]
                finally:
                    store.close()
                assert await look_up(client, fresh) is None  # the standby has not replayed it
                assert (await look_up(client, known))["metadata"]["title"] == "Known"  # ... it does answer
                status, export = await client.call("GET", "/v1/contributors/me/export")
                assert status == 200 and [o["metadata"]["title"] for o in export["observations"]] == ["Known"]
            finally:
                replay(standby, paused=False)
            await until(lambda: _found(client, fresh), "the standby to replay the second recording")
        assert catalog.health()["replica"]["state"] == "in use"
    finally:
        catalog.stop()


async def _found(client: Client, items: list[int]) -> bool:
    return await look_up(client, items) is not None


async def test_a_lagging_or_stopped_standby_sends_reads_to_the_primary(primary, standby, tmp_path):
    """The standby falls behind (replay paused while the primary writes): past the lag limit
    reads go to the primary, which knows the new recording; the standby stops: reads still
    answered, from the primary; it starts again and is used again. Each change is one log line."""
    database = primary.new_database()
    Store(database).close()
    catalog = Catalog(tmp_path / "catalog.log", "--db", database, "--read-db", standby.url_of(database),
                      "--read-max-lag", "1")
    rng = random.Random(29)
    try:
        catalog.wait_for(lambda: catalog.health()["replica"]["state"] == "in use", "the standby in use")
        async with aiohttp.ClientSession() as session:
            client = await Client(session, catalog.url).register()
            replay(standby, paused=True)
            try:
                fresh = random_fingerprint(rng)
                status, body = await client.ingest([observation(encoded(fresh), title="Fresh")])
                assert status == 200 and body["accepted"] == 1
                catalog.wait_for(lambda: catalog.health()["replica"]["state"] == "lagging", "the standby lagging")
                assert re.search(r"read replica \S+ is lagging: [\d.]+ s behind the primary \(limit 1 s\); look-ups, "
                                 r"recommendations and exports go to the primary", catalog.text())
                hit = await look_up(client, fresh)  # the primary answered
                assert hit is not None and hit["metadata"]["title"] == "Fresh"
                assert catalog.health()["replica"]["lag_seconds"] > 1
            finally:
                replay(standby, paused=False)
            catalog.wait_for(lambda: catalog.health()["replica"]["state"] == "in use", "the standby in use again")
            assert "is in use again" in catalog.text()

            standby.pg_ctl("stop", "-m", "fast")
            try:
                catalog.wait_for(lambda: catalog.health()["replica"]["state"] == "unreachable", "the standby unreachable")
                assert re.search(r"read replica \S+ is unreachable: .*; look-ups, recommendations and exports go to "
                                 r"the primary", catalog.text())
                for _ in range(5):  # every read answered, none failed
                    assert (await look_up(client, fresh))["metadata"]["title"] == "Fresh"
                status, export = await client.call("GET", "/v1/contributors/me/export")
                assert status == 200 and len(export["observations"]) == 1
                status, _ = await client.call("GET", "/v1/recommendations")
                assert status == 200
            finally:
                standby.pg_ctl("start")
            catalog.wait_for(lambda: catalog.health()["replica"]["state"] == "in use", "the standby in use again",
                             timeout=120)
            assert (await look_up(client, fresh))["metadata"]["title"] == "Fresh"
        assert "Traceback" not in catalog.text()
    finally:
        catalog.stop()


async def test_the_primary_restarting_loses_nothing_acknowledged(primary, tmp_path):
    """Agents keep sending through two workers while the primary is stopped and started again:
    requests meanwhile are answered 503 with Retry-After (one log line says why, another when
    it is back), never a 500; everything acknowledged is stored once the catalog has settled."""
    database = primary.new_database()
    Store(database).close()
    catalog = Catalog(tmp_path / "catalog.log", "--db", database, "--workers", "2")
    catalog.wait_for(lambda: len(re.findall(r"worker \d .*catalog listening", catalog.text())) >= 2, "both workers")
    rng = random.Random(30)
    acknowledged: set[str] = set()
    statuses: dict[int, int] = {}
    stop = asyncio.Event()

    async def agent() -> None:
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as session:
            client = await Client(session, catalog.url).register()
            while not stop.is_set():
                batch = [observation(encoded(random_fingerprint(rng))) for _ in range(5)]
                try:
                    status, body = await client.ingest(batch)
                except (TimeoutError, aiohttp.ClientError):
                    continue
                statuses[status] = statuses.get(status, 0) + 1
                if status == 200:
                    acknowledged.update(r["id"] for r in body["results"] if r["status"] in ("accepted", "duplicate"))
                else:
                    await asyncio.sleep(0.2)

    try:
        agents = [asyncio.create_task(agent()) for _ in range(4)]
        await until(lambda: _at_least(acknowledged, 50), "the first acknowledgements")
        primary.pg_ctl("stop", "-m", "fast")
        try:
            await until(lambda: _at_least([n for n in (statuses.get(503, 0),) if n >= 2], 1), "503 answers")
            catalog.wait_for(lambda: "cannot be reached" in catalog.text(), "the log line")
        finally:
            primary.pg_ctl("start")
        before = len(acknowledged)
        await until(lambda: _at_least(acknowledged, before + 50), "acknowledgements after the restart", timeout=120)
        stop.set()
        await asyncio.gather(*agents)
        assert 500 not in statuses, statuses
        store = Store(database)
        try:
            deadline = time.monotonic() + 120
            while store.waiting():
                assert time.monotonic() < deadline
                await asyncio.sleep(0.2)
            held = {oid for (oid,) in query(store, "SELECT id FROM observations")}
            assert acknowledged <= held, f"{len(acknowledged - held)} acknowledged observations lost"
        finally:
            store.close()
        assert re.search(r"the catalog's database \S+ cannot be reached \(.*\); answering 503 until it is back",
                         catalog.text())
        assert re.search(r"the catalog's database \S+ is reachable again after [\d.]+ s", catalog.text())
        assert "Traceback" not in catalog.text(), catalog.text()[-3000:]
    finally:
        catalog.stop()


async def _at_least(collection, count: int) -> bool:
    return len(collection) >= count


def test_a_read_db_needs_a_postgresql_primary(tmp_path):
    result = subprocess.run([sys.executable, "-m", "cratesense", "catalog", "serve", "--db", str(tmp_path / "c.sqlite"),
                             "--read-db", "postgresql://nobody@/none"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "cratesense: --read-db needs a PostgreSQL primary (--db postgresql://...): a SQLite file has no streaming standby"]
