"""The catalog API against a real server on 127.0.0.1, over each backend: a real SQLite file and
a real PostgreSQL database (a throwaway server the suite starts)."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import gzip
import json

import aiohttp
import pytest

from catalogkit import Client, catalog_server, observation, query

pytestmark = pytest.mark.asyncio



async def until(condition, what: str, timeout: float = 30.0) -> None:
    """Wait for ``condition()`` (a loaded machine takes its time; never a fixed sleep)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, f"waited {timeout:.0f} s for {what}"
        await asyncio.sleep(0.02)

@pytest.fixture
async def catalog(catalog_db):
    async with catalog_server(catalog_db) as (store, url):
        async with aiohttp.ClientSession() as session:
            yield store, url, session


async def agent(catalog) -> Client:
    _, url, session = catalog
    return await Client(session, url).register()


async def test_auth_is_required_and_errors_are_json(catalog):
    _, url, session = catalog
    anonymous = Client(session, url)
    status, body = await anonymous.call("GET", "/v1/contributors/me/export")
    assert status == 401 and "bearer token" in body["error"]
    anonymous.token = "guessed-token"
    status, body = await anonymous.call("GET", "/v1/contributors/me/export")
    assert status == 401 and body["error"] == "unknown bearer token"


async def test_encodes_of_one_recording_land_on_one_recording_with_consensus(catalog, catalog_fingerprints):
    store, _, _ = catalog
    alice, bob, carol = [await agent(catalog) for _ in range(3)]
    encodes = [key for key in catalog_fingerprints if key[0] == 0]
    assert len(encodes) == 8
    for index, key in enumerate(encodes):
        who = (alice, bob, carol)[index % 3]
        fields = {"artist": "Mr. Oizo", "title": "Flat Beat", "bpm": 96.0 if who is not carol else 48.0}
        if who is carol:
            fields["title"] = "Flat Beat (Radio Edit)"  # outvoted: votes are per contributor
        status, body = await who.ingest([observation(catalog_fingerprints[key], **fields, key="A minor", camelot="8A")])
        assert status == 200 and body["results"][0]["status"] == "accepted", body
    assert store.counts()["recordings"] == 1
    status, body = await alice.call("POST", "/v1/lookup", {"fingerprints": [
        {"chromaprint": catalog_fingerprints[(0, "opus-32k")][0], "duration": catalog_fingerprints[(0, "opus-32k")][1]},
        {"chromaprint": catalog_fingerprints[(1, "flac")][0], "duration": catalog_fingerprints[(1, "flac")][1]},
    ]})
    assert status == 200
    hit, miss = body["results"]
    assert miss is None
    assert hit["contributors"] == 3 and hit["score"] > 0.9
    assert hit["metadata"]["title"] == "Flat Beat" and hit["metadata"]["artist"] == "Mr. Oizo"
    assert hit["analysis"] == {"bpm": 96.0, "key": "A minor", "camelot": "8A", "loudness_lufs": None,  # 48 folded
                               "genres": None, "moods": None}


async def test_different_recordings_never_merge_and_resends_are_idempotent(catalog, catalog_fingerprints):
    store, _, _ = catalog
    alice = await agent(catalog)
    items = [observation(catalog_fingerprints[(source, "flac")]) for source in range(5)]
    status, body = await alice.ingest(items)
    assert [r["status"] for r in body["results"]] == ["accepted"] * 5
    assert store.counts()["recordings"] == 5
    status, body = await alice.ingest(items, gzip_body=True)  # the same batch again, gzip'd
    assert status == 200 and [r["status"] for r in body["results"]] == ["duplicate"] * 5
    assert store.counts()["observations"] == 5

    mallory = await agent(catalog)  # another contributor cannot claim (or overwrite) those ids
    status, body = await mallory.ingest([dict(items[0], metadata=dict(items[0]["metadata"], title="Mine"))])
    assert body["results"][0] == {"id": items[0]["id"], "status": "rejected", "reason": "id: already used by another contributor"}


@pytest.mark.parametrize(
    ("field", "value", "rule"),
    [
        ("title", "/home/alice/Music/track.flac", "absolute file path"),
        ("title", "C:\\Users\\alice\\Music\\01.mp3", "Windows file path"),
        ("album", "~/Music", "home-folder path"),
        ("artist", "\\\\nas\\music\\x", "network share"),
        ("album", "file:///srv/music", "file: URI"),
        ("title", "01 - Intro.flac", "audio or playlist file name"),
        ("album", "Music/Albums/party.m3u8", "audio or playlist file"),
        ("title", base64.b64encode(b"RIFF\x24\x00\x00\x00WAVEfmt ").decode(), "encoded audio"),
        ("title", "Track\x00", "control"),
        ("catalog_number", "deadbeef" * 4, "hex run"),
    ],
)
async def test_the_guard_rejects_paths_and_binary_naming_the_field(catalog, catalog_fingerprints, field, value, rule):
    alice = await agent(catalog)
    items = [observation(catalog_fingerprints[(1, "flac")]), observation(catalog_fingerprints[(0, "flac")], **{field: value})]
    status, body = await alice.ingest(items)
    assert status == 422
    assert body["field"] == f"observations[1].metadata.{field}" and rule in body["rule"], body
    assert catalog[0].counts()["observations"] == 0  # the whole batch is refused


async def test_structure_size_and_encoding_rules(catalog, catalog_fingerprints):
    alice = await agent(catalog)
    good = observation(catalog_fingerprints[(0, "flac")])
    status, body = await alice.ingest([dict(good, file_name="track.flac")])
    assert status == 422 and body["field"] == "observations[0].file_name" and body["rule"] == "unknown field"
    status, body = await alice.ingest([dict(good, analysis=dict(good["analysis"], bpm=900))])
    assert status == 422 and body["field"] == "observations[0].analysis.bpm"
    status, body = await alice.ingest([dict(good, fingerprint={"chromaprint": "AQAAdGVzdA", "duration": 30.0})])
    assert status == 422 and body["field"] == "observations[0].fingerprint.chromaprint"
    other = observation(catalog_fingerprints[(1, "flac")])
    status, body = await alice.ingest([dict(good, fingerprint=dict(good["fingerprint"], duration=300.0))])
    assert status == 422 and "do not fit a duration" in body["rule"]
    status, body = await alice.ingest([other] * 501)
    assert status == 413 and body["field"] == "observations"
    status, body = await alice.call("POST", "/v1/observations", raw=b'{"observations": ["' + b"x" * (3 << 20) + b'"]}')
    assert status == 413
    bomb = gzip.compress(b'{"observations": [' + b" " * (64 << 20) + b"]}")
    assert len(bomb) < 100_000
    status, body = await alice.call("POST", "/v1/observations", raw=bomb, headers={"Content-Encoding": "gzip"})
    assert status == 413 and "inflated" in body["error"]
    status, body = await alice.call("POST", "/v1/observations", raw=b"not gzip", headers={"Content-Encoding": "gzip"})
    assert status == 400 and "gzip" in body["error"]
    status, body = await alice.call("POST", "/v1/observations", raw=b'{"observations": ' + b"[" * 100_000)
    assert status in (400, 422) and body["error"]  # deeply nested: refused, not a crash
    status, body = await alice.call("POST", "/v1/observations", {"observations": [{"a": {"b": {"c": [[[[1]]]]}}}]})
    assert status == 422


async def test_opt_out_refuses_observations_but_keeps_the_profile(catalog, catalog_fingerprints):
    alice = await agent(catalog)
    status, body = await alice.call("PUT", "/v1/contributors/me", {"contribute": False})
    assert status == 200 and body == {"contribute": False}
    status, body = await alice.ingest([observation(catalog_fingerprints[(0, "flac")])])
    assert status == 403 and body["rule"] == "contribute=false"
    status, _ = await alice.call("PUT", "/v1/profile", profile(tempo_peak=5))
    assert status == 200
    status, body = await alice.call("GET", "/v1/contributors/me/export")
    assert body["contributor"]["contribute"] is False and body["profile"]["track_count"] == 10
    assert body["observations"] == []
    await alice.call("PUT", "/v1/contributors/me", {"contribute": True})
    status, body = await alice.ingest([observation(catalog_fingerprints[(0, "flac")])])
    assert status == 200 and body["accepted"] == 1


async def test_deletion_erases_everything_and_rederives_the_rest(catalog, catalog_fingerprints, tmp_path):
    store, _, _ = catalog
    alice, bob = await agent(catalog), await agent(catalog)
    await alice.ingest([observation(catalog_fingerprints[(0, "flac")], title="Alice's title", artist="X"),
                        observation(catalog_fingerprints[(1, "flac")], title="Only Alice")])
    await bob.ingest([observation(catalog_fingerprints[(0, "mp3")], title="Bob's title", artist="X")])
    await alice.call("PUT", "/v1/profile", profile(tempo_peak=3))
    status, body = await alice.call("DELETE", "/v1/contributors/me/observations")
    assert status == 200 and body == {"deleted": 2}
    assert store.counts()["recordings"] == 1 and store.counts()["observations"] == 1
    status, body = await bob.call("POST", "/v1/lookup", {"fingerprints": [
        {"chromaprint": catalog_fingerprints[(0, "flac")][0], "duration": catalog_fingerprints[(0, "flac")][1]}]})
    assert body["results"][0]["metadata"]["title"] == "Bob's title" and body["results"][0]["contributors"] == 1
    status, body = await bob.call("POST", "/v1/lookup", {"fingerprints": [
        {"chromaprint": catalog_fingerprints[(1, "flac")][0], "duration": catalog_fingerprints[(1, "flac")][1]}]})
    assert body["results"] == [None]  # the recording only Alice held is gone, fingerprints included
    status, export = await alice.call("GET", "/v1/contributors/me/export")
    assert export["observations"] == [] and export["contributor"]["deleted_count"] == 2
    assert export["contributor"]["deleted_at"] is not None
    status, body = await alice.call("DELETE", "/v1/contributors/me/observations")
    assert body == {"deleted": 0}  # idempotent
    assert query(store, "SELECT COUNT(*) FROM fingerprint_terms WHERE fingerprint NOT IN (SELECT id FROM fingerprints)") == [(0,)]


def profile(tempo_peak: int, key_peak: int = 0) -> dict:
    return {
        "track_count": 10,
        "tempo_histogram": [1.0 if i == tempo_peak else 0.0 for i in range(24)],
        "key_histogram": [1.0 if i == key_peak else 0.0 for i in range(24)],
        "loudness_histogram": [1 / 12] * 12,
        "embedding_centroid": None,
    }


async def test_recommendations_come_from_the_nearest_djs_and_never_reveal_a_lone_holder(catalog, catalog_fingerprints):
    """Three DJs like Alice (her profile, her track) and three unlike her: she is recommended
    what the three like her hold, never what she holds (another encode of it included), never
    what only one DJ holds (catalog/recommend.py: tests/test_catalog_recommend.py for taste)."""
    alice = await agent(catalog)
    await alice.call("PUT", "/v1/profile", profile(tempo_peak=4, key_peak=2))
    await alice.ingest([observation(catalog_fingerprints[(0, "flac")])])
    for n in range(3):
        twin, stranger = await agent(catalog), await agent(catalog)
        await twin.call("PUT", "/v1/profile", profile(tempo_peak=4, key_peak=2))
        await stranger.call("PUT", "/v1/profile", profile(tempo_peak=20, key_peak=15))
        await twin.ingest([observation(catalog_fingerprints[(0, "mp3")], title="Shared"),
                           observation(catalog_fingerprints[(1, "flac")], title="Twin's pick")]
                          + ([observation(catalog_fingerprints[(3, "flac")], title="Lone pick")] if n == 0 else []))
        await stranger.ingest([observation(catalog_fingerprints[(2, "flac")], title="Stranger's pick")])
    status, body = await alice.call("GET", "/v1/recommendations")
    titles = [r["metadata"]["title"] for r in body["recommendations"]]
    assert status == 200 and titles == ["Twin's pick"], body
    assert body["recommendations"][0]["reason"] == "held by 3 DJs whose libraries overlap yours by 100 %"


async def test_rate_limit_answers_429_with_retry_after(catalog_db):
    async with catalog_server(catalog_db, rate=1.0, burst=3) as (_, url):
        async with aiohttp.ClientSession() as session:
            alice = await Client(session, url).register()
            statuses = []
            for _ in range(6):
                async with session.get(url + "/v1/contributors/me/export",
                                       headers={"Authorization": f"Bearer {alice.token}"}) as response:
                    statuses.append(response.status)
                    retry_after = response.headers.get("Retry-After")
            assert statuses[:2] == [200, 200] and statuses[-1] == 429 and int(retry_after) >= 1


async def test_fifty_agents_at_once_build_the_same_catalog_as_one_at_a_time(catalog_db, request, catalog_fingerprints):
    keys = sorted(catalog_fingerprints)

    async def run(target, concurrent: bool) -> set[frozenset[str]]:
        async with catalog_server(target) as (store, url):
            async with aiohttp.ClientSession() as session:
                agents = [await Client(session, url).register() for _ in range(50)]
                batches = [[observation(catalog_fingerprints[keys[(a + i) % len(keys)]], id=f"{a:02x}{i:030x}",
                                        title=f"T{keys[(a + i) % len(keys)][0]}")
                            for i in range(4)] for a in range(50)]
                if concurrent:
                    results = await asyncio.gather(*(c.ingest(b) for c, b in zip(agents, batches)))
                else:
                    results = [await c.ingest(b) for c, b in zip(agents, batches)]
                assert all(status == 200 and body["accepted"] == 4 for status, body in results)
                for _ in range(200):  # answered before matching, under load
                    if store.waiting() == 0:
                        break
                    await asyncio.sleep(0.1)
            groups: dict[int, set[str]] = {}
            for oid, recording in query(store, "SELECT id, recording FROM observations"):
                groups.setdefault(recording, set()).add(oid)
            titles = {row[0] for row in query(store, "SELECT title FROM recordings")}
            assert titles == {f"T{source}" for source in range(5)}
            return {frozenset(group) for group in groups.values()}

    other = (catalog_db.parent / "other.sqlite" if not isinstance(catalog_db, str)
             else request.getfixturevalue("postgres").new_database())
    serial = await run(catalog_db, concurrent=False)
    concurrent = await run(other, concurrent=True)
    assert len(serial) == 5 and serial == concurrent



async def test_attacks_are_refused(catalog, catalog_fingerprints):
    store, url, session = catalog
    alice = await agent(catalog)
    # token guessing: every guess is a new token, so the limit is per address
    statuses = []
    for index in range(15):
        async with session.get(url + "/v1/contributors/me/export", headers={"Authorization": f"Bearer guess{index}"}) as r:
            statuses.append(r.status)
    assert statuses[:10] == [401] * 10 and statuses[-1] == 429
    # huge headers
    async with session.get(url + "/v1/recommendations", headers={"Authorization": f"Bearer {alice.token}",
                                                                 "X-Padding": "x" * 100_000}) as r:
        assert 400 <= r.status < 500
    # SQL-like text is data: stored and returned verbatim
    sql = "Robert'); DROP TABLE observations;--"
    status, body = await alice.ingest([observation(catalog_fingerprints[(3, "flac")], title=sql, artist="1' OR '1'='1")])
    assert status == 200 and body["accepted"] == 1
    status, export = await alice.call("GET", "/v1/contributors/me/export")
    assert export["observations"][0]["metadata"]["title"] == sql
    assert store.counts()["observations"] == 1
    # replayed observations are idempotent
    status, body = await alice.ingest([dict(export["observations"][0], received_at=None)])
    assert status == 422  # an export is not an observation: unknown fields are refused
    # one contributor cannot reach another's data: there is no id to name in any route
    bob = await agent(catalog)
    status, export = await bob.call("GET", "/v1/contributors/me/export")
    assert export["observations"] == [] and export["contributor"]["id"] != alice.id
    status, body = await bob.call("DELETE", "/v1/contributors/me/observations")
    assert body == {"deleted": 0} and store.counts()["observations"] == 1
    status, _ = await bob.call("GET", f"/v1/contributors/{alice.id}/export")
    assert status in (404, 405)


async def test_a_slow_client_is_cut_off(tmp_path):
    async with catalog_server(tmp_path / "c.sqlite", body_seconds=1.0) as (_, url):  # the server's part: one backend
        async with aiohttp.ClientSession() as session:
            alice = await Client(session, url).register()
        host, port = url.removeprefix("http://").split(":")
        reader, writer = await asyncio.open_connection(host, int(port))
        writer.write((f"POST /v1/observations HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {alice.token}\r\n"
                      "Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{\"obs").encode())
        await writer.drain()  # ... and then nothing more
        started = asyncio.get_running_loop().time()
        head = await asyncio.wait_for(reader.readline(), 10)
        assert b" 408 " in head and asyncio.get_running_loop().time() - started < 5
        await reader.read()  # the server closes the connection
        writer.close()


def _random_batch(seed: int, count: int) -> list[dict]:
    import random

    import chromaprint

    from catalogkit import random_fingerprint

    rng = random.Random(seed)
    return [observation((chromaprint.encode_fingerprint(random_fingerprint(rng), 1).decode(), 180.0), bpm=120.0)
            for _ in range(count)]


async def test_under_load_batches_are_accepted_at_once_and_matched_after(catalog_db):
    """While another ingest request is in flight (here: one whose body is still coming), a batch
    is accepted durably and answered without waiting for matching; everything is matched
    soon after, once each."""
    from cratesense.catalog.server import SETTLER, start
    from cratesense.catalog.store import Store

    store = Store(catalog_db)
    runner, url = await start(store)
    try:
        async with aiohttp.ClientSession() as session:
            slow, others = await Client(session, url).register(), [await Client(session, url).register() for _ in range(5)]
            host, port = url.removeprefix("http://").split(":")
            body = json.dumps({"observations": _random_batch(99, 3)}).encode()
            reader, writer = await asyncio.open_connection(host, int(port))
            writer.write((f"POST /v1/observations HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {slow.token}\r\n"
                          f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n").encode() + body[:50])
            await writer.drain()
            await until(lambda: runner.app[SETTLER].in_flight == 1, "the slow request in flight")
            answers = await asyncio.gather(*(client.ingest(_random_batch(i, 20)) for i, client in enumerate(others)))
            assert all(status == 200 and body["accepted"] == 20 and body["pending"] == 20 for status, body in answers)
            assert runner.app[SETTLER].deferred == 5  # each answered before being matched
            writer.write(body[50:])
            await writer.drain()
            assert b" 200 " in await asyncio.wait_for(reader.readline(), 10)
            writer.close()
            for _ in range(100):
                if store.counts()["arrivals"] == 0:
                    break
                await asyncio.sleep(0.1)
            counts = store.counts()
            assert counts["arrivals"] == 0 and counts["observations"] == 103 and counts["recordings"] == 103
            status, export = await others[0].call("GET", "/v1/contributors/me/export")
            assert status == 200 and all(o["recording"] for o in export["observations"])
    finally:
        await runner.cleanup()
        store.close()


async def test_a_lone_upload_is_matched_before_it_is_answered(catalog, catalog_fingerprints):
    """Nothing else in flight, the matching lock free: the answer comes after the matching and
    names each observation's recording (two encodes of one track: one recording)."""
    store, _, _ = catalog
    alice = await agent(catalog)
    encodes = [(0, "flac"), (0, "mp3")]
    batch = [observation(catalog_fingerprints[key], title="Two Encodes") for key in encodes] + _random_batch(3, 2)
    status, body = await alice.ingest(batch)
    assert status == 200 and body["accepted"] == 4 and body["pending"] == 0, body
    recordings = [result["recording"] for result in body["results"]]
    assert recordings[0] == recordings[1] and len(set(recordings)) == 3, body
    assert store.counts()["arrivals"] == 0 and store.counts()["observations"] == 4  # matched before the answer
    status, body = await alice.ingest(batch[:1])  # a re-send: a duplicate, no recording claimed for it
    assert status == 200 and body == {"results": [{"id": batch[0]["id"], "status": "duplicate"}], "accepted": 0,
                                      "pending": 0}


@contextlib.contextmanager
def matching_lock_held(store, target):
    """The matching lock held by someone else: another worker's placer (PostgreSQL: a session
    of its own holding the advisory lock; SQLite: this process's placing lock)."""
    from cratesense.catalog.backends import MATCHING_LOCK

    if isinstance(target, str):
        import psycopg

        with psycopg.connect(target, autocommit=True) as other:
            other.execute("SELECT pg_advisory_lock(%s)", (MATCHING_LOCK,))
            yield
            other.execute("SELECT pg_advisory_unlock(%s)", (MATCHING_LOCK,))
    else:
        store.backend.matching.acquire()
        try:
            yield
        finally:
            store.backend.matching.release()


async def test_while_the_matching_lock_is_held_an_upload_is_answered_at_once_and_matched_after(catalog_db):
    """A lone upload never waits for matching: with the lock held elsewhere it is accepted and
    answered as pending, and matched once the lock is free; nothing lost, nothing twice."""
    async with catalog_server(catalog_db) as (store, url):
        async with aiohttp.ClientSession() as session:
            alice = await Client(session, url).register()
            batch = _random_batch(5, 20)
            with matching_lock_held(store, catalog_db):
                # a blocked answer would come only after the lock is released, below: never here
                status, body = await asyncio.wait_for(alice.ingest(batch), 60)
                assert status == 200 and body["accepted"] == 20 and body["pending"] == 20, body
                assert all(result["status"] == "accepted" and "recording" not in result for result in body["results"])
                counts = store.counts()
                assert counts["arrivals"] == 20 and counts["observations"] == 0  # answered before being matched
                status, again = await asyncio.wait_for(alice.ingest(batch[:5]), 60)  # a re-send meanwhile
                assert status == 200 and again["accepted"] == 0 and again["pending"] == 0
                assert [result["status"] for result in again["results"]] == ["duplicate"] * 5
            assert store.counts()["arrivals"] + store.counts()["observations"] == 20
            await until(lambda: store.counts()["arrivals"] == 0, "the settler to match the pending batch", 120)
            counts = store.counts()
            assert counts["observations"] == 20 and counts["recordings"] == 20
            status, export = await alice.call("GET", "/v1/contributors/me/export")
            assert status == 200 and sorted(o["id"] for o in export["observations"]) == sorted(o["id"] for o in batch)
            assert all(o["recording"] for o in export["observations"])
            assert store.counts()["observations"] == 20
            # the lock free again: the next lone upload is matched in its answer
            status, body = await alice.ingest(_random_batch(6, 3))
            assert status == 200 and body["pending"] == 0 and all(r["recording"] for r in body["results"])


async def test_accepted_but_unmatched_observations_survive_a_restart(catalog_db):
    """A crash between the answer and the matching loses nothing: arrivals are in the database
    and are matched when the catalog starts again; a re-send meanwhile is a duplicate."""
    from cratesense.catalog import contract
    from cratesense.catalog.store import Store

    store = Store(catalog_db)
    contributor, token = store.register()
    batch = _random_batch(7, 30)
    observations = contract.decode_observations(contract.decode(json.dumps({"observations": batch}).encode(),
                                                                 contract.IngestRequest))
    store.accept(contributor, observations)
    assert store.counts()["arrivals"] == 30 and store.counts()["observations"] == 0
    assert [r["status"] for r in store.accept(contributor, observations[:2])] == ["duplicate", "duplicate"]
    store.close()  # ... the process dies here
    async with catalog_server(catalog_db) as (store, url):
        for _ in range(100):
            if store.counts()["arrivals"] == 0:
                break
            await asyncio.sleep(0.1)
        assert store.counts()["observations"] == 30 and store.counts()["recordings"] == 30


async def test_what_the_catalog_acknowledged_outlives_its_disk_failing(failing_disk):
    """An agent never sends an acknowledged observation again, so an acknowledgement must be on
    the disk: the disk fails right after the answers (the kernel drops whatever was not flushed)
    and after a repair every acknowledged observation and the contributor are still there."""
    path = failing_disk.folder / "catalog.sqlite"
    async with catalog_server(path) as (store, url):
        async with aiohttp.ClientSession() as session:
            client = await Client(session, url).register()
            status, answer = await client.ingest(_random_batch(11, 20))
            assert status == 200 and answer["accepted"] == 20
            failing_disk.fail()
    failing_disk.repair()
    async with catalog_server(path) as (store, url):
        async with aiohttp.ClientSession() as session:
            client.session, client.url = session, url
            status, export = await client.call("GET", "/v1/contributors/me/export")
            assert status == 200 and len(export["observations"]) == 20


async def test_the_settler_stops_when_cancelled_as_it_is_woken(tmp_path):
    """The server's shutdown cancels the settler; an ingest may wake it in the same instant.
    (With asyncio.wait_for on Python 3.11 the cancellation was swallowed and the shutdown hung:
    seen as a full suite stuck for good in the fifty-agents test.)"""
    from cratesense.catalog.server import Database, Settler
    from cratesense.catalog.store import Store

    store = Store(tmp_path / "catalog.sqlite")
    database = Database(store, 2)
    try:
        settler = Settler(database)
        running = asyncio.create_task(settler.run())
        # settled what was there at start, and waiting to be woken
        await until(lambda: not settler._wake.is_set(), "the settler waiting for work")
        settler.wake()
        running.cancel()
        done, _ = await asyncio.wait([running], timeout=10)
        assert done and running.cancelled()
    finally:
        database.shutdown()
        store.close()


async def test_health_and_metrics_say_what_to_watch(catalog, catalog_fingerprints):
    """/health (JSON) and /metrics (Prometheus text): the matching backlog, this worker's answers
    over the last minute with their p50/p99 and 5xx, the replica (none here). No token needed,
    and nothing in them names a contributor."""
    store, url, session = catalog
    alice = await agent(catalog)
    await alice.ingest([observation(catalog_fingerprints[(0, "flac")])])
    await alice.call("POST", "/v1/lookup", {"fingerprints": [
        {"chromaprint": catalog_fingerprints[(0, "flac")][0], "duration": catalog_fingerprints[(0, "flac")][1]}]})
    async with session.get(url + "/health") as response:
        assert response.status == 200
        health = await response.json()
    assert health["status"] == "ok" and health["replica"] is None
    assert health["backlog"]["waiting"] == 0 and health["backlog"]["oldest_seconds"] == 0.0
    answers = health["answers_last_minute"]
    assert answers["POST /v1/observations"]["count"] == 1 and answers["POST /v1/lookup"]["count"] == 1
    assert answers["POST /v1/lookup"]["p99_ms"] > 0 and answers["POST /v1/observations"]["errors_5xx"] == 0
    assert alice.id not in json.dumps(health)
    async with session.get(url + "/metrics") as response:
        assert response.status == 200
        text = await response.text()
    assert "cratesense_catalog_up 1\n" in text and "cratesense_catalog_backlog_waiting 0\n" in text
    assert 'cratesense_catalog_answer_p99_ms{route="POST /v1/lookup",' in text


async def test_batches_accepted_together_answer_as_if_one_after_another(catalog_db):
    """Group commit (``Store.accept_many``, what the server does with batches that arrive while
    another commits): each batch answered as if alone, in order; one whose contributor turned
    contribution off stores nothing and does not fail the others."""
    from cratesense.catalog import contract
    from cratesense.catalog.store import ContributionOff, Store

    store = Store(catalog_db)
    try:
        (a, _), (b, _), (c, _) = store.register(), store.register(), store.register()
        store.set_contribute(b, False)
        o1, o2, o3, o4 = contract.decode_observations(contract.decode(
            json.dumps({"observations": _random_batch(8, 4)}).encode(), contract.IngestRequest))
        outcomes = store.accept_many([(a, [o1, o2]), (b, [o3]), (c, [o1]), (a, [o2, o4])])
        assert [r["status"] for r in outcomes[0]] == ["accepted", "accepted"]
        assert isinstance(outcomes[1], ContributionOff)
        assert [(r["status"], r.get("reason")) for r in outcomes[2]] == [
            ("rejected", "id: already used by another contributor")]
        assert [r["status"] for r in outcomes[3]] == ["duplicate", "accepted"]
        assert {row[0] for row in query(store, "SELECT id FROM arrivals")} == {o1.id, o2.id, o4.id}
        with pytest.raises(ContributionOff):
            store.accept(b, [o3])
    finally:
        store.close()


async def test_concurrent_uploads_are_grouped_and_each_answered(catalog_db):
    """Many agents at once, each sending its batch twice (a re-send racing its first copy):
    every request answered with its own items, one copy accepted and the other a duplicate,
    everything stored once (the server groups what queues into one transaction)."""
    async with catalog_server(catalog_db) as (store, url), aiohttp.ClientSession() as session:
        agents = [await Client(session, url).register() for _ in range(12)]
        batches = [_random_batch(100 + number, 5) for number in range(12)]
        answers = await asyncio.gather(*(agent.ingest(batch) for agent, batch in zip(agents, batches)),
                                       *(agent.ingest(batch) for agent, batch in zip(agents, batches)))
        for (status, body), batch in zip(answers, batches + batches):
            assert status == 200 and [r["id"] for r in body["results"]] == [o["id"] for o in batch]
        statuses = [sorted(r["status"] for r in body["results"]) for _, body in answers]
        for first, second in zip(statuses[:12], statuses[12:]):  # one copy accepted, the other a duplicate
            assert sorted(first + second) == ["accepted"] * 5 + ["duplicate"] * 5
        stored = {row[0] for row in query(store, "SELECT id FROM observations UNION ALL SELECT id FROM arrivals")}
        assert stored == {o["id"] for batch in batches for o in batch}
