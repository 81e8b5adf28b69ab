"""An agent and a catalog of different versions: a real catalog on 127.0.0.1 behind a stand-in
for the version we cannot run here (a newer catalog's extra reply fields; an older catalog that
refuses a field it does not know). The stand-in is a tap that forwards every request to the real
catalog and rewrites only what the other version would answer differently."""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import json
import time

import aiohttp
import pytest
from aiohttp import web

from catalogkit import observation, serve_every_path
from trackkit import track_analysis
from cratesense.catalog.contract import CONTRACT_HEADER
from cratesense.catalog.server import start
from cratesense.catalog.store import Store
from cratesense.daemon.identity import Identity
from cratesense.daemon.journal import FileIdentity, Journal, Observation
from cratesense.daemon.journal_io import JournalIO
from cratesense.daemon.sync import Syncer

SOURCES = range(5)


def _with_unknown_fields(value):
    """``value`` with a field no agent knows added to every object in it, as a newer catalog's
    answers would carry."""
    if isinstance(value, dict):
        return {**{key: _with_unknown_fields(item) for key, item in value.items()},
                "added_by_a_newer_catalog": {"weight": 0.5, "words": ["new"]}}
    if isinstance(value, list):
        return [_with_unknown_fields(item) for item in value]
    return value


@contextlib.asynccontextmanager
async def tapped_catalog(tmp_path, *, instead=None, rewrite=None):
    """A real catalog and a tap in front of it. ``instead(path, body)``: what the tap answers
    without forwarding (status, answer, contract), or None to forward; ``rewrite(status, answer,
    contract)``: what it answers in place of the catalog's answer, or None: that answer as it is."""
    store = Store(tmp_path / "catalog.sqlite")
    runner, catalog_url = await start(store)
    seen: list[str] = []

    async def tap(request: web.Request) -> web.Response:
        body = await request.read()
        seen.append(f"{request.method} {request.path}")
        inflated = gzip.decompress(body) if request.headers.get("Content-Encoding") == "gzip" else body
        answered = instead(request.path, inflated) if instead else None
        if answered is not None:
            return web.json_response(answered[1], status=answered[0], headers={CONTRACT_HEADER: answered[2]})
        headers = {k: v for k, v in request.headers.items() if k.lower() in ("authorization", "content-type", "content-encoding")}
        async with aiohttp.ClientSession() as session:
            async with session.request(request.method, catalog_url + request.path_qs, data=body, headers=headers) as a:
                status, answer, contract = a.status, await a.read(), a.headers.get(CONTRACT_HEADER)
        replaced = rewrite(status, json.loads(answer) if answer else None, contract) if rewrite else None
        if replaced is not None:
            status, answer, contract = replaced[0], json.dumps(replaced[1]).encode(), replaced[2]
        return web.Response(body=answer, status=status, content_type="application/json",
                            headers={CONTRACT_HEADER: contract} if contract else None)

    tap_runner, url = await serve_every_path(tap)
    try:
        yield store, url, seen
    finally:
        await tap_runner.cleanup()
        await runner.cleanup()
        store.close()


def queue(journal_path, fingerprints, **fields_by_index) -> list[str]:
    """One observation per source into the journal's outbox; ``fields_by_index``: 'i' -> fields."""
    ids = []
    with Journal(journal_path) as journal:
        for index in SOURCES:
            payload = observation(fingerprints[(index, "flac")], **fields_by_index.get(f"i{index}", {}))
            oid = payload.pop("id")
            journal.record_analysis(f"/m/{index}.flac", FileIdentity(1, index, 1, 1), f"k{index}",
                                    track_analysis("v"), Observation(oid, payload))
            ids.append(oid)
    return ids


@contextlib.asynccontextmanager
async def syncer_for(tmp_path, url):
    io = JournalIO(tmp_path / "journal.sqlite")
    await io.open()
    syncer = Syncer(io, Identity(tmp_path / "identity.json"), url, aiohttp.ClientSession, label=url, quiet_seconds=0.1)
    loop_task = asyncio.create_task(syncer.run())
    try:
        yield syncer, io
    finally:
        loop_task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await loop_task
        await io.close()


async def sync_until(syncer: Syncer, condition, what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        await syncer.sync_now()
        if await condition():
            return
    raise AssertionError(f"{what}: not after {timeout:.0f} s of syncing ({syncer.status()})")


def stored_ids(store: Store) -> list[str]:
    from catalogkit import query

    return [oid for (oid,) in query(store, "SELECT id FROM observations")]


@pytest.mark.asyncio
async def test_an_agent_keeps_syncing_with_a_catalog_newer_than_itself(tmp_path, catalog_fingerprints):
    ids = queue(tmp_path / "journal.sqlite", catalog_fingerprints)

    def newer(status, answer, contract):
        return (status, _with_unknown_fields(answer), contract) if isinstance(answer, dict) else None

    async with tapped_catalog(tmp_path, rewrite=newer) as (store, url, seen), syncer_for(tmp_path, url) as (syncer, io):
        await syncer.sync_now()
        assert syncer.status()["last_sync_error"] is None
        counts = await io.read(lambda journal: journal.counts())
        assert counts["outbox"] == 0 and counts["parked"] == 0
        assert sorted(stored_ids(store)) == sorted(ids)
        # every answer of a run was read: registration, upload, change feed, profile
        assert {"POST /v1/contributors", "POST /v1/observations", "GET /v1/changes", "PUT /v1/profile"} <= set(seen)
        found = await syncer.look_up([catalog_fingerprints[(0, "mp3")]])
        assert found[0] is not None and found[0].contributors == 1
        assert (await syncer.recommendations())["recommendations"] == []
        exported = await syncer.export()
        assert sorted(item["id"] for item in exported["observations"]) == sorted(ids)


@pytest.mark.asyncio
async def test_what_an_older_catalog_refused_is_offered_again_once_it_is_upgraded(tmp_path, catalog_fingerprints):
    """Three observations carry genre words an older catalog does not know; it refuses each by
    name and the agent parks them. Upgraded (its answers name another contract), the catalog is
    offered them again and takes them; one it refuses under its new contract stays parked."""
    fields = {"i1": {"genres": ["techno"]}, "i2": {"genres": ["house"], "moods": ["energetic"]},
              "i3": {"genres": ["ambient"]}, "i4": {"title": "/home/alice/Music/x.flac"}}
    ids = queue(tmp_path / "journal.sqlite", catalog_fingerprints, **fields)
    catalog = {"upgraded": False}

    def older_refuses(path, body):
        if catalog["upgraded"]:
            return None  # the real catalog, as it is
        if path == "/v1/observations":
            items = json.loads(body)["observations"]
            for index, item in enumerate(items):
                if "genres" in item["analysis"] or "moods" in item["analysis"]:
                    name = "genres" if "genres" in item["analysis"] else "moods"
                    field = f"observations[{index}].analysis.{name}"
                    return 422, {"error": f"{field}: object has no field {name!r}", "field": field,
                                 "rule": "unknown field"}, "older-contract"
        return None

    def older_contract(status, answer, contract):
        return None if catalog["upgraded"] else (status, answer, "older-contract")

    async def parked() -> int:
        return (await io.read(lambda journal: journal.counts()))["parked"]

    async with tapped_catalog(tmp_path, instead=older_refuses, rewrite=older_contract) as (store, url, seen), \
            syncer_for(tmp_path, url) as (syncer, io):
        # the older catalog: the genre rows refused (the tap answers before forwarding them), the
        # path-like title refused by the real guard
        await sync_until(syncer, lambda: _equals(parked, 4), "4 rows parked by the older catalog")
        assert sorted(stored_ids(store)) == sorted([ids[0]])
        uploads_before = seen.count("POST /v1/observations")
        await syncer.sync_now()  # under the same contract nothing parked is sent again
        assert seen.count("POST /v1/observations") == uploads_before and await parked() == 4

        catalog["upgraded"] = True
        await sync_until(syncer, lambda: _equals(parked, 1), "the genre rows accepted after the upgrade")
        assert sorted(stored_ids(store)) == sorted([ids[0], ids[1], ids[2], ids[3]])  # each once
        [(_, reason)] = await io.read(lambda journal: journal.parked())
        assert "metadata.title" in reason
        uploads_after = seen.count("POST /v1/observations")
        await syncer.sync_now()
        await syncer.sync_now()
        assert seen.count("POST /v1/observations") == uploads_after and await parked() == 1
        assert (await io.read(lambda journal: journal.counts()))["outbox"] == 0


async def _equals(read, expected) -> bool:
    return await read() == expected
