"""Sync end to end: a real agent, the embedded catalog or a real catalog server on 127.0.0.1."""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import time

import aiohttp
import msgspec
import pytest
from aiohttp import web

from agentproc import AgentProcess, write_config
from catalogkit import catalog_server, observation, serve_every_path
from trackkit import track_analysis
from cratesense.catalog.server import start
from cratesense.catalog.store import Store
from cratesense.daemon.identity import Identity
from cratesense.daemon.journal import FileIdentity, Journal, Observation
from cratesense.daemon.journal_io import JournalIO
from cratesense.daemon.sync import Syncer


@contextlib.asynccontextmanager
async def journal_io(path):
    """The journal as the agent uses it: one writer thread, reader threads."""
    io = JournalIO(path)
    await io.open()
    try:
        yield io
    finally:
        await io.close()


def catalog_count(path, table="observations") -> int:
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
        return db.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]


def wait_for_port(port: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise AssertionError(f"nothing listens on port {port}")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def agent(tmp_path):
    music = tmp_path / "music"
    music.mkdir()
    process = AgentProcess(tmp_path)
    process.music = music
    write_config(tmp_path, music, sync={"quiet_seconds": 0.5})
    yield process
    process.stop(signal.SIGKILL)


def test_embedded_catalog_receives_every_observation_once_with_no_configuration(agent, tracks):
    for track in tracks[:3]:
        shutil.copy(track, agent.music)
    agent.start()
    status = agent.wait_for(lambda s: s["tracks"] == 3 and s["waiting_to_sync"] == 0 and s["last_sync_at"], what="sync")
    assert status["catalog"] == "embedded" and status["contribute"] is True
    assert catalog_count(agent.catalog_path) == 3 and catalog_count(agent.catalog_path, "recordings") == 3
    assert catalog_count(agent.catalog_path, "profiles") == 1
    shutil.copy(tracks[3], agent.music)  # a change is synced soon after, without a command
    agent.wait_for(lambda s: catalog_count(agent.catalog_path) == 4, what="the change to be synced")
    result = agent.cli("status")
    assert "embedded" in result.stdout and "contribute" in result.stdout


def test_contribute_off_keeps_everything_local_and_on_sends_the_backlog(agent, tracks):
    agent.start()
    assert agent.cli("contribute", "off").returncode == 0
    for track in tracks[:2]:
        shutil.copy(track, agent.music)
    agent.wait_for(lambda s: s["tracks"] == 2 and s["waiting_to_sync"] == 2)
    assert agent.cli("sync").returncode == 0
    assert agent.status()["waiting_to_sync"] == 2 and catalog_count(agent.catalog_path) == 0
    preview = agent.cli("preview").stdout
    assert "contribution is off" in preview
    body = json.loads(preview.split("\n", 1)[1])
    assert len(body["body"]["observations"]) == 2
    leaked = json.dumps(body)
    assert str(agent.music) not in leaked and "s0" not in leaked and ".flac" not in leaked
    assert agent.cli("contribute", "on").returncode == 0
    agent.wait_for(lambda s: s["waiting_to_sync"] == 0, what="the backlog")
    assert catalog_count(agent.catalog_path) == 2


def test_forget_deletes_at_the_catalog_and_turns_contribution_off(agent, tracks):
    for track in tracks[:2]:
        shutil.copy(track, agent.music)
    agent.start()
    agent.wait_for(lambda s: s["tracks"] == 2 and s["waiting_to_sync"] == 0 and s["last_sync_at"])
    result = agent.cli("forget")  # not a terminal: refuses without --yes
    assert result.returncode == 2 and "--yes" in result.stderr
    result = agent.cli("forget", "--yes")
    assert result.returncode == 0 and "deleted 2 observation(s)" in result.stdout
    assert catalog_count(agent.catalog_path) == 0
    status = agent.status()
    assert status["contribute"] is False and status["deletion"]["deleted"] == 2
    shutil.copy(tracks[2], agent.music)
    agent.wait_for(lambda s: s["tracks"] == 3)
    agent.cli("sync")
    assert catalog_count(agent.catalog_path) == 0  # nothing re-uploaded

    out = agent.home / "export"
    result = agent.cli("export", "--output", str(out))
    assert result.returncode == 0
    journal = json.loads((out / "cratesense-journal.json").read_text())
    catalog = json.loads((out / "cratesense-catalog.json").read_text())
    assert len(journal["files"]) == 3 and journal["files"][0]["path"].startswith(str(agent.music))
    assert "install_secret" not in json.dumps(journal) and "token" not in journal["settings"]
    assert catalog["observations"] == [] and catalog["contributor"]["deleted_count"] == 2


def test_offline_then_a_shared_catalog_comes_up(agent, tracks, tmp_path):
    port = free_port()
    write_config(agent.home, agent.music, sync={"quiet_seconds": 0.5, "catalog_url": f"http://127.0.0.1:{port}"})
    for track in tracks[:2]:
        shutil.copy(track, agent.music)
    agent.start()
    status = agent.wait_for(lambda s: s["tracks"] == 2 and s["offline"], what="the agent to notice it is offline")
    assert status["state"] == "offline" and status["waiting_to_sync"] == 2 and status["next_retry_at"]
    assert "cannot be reached" in status["last_sync_error"]
    server = subprocess.Popen([sys.executable, "-m", "cratesense", "catalog", "serve", "--port", str(port),
                               "--db", str(tmp_path / "shared.sqlite")], stderr=subprocess.DEVNULL)
    try:
        wait_for_port(port)
        assert agent.cli("sync").returncode == 0  # retried at once, not after the backoff
        status = agent.status()
        assert status["waiting_to_sync"] == 0 and not status["offline"] and status["catalog"].endswith(str(port))
        assert catalog_count(tmp_path / "shared.sqlite") == 2
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=10)


@pytest.mark.asyncio
async def test_rejected_rows_are_parked_and_413_halves_the_batch(tmp_path, catalog_fingerprints):
    """The catalog behind a proxy with a small body limit (a boundary we do not own: a stand-in
    that answers 413 for more than 2 observations and 429 once, and forwards the rest)."""
    store = Store(tmp_path / "catalog.sqlite")
    runner, catalog_url = await start(store)
    seen = {"batches": [], "throttled": False}

    async def proxy(request: web.Request) -> web.Response:
        body = await request.read()
        if request.path == "/v1/observations":
            import gzip as gz

            count = len(json.loads(gz.decompress(body))["observations"])
            seen["batches"].append(count)
            if not seen["throttled"]:
                seen["throttled"] = True
                return web.json_response({"error": "slow down"}, status=429, headers={"Retry-After": "1"})
            if count > 2:
                return web.json_response({"error": "too large"}, status=413)
        headers = {k: v for k, v in request.headers.items() if k.lower() in ("authorization", "content-type", "content-encoding")}
        async with aiohttp.ClientSession() as session:
            async with session.request(request.method, catalog_url + request.path, data=body, headers=headers) as answer:
                return web.Response(body=await answer.read(), status=answer.status, content_type="application/json")

    proxy_runner, proxy_url = await serve_every_path(proxy)
    try:
        with Journal(tmp_path / "journal.sqlite") as journal:
            for index, key in enumerate([(s, "flac") for s in range(5)]):
                payload = observation(catalog_fingerprints[key])
                oid = payload.pop("id")
                if index == 2:  # written by an older, buggier agent: the catalog refuses it
                    payload["metadata"]["title"] = "/home/alice/Music/x.flac"
                identity = FileIdentity(1, index, 1, 1)
                journal.record_analysis(f"/m/{index}.flac", identity, f"k{index}", track_analysis("v"), Observation(oid, payload))
        async with journal_io(tmp_path / "journal.sqlite") as io:
            identity = Identity(tmp_path / "identity.json")
            syncer = Syncer(io, identity, proxy_url, aiohttp.ClientSession, label=proxy_url, quiet_seconds=0.1)
            loop_task = asyncio.create_task(syncer.run())
            await syncer.sync_now()
            assert syncer.status()["next_retry_at"] and "wait" in syncer.status()["last_sync_error"]
            retry_at = syncer.status()["next_retry_at"]
            while time.time() < retry_at:  # the Retry-After passes
                await asyncio.sleep(0.05)
            await syncer.sync_now()
            loop_task.cancel()
        with Journal(tmp_path / "journal.sqlite") as journal:
            counts = journal.counts()
            assert counts["outbox"] == 0 and counts["parked"] == 1
            [(reason,)] = journal._db.execute("SELECT reason FROM outbox WHERE state = 'parked'")
            assert "metadata.title" in reason and "path" in reason
            assert journal.parked() == [(journal.parked()[0][0], reason)]
            assert store.counts()["observations"] == 4
            assert max(seen["batches"][1:]) <= 5 and 2 in seen["batches"]  # halved after the 413
    finally:
        await proxy_runner.cleanup()
        await runner.cleanup()
        store.close()


class RecordingCatalog:
    """A real catalog behind a tap that keeps every request body (inflated), on its own thread."""

    def __init__(self, path) -> None:
        import threading

        self.path, self.bodies, self.down = path, [], False
        self._ready = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._main()), daemon=True)
        self._thread.start()
        self._ready.wait(30)

    async def _main(self) -> None:
        import gzip as gz

        store = Store(self.path)
        runner, catalog_url = await start(store)
        self._stop = asyncio.Event()

        async def tap(request: web.Request) -> web.Response:
            if self.down:  # "the catalog is stopped": connection-level failure is what agents see
                request.transport.close()
                return web.Response(status=503)
            body = await request.read()
            if body:
                self.bodies.append(gz.decompress(body) if request.headers.get("Content-Encoding") == "gzip" else body)
            headers = {k: v for k, v in request.headers.items()
                       if k.lower() in ("authorization", "content-type", "content-encoding")}
            async with aiohttp.ClientSession() as session:
                async with session.request(request.method, catalog_url + request.path, data=body, headers=headers) as a:
                    return web.Response(body=await a.read(), status=a.status, content_type="application/json")

        tap_runner, self.url = await serve_every_path(tap)
        self._loop = asyncio.get_running_loop()
        self._ready.set()
        await self._stop.wait()
        await tap_runner.cleanup()
        await runner.cleanup()
        store.close()

    def close(self) -> None:
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)


def test_nothing_path_like_ever_leaves_and_outages_lose_nothing(agent, tracks, tmp_path):
    catalog = RecordingCatalog(tmp_path / "shared.sqlite")
    try:
        album = agent.music / "Private Folder Name" / "Secret Album"
        album.mkdir(parents=True)
        shutil.copy(tracks[0], album / "01 my-file-name.flac")
        write_config(agent.home, agent.music, sync={"quiet_seconds": 0.5, "catalog_url": catalog.url})
        agent.start()
        agent.wait_for(lambda s: s["tracks"] == 1 and s["waiting_to_sync"] == 0 and s["last_sync_at"])

        catalog.down = True  # the catalog goes away; the library keeps changing
        shutil.copy(tracks[1], album / "02 another-name.flac")
        agent.wait_for(lambda s: s["tracks"] == 2 and s["offline"], what="the outage to show")
        result = agent.cli("forget", "--yes")  # a deletion request while offline is kept
        assert result.returncode == 0 and "as soon as the catalog can be reached" in result.stdout
        agent.stop()
        agent.start()  # and survives a restart
        assert agent.status()["deletion"].get("confirmed_at") is None
        catalog.down = False
        assert agent.cli("sync").returncode == 0
        status = agent.status()
        assert status["deletion"]["confirmed_at"] and status["contribute"] is False
        assert catalog_count(tmp_path / "shared.sqlite") == 0  # the catalog holds nothing of ours

        agent.cli("contribute", "on")  # on again: the backlog (the track added offline) goes, once
        agent.wait_for(lambda s: s["waiting_to_sync"] == 0 and not s["syncing"])
        agent.cli("sync")
        assert catalog_count(tmp_path / "shared.sqlite") == 1  # what was deleted is not re-sent
    finally:
        agent.stop()
        catalog.close()
    everything = b"\n".join(catalog.bodies).decode("utf-8", "replace")
    assert len(catalog.bodies) >= 4
    for leak in (str(agent.music), "Private Folder Name", "Secret Album", "my-file-name", "another-name", ".flac",
                 str(agent.home), "/tmp"):
        assert leak not in everything, leak


def test_gap_filling_brings_the_catalogs_consensus_to_an_untagged_copy(tmp_path, tracks):
    """Agent A has tagged files; agent B has the same audio untagged: after B syncs it holds the
    catalog's consensus beside its own analysis, and its files are left untouched."""
    from mutagen.flac import FLAC

    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "cratesense", "catalog", "serve", "--port", str(port),
                               "--db", str(tmp_path / "shared.sqlite")], stderr=subprocess.DEVNULL)
    agents = []
    try:
        for name in ("a", "b"):
            home = tmp_path / name
            music = home / "music"
            music.mkdir(parents=True)
            write_config(home, music, sync={"quiet_seconds": 0.5, "catalog_url": f"http://127.0.0.1:{port}"})
            agents.append(AgentProcess(home))
            agents[-1].music = music
        a, b = agents
        tagged = shutil.copy(tracks[0], a.music / "tagged.flac")
        tags = FLAC(tagged)
        tags["artist"], tags["title"] = "Sigur Rós", "Hoppípolla"
        tags.save()
        untagged = shutil.copy(tracks[0], b.music / "untagged.flac")
        before = untagged.read_bytes()
        time.sleep(1)
        a.start()
        a.wait_for(lambda s: s["tracks"] == 1 and s["waiting_to_sync"] == 0 and s["last_sync_at"])
        b.start()
        b.wait_for(lambda s: s["tracks"] == 1 and s["waiting_to_sync"] == 0)
        assert b.cli("sync").returncode == 0
        assert b.status()["known_to_catalog"] == 1
        out = tmp_path / "export"
        b.cli("export", "--output", str(out))
        [track] = json.loads((out / "cratesense-journal.json").read_text())["tracks"]
        consensus = track["catalog_consensus"]
        assert consensus["metadata"]["title"] == "Hoppípolla" and consensus["metadata"]["artist"] == "Sigur Rós"
        assert track["analysis"]["tags"]["title"] is None  # our own reading stays our own
        # the library shows the consensus where the file's tags are empty, marked as the catalog's
        [row] = json.loads(b.cli("tracks", "--json").stdout)["tracks"]
        assert row["title"] == "Hoppípolla" and row["artist"] == "Sigur Rós"
        assert set(row["from_catalog"]) >= {"artist", "title"} and "bpm" not in row["from_catalog"]
        table = b.cli("tracks").stdout
        assert "Hoppípolla*" in table and "from the catalog's consensus" in table
        assert untagged.read_bytes() == before  # the consensus is never written into the user's file
        b.cli("tags", "write")  # and tags written by us carry only our own analysis
        assert "ARTIST" not in {name.upper() for name in FLAC(untagged).keys()}
        assert FLAC(untagged)["BPM"]
    finally:
        for agent in agents:
            agent.stop(signal.SIGKILL)
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=10)


def queue_synthetic(journal_path, count: int, seed: int = 11) -> set[str]:
    """``count`` valid observations of different (random-walk) fingerprints, straight into a
    journal's outbox, as if that many files had been analyzed."""
    import random
    import secrets as random_ids

    import chromaprint

    from catalogkit import random_fingerprint

    rng = random.Random(seed)
    ids = set()
    with Journal(journal_path) as journal:
        for index in range(count):
            items = random_fingerprint(rng)
            payload = observation((chromaprint.encode_fingerprint(items, 1).decode(), 180.0))
            oid = random_ids.token_hex(16)
            del payload["id"]
            journal.record_analysis(f"/m/{index}.flac", FileIdentity(1, index, 1, 1), f"k{index}", track_analysis("v"),
                                    Observation(oid, payload))
            ids.add(oid)
    return ids


@pytest.mark.asyncio
async def test_turning_contribution_off_mid_sync_stops_the_very_next_batch(tmp_path):
    queue_synthetic(tmp_path / "journal.sqlite", 1200)
    store = Store(tmp_path / "catalog.sqlite")
    runner, url = await start(store)
    try:
        async with journal_io(tmp_path / "journal.sqlite") as io:
            syncer = Syncer(io, Identity(tmp_path / "identity.json"), url, aiohttp.ClientSession, label=url)
            first_batch = []

            async def write_then_flip(fn, real_write=io.write):  # the user flips the switch as the first batch lands
                result = await real_write(fn)
                if "settle" in getattr(fn, "__name__", "") and not first_batch:
                    first_batch.append(await io.read(lambda journal: 1200 - journal.counts()["outbox"]))
                    syncer.set_contribute(False)
                return result

            io.write = write_then_flip
            task = asyncio.create_task(syncer.run())
            await syncer.sync_now()
            task.cancel()
            [sent] = first_batch  # one batch (size-capped at 1 MiB), then nothing more
            for _ in range(600):  # the catalog answers first and may match the batch just after
                if store.counts()["arrivals"] == 0:
                    break
                await asyncio.sleep(0.05)
            assert 0 < sent < 1200 and store.counts()["observations"] == sent
            assert await io.read(lambda journal: journal.counts()["outbox"]) == 1200 - sent
    finally:
        await runner.cleanup()
        store.close()


def test_kill_9_mid_sync_then_restart_loses_and_duplicates_nothing(agent, tmp_path):
    journal_path = agent.home / "data" / "cratesense" / "journal.sqlite"
    journal_path.parent.mkdir(parents=True)
    ids = queue_synthetic(journal_path, 3000)
    agent.start(wait=False)
    agent.wait_for(lambda s: 0 < s["waiting_to_sync"] < 3000, what="the sync to be under way")
    agent.stop(signal.SIGKILL)
    agent.start()
    agent.wait_for(lambda s: s["waiting_to_sync"] == 0 and s["last_sync_at"], timeout=120)
    # the embedded catalog (its own thread) may still be matching what it accepted: wait for it
    agent.wait_for(lambda s: catalog_count(agent.catalog_path, "arrivals") == 0, timeout=120,
                   what="the embedded catalog to match what it accepted")
    with sqlite3.connect(agent.catalog_path) as db:
        stored = [oid for (oid,) in db.execute("SELECT id FROM observations")]
        contributors = db.execute("SELECT COUNT(*) FROM contributors").fetchone()[0]
    assert set(stored) == ids and len(stored) == 3000 and contributors == 1
    assert agent.status()["parked"] == 0


async def _known_by(url: str, contributors: int, path) -> dict:
    """``contributors`` other people who analyzed ``path`` in full and shared it."""
    import secrets as random_ids

    from catalogkit import Client
    from cratesense.analysis.model import observation_fields
    from cratesense.analysis.pipeline import analyze_file

    fields = observation_fields(analyze_file(path))
    async with aiohttp.ClientSession() as session:
        for _ in range(contributors):
            client = await Client(session, url).register()
            status, answer = await client.ingest([{"id": random_ids.token_hex(16), **fields}])
            assert status == 200 and answer["results"][0]["status"] == "accepted", answer
    return fields


async def _library_pass(tmp_path, name: str, url: str, files, *, min_contributors, contribute=True, stop_catalog=None):
    """A real library (journal, worker pool, syncer) over a folder holding ``files``: its stats
    and journal after everything is analyzed."""
    from cratesense.daemon.library import Library
    from cratesense.daemon.pool import AnalysisPool

    home = tmp_path / name
    music = home / "music"
    music.mkdir(parents=True)
    for file in files:
        shutil.copy(file, music)
    async with journal_io(home / "journal.sqlite") as io:
        with AnalysisPool(workers=1, timeout=60) as pool:
            syncer = Syncer(io, Identity(home / "identity.json"), url, aiohttp.ClientSession, label=url,
                            contribute_default=contribute)
            sync_task = asyncio.create_task(syncer.run())
            await syncer.sync_now()  # registers (and sends nothing yet)
            if stop_catalog is not None:
                await stop_catalog()
            library = await Library.assemble(io, pool, [music], secret=b"s" * 32, catalog=syncer,
                                             skip_known_min_contributors=min_contributors)
            run = asyncio.create_task(library.run())
            library.request_scan()
            await asyncio.wait_for(library.wait_idle(), 120)
            for task in (run, sync_task):
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
    return library.stats, Journal(home / "journal.sqlite")


def _analysis_of(journal: Journal, file_name: str) -> dict:
    [key] = [key for path, key in journal._db.execute("SELECT path, content_key FROM files")
             if path.endswith(b"/" + file_name.encode())]
    return msgspec.to_builtins(journal.track(key))


@pytest.mark.asyncio
async def test_a_track_the_catalog_knows_well_is_fingerprinted_but_not_described(tmp_path, tracks):
    """Gap filling's saving: three others shared tracks[0]; a new agent only fingerprints it and
    keeps the catalog's consensus, while tracks[1] (unknown) gets the full analysis."""
    async with catalog_server(tmp_path / "catalog.sqlite") as (store, url):
        shared = await _known_by(url, 3, tracks[0])
        stats, journal = await _library_pass(tmp_path, "enough", url, tracks[:2], min_contributors=3)
        with journal:
            known, unknown = _analysis_of(journal, tracks[0].name), _analysis_of(journal, tracks[1].name)
            assert stats["described_by_catalog"] == 1 and stats["analyzed"] == 2 and stats["failed"] == 0
            assert known["descriptors_from"] == "catalog" and known["descriptors"]["bpm"] is None
            assert known["fingerprint"]["chromaprint"]  # still fingerprinted locally
            assert unknown["descriptors_from"] == "local" and unknown["descriptors"]["bpm"] is not None
            consensus = json.loads(journal._db.execute("SELECT recording FROM consensus").fetchone()[0])
            assert consensus["contributors"] == 3
            assert consensus["analysis"]["bpm"] == pytest.approx(shared["analysis"]["bpm"], abs=0.01)
            assert consensus["analysis"]["key"] == shared["analysis"]["key"]
            assert journal.counts()["outbox"] == 2  # both are still contributed (ours: no descriptors)

        # fewer contributors than the setting asks for: our own full analysis
        stats, journal = await _library_pass(tmp_path, "too-few", url, tracks[:1], min_contributors=5)
        with journal:
            assert stats["described_by_catalog"] == 0
            assert _analysis_of(journal, tracks[0].name)["descriptors"]["bpm"] is not None

        # not contributing: no look-up is sent (it would carry fingerprints), so a full analysis
        stats, journal = await _library_pass(tmp_path, "private", url, tracks[:1], min_contributors=3,
                                             contribute=False)
        with journal:
            assert stats["described_by_catalog"] == 0
            assert _analysis_of(journal, tracks[0].name)["descriptors_from"] == "local"


@pytest.mark.asyncio
async def test_a_catalog_that_cannot_answer_means_a_full_analysis(tmp_path, tracks):
    store = Store(tmp_path / "catalog.sqlite")
    runner, url = await start(store)
    try:
        await _known_by(url, 3, tracks[0])
        # registered, then the catalog goes away before the look-up: nothing hangs, nothing skipped
        stats, journal = await _library_pass(tmp_path, "a", url, tracks[:1], min_contributors=3,
                                             stop_catalog=runner.cleanup)
        with journal:
            assert stats["described_by_catalog"] == 0 and stats["analyzed"] == 1
            assert _analysis_of(journal, tracks[0].name)["descriptors"]["bpm"] is not None
    finally:
        await runner.cleanup()
        store.close()


@pytest.mark.asyncio
async def test_the_agent_skips_descriptors_of_a_well_known_track_with_its_defaults(tmp_path, tracks):
    """The wiring, end to end: `cratesense run` with a shared catalog and default settings."""
    store = Store(tmp_path / "shared.sqlite")
    runner, url = await start(store)
    home = tmp_path / "home"
    music = home / "music"
    music.mkdir(parents=True)
    write_config(home, music, sync={"quiet_seconds": 0.5, "catalog_url": url})
    agent = AgentProcess(home)
    try:
        await _known_by(url, 3, tracks[2])
        await asyncio.to_thread(agent.start)
        await asyncio.to_thread(agent.wait_for, lambda s: s["last_sync_at"], 60, "the first sync")
        shutil.copy(tracks[2], music)
        status = await asyncio.to_thread(
            agent.wait_for, lambda s: s["tracks"] == 1 and s["waiting_to_sync"] == 0, 60, "analysis and sync")
        assert status["session"]["described_by_catalog"] == 1 and status["known_to_catalog"] == 1
        assert store.counts()["observations"] == 4  # ours too: fingerprint and tags, no descriptors
    finally:
        agent.stop(signal.SIGKILL)
        await runner.cleanup()
        store.close()
