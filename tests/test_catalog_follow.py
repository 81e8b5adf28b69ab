"""The change feed (catalog/follow.py): what changed in the recordings a contributor holds,
since its cursor; over both backends, through the real API and the store."""

from __future__ import annotations

import random
import threading

import aiohttp
import chromaprint
import msgspec
import pytest

from catalogkit import Client, catalog_server, observation, random_fingerprint
from cratesense.catalog import contract, follow
from cratesense.catalog.store import Store


def decoded(body: dict) -> contract.Observation:
    return msgspec.json.decode(msgspec.json.encode(body), type=contract.Observation)


def synthetic(seed: int) -> tuple[str, float]:
    return chromaprint.encode_fingerprint(random_fingerprint(random.Random(seed)), 1).decode(), 180.0


def feed(store: Store, contributor: str, cursor: dict | None = None, limit: int = follow.PAGE) -> tuple[list, dict]:
    """Every change from ``cursor`` on, page after page: (changes, the last cursor)."""
    cursor = cursor or {"change": 0, "recording": None}
    found = []
    while True:
        answer = follow.changes(store, contributor, cursor["change"], cursor["recording"], limit)
        msgspec.convert(answer, contract.Changes)  # what the API answers is the contract's shape
        found += answer["changes"]
        cursor = answer["cursor"]
        if not answer["more"]:
            return found, cursor


@pytest.mark.asyncio
async def test_a_holder_hears_of_every_change_to_its_recordings_and_of_nothing_else(catalog_db, catalog_fingerprints):
    async with catalog_server(catalog_db) as (store, url), aiohttp.ClientSession() as session:
        alice, bob = [await Client(session, url).register() for _ in range(2)]
        mine = observation(catalog_fingerprints[(0, "mp3")])  # Bob's copy, untagged
        other = observation(catalog_fingerprints[(1, "flac")], title="Not Bob's")
        assert (await bob.ingest([mine]))[0] == 200 and (await alice.ingest([other]))[0] == 200

        status, answer = await bob.call("GET", "/v1/changes")
        assert status == 200, answer
        [change] = answer["changes"]  # his own recording (placed: it changed), not Alice's
        assert change["observations"] == [mine["id"]] and change["metadata"]["title"] is None
        assert answer["more"] is False and answer["cursor"]["recording"] is None
        cursor = answer["cursor"]
        since = f"/v1/changes?since={cursor['change']}"
        status, answer = await bob.call("GET", since)
        assert status == 200 and answer["changes"] == [] and answer["cursor"] == cursor  # nothing changed: nothing

        tagged = observation(catalog_fingerprints[(0, "flac")], artist="Mr. Oizo", title="Flat Beat")
        assert (await alice.ingest([tagged]))[0] == 200  # Alice's tagged copy joins Bob's recording
        status, answer = await bob.call("GET", since)
        [change] = answer["changes"]
        assert change["metadata"]["title"] == "Flat Beat" and change["contributors"] == 2
        assert change["observations"] == [mine["id"]]  # never Alice's id
        assert answer["cursor"]["change"] > cursor["change"]

        status, answer = await alice.call("GET", "/v1/changes")
        assert sorted(len(c["observations"]) for c in answer["changes"]) == [1, 1]  # her own two
        assert {o for c in answer["changes"] for o in c["observations"]} == {other["id"], tagged["id"]}

        # a resend changes nothing: no change to hear of
        cursor = answer["cursor"]
        assert (await alice.ingest([tagged]))[1]["results"][0]["status"] == "duplicate"
        status, answer = await alice.call("GET", f"/v1/changes?since={cursor['change']}")
        assert answer["changes"] == []

        for bad in ("since=-1", "since=abc", "since=1e3", "after=x", "since=" + "9" * 30):
            status, answer = await bob.call("GET", f"/v1/changes?{bad}")
            assert status == 422 and answer["field"] in ("since", "after"), (bad, answer)


def test_an_erasure_is_a_change_for_the_other_holders(catalog_db):
    store = Store(catalog_db)
    try:
        fingerprint = synthetic(1)
        alice, bob = store.register()[0], store.register()[0]
        store.ingest(alice, [decoded(observation(fingerprint, title="From Alice"))])
        store.ingest(bob, [decoded(observation(fingerprint))])
        [change], cursor = feed(store, bob)
        assert change["metadata"]["title"] == "From Alice"
        store.delete_contributor_observations(alice)
        [change], _ = feed(store, bob, cursor)
        assert change["metadata"]["title"] is None and change["contributors"] == 1
        assert feed(store, alice) == ([], feed(store, alice)[1])  # Alice holds nothing any more
    finally:
        store.close()


def test_pages_that_end_inside_one_change_lose_and_repeat_nothing(catalog_db):
    """An erasure stamps every recording it touched with one change number: pages of 7 across
    40 such recordings give each exactly once."""
    store = Store(catalog_db)
    try:
        alice, bob = store.register()[0], store.register()[0]
        prints = [synthetic(100 + n) for n in range(40)]
        store.ingest(alice, [decoded(observation(p, title=f"T{n}")) for n, p in enumerate(prints)])
        store.ingest(bob, [decoded(observation(p)) for p in prints])
        everything, cursor = feed(store, bob, limit=7)
        assert len(everything) == 40 and len({c["recording"] for c in everything}) == 40
        store.delete_contributor_observations(alice)  # one change number for all 40
        changed, _ = feed(store, bob, cursor, limit=7)
        assert sorted(c["recording"] for c in changed) == sorted(c["recording"] for c in everything)
        assert all(c["metadata"]["title"] is None for c in changed)
    finally:
        store.close()


def test_changes_committed_while_a_follower_reads_are_never_skipped(catalog_db):
    """Writers settle and refresh in threads while a follower reads the feed page after page:
    whatever its cursor passed, it has seen every recording at its final consensus."""
    store = Store(catalog_db, exact_below=2, debounce_seconds=0.0)
    try:
        follower = store.register()[0]
        prints = [synthetic(200 + n) for n in range(12)]
        store.ingest(follower, [decoded(observation(p)) for p in prints])
        writers = [store.register()[0] for _ in range(4)]
        latest: dict[int, dict] = {}
        cursor = None
        stop = threading.Event()

        def write(contributor: str, seed: int) -> None:
            rng = random.Random(seed)
            for round_number in range(6):
                batch = [decoded(observation(p, title=f"{contributor[:4]}-{round_number}"))
                         for p in rng.sample(prints, 3)]
                store.accept(contributor, batch)
                while store.settle(5):
                    pass
                store.refresh()

        threads = [threading.Thread(target=write, args=(w, n)) for n, w in enumerate(writers)]
        for thread in threads:
            thread.start()
        while any(thread.is_alive() for thread in threads) or not stop.is_set():
            if not any(thread.is_alive() for thread in threads):
                stop.set()  # one more read after the last write
            changes, cursor = feed(store, follower, cursor, limit=5)
            for change in changes:
                latest[change["recording"]] = change
        while store.refresh(now=10**12):
            pass
        final, _ = feed(store, follower, cursor)
        for change in final:
            latest[change["recording"]] = change
        now = {c["recording"]: c for c in follow.changes(store, follower, 0, None, 10**6)["changes"]}
        assert latest == now and len(now) == 12
    finally:
        store.close()
