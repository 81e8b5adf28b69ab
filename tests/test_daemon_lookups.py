"""Look-ups that follow the catalog (#24), from the agent's side: the backoff of tracks the
change feed does not follow, a catalog that answers badly or not at all, a match below the
look-up threshold, registration before the first scan."""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import signal
import subprocess
import sys

import aiohttp
import msgspec
import pytest

from agentproc import AgentProcess, write_config
from catalogkit import catalog_server, observation
from communitykit import CatalogTap
from trackkit import track_analysis
from cratesense.analysis.model import Consensus
from cratesense.catalog import contract
from cratesense.daemon.identity import Identity
from cratesense.daemon.journal import FileIdentity, Journal, Observation, lookup_backoff
from cratesense.daemon.journal_io import JournalIO
from cratesense.daemon.recorder import observation_id
from cratesense.daemon.sync import Syncer

HOUR = 3600.0


def test_the_backoff_is_the_next_sync_then_hours_then_a_day():
    assert [lookup_backoff(n) for n in range(1, 8)] == [0.0, HOUR, 2 * HOUR, 4 * HOUR, 8 * HOUR, 16 * HOUR, 24 * HOUR]
    assert lookup_backoff(50) == 24 * HOUR


def _track(journal: Journal, number: int, fingerprint: tuple[str, float], *, send_with: bytes | None = None) -> str:
    """A track on disk with its fingerprint and no tags (and, ``send_with`` an install secret,
    its observation queued under the id the agent derives)."""
    key = f"k{number}"
    chromaprint, duration = fingerprint
    analysis = track_analysis("v", chromaprint=chromaprint, duration=duration)
    queued = None
    if send_with is not None:
        payload = observation(fingerprint)
        del payload["id"]
        queued = Observation(observation_id(send_with, key, "v"), payload)
    journal.record_analysis(f"/m/{number}.flac", FileIdentity(1, number, 1, 1), key, analysis, queued)
    return key


def test_tracks_the_feed_does_not_follow_are_due_by_their_backoff(tmp_path, catalog_fingerprints):
    with Journal(tmp_path / "journal.sqlite") as journal:
        unknown = _track(journal, 1, catalog_fingerprints[(1, "flac")])
        followed = _track(journal, 2, catalog_fingerprints[(2, "flac")])
        now = 1_000_000.0
        assert {row[0] for row in journal.lookup_due(100, now)} == {unknown, followed}  # never asked
        journal.record_consensus([(followed, Consensus(recording=7, contributors=2))], followed=True)
        for attempt, wait in ((1, 0.0), (2, HOUR), (3, 2 * HOUR)):
            journal.record_consensus([(unknown, None)])
            [(due_at, attempts)] = journal._db.execute(
                "SELECT next_lookup_at, attempts FROM consensus WHERE content_key = ?", (unknown,))
            assert attempts == attempt
            asked_at = journal._db.execute("SELECT looked_up_at FROM consensus WHERE content_key = ?", (unknown,)).fetchone()[0]
            assert due_at == pytest.approx(asked_at + wait)
            assert [row[0] for row in journal.lookup_due(100, due_at)] == [unknown]  # never the followed one
            assert journal.lookup_due(100, due_at - 1) == []
            assert journal.lookup_due(100, due_at, asked_before=asked_at) == []  # one sync asks once
        # a look-up of a followed track that finds the same recording keeps it followed
        journal.record_consensus([(followed, Consensus(score=0.9, recording=7, contributors=3))])
        assert journal.lookup_due(100, float("inf")) == [journal.lookup_due(100, float("inf"))[0]]
        assert journal._db.execute("SELECT next_lookup_at FROM consensus WHERE content_key = ?",
                                   (followed,)).fetchone()[0] is None
        journal.forget_followed()  # registered anew: everything is asked again
        assert {row[0] for row in journal.lookup_due(100, now)} == {unknown, followed}


@contextlib.asynccontextmanager
async def syncer_over(tmp_path, url: str):
    io = JournalIO(tmp_path / "journal.sqlite")
    await io.open()
    syncer = Syncer(io, Identity(tmp_path / "identity.json"), url, aiohttp.ClientSession, label=url, quiet_seconds=0.1)
    task = asyncio.create_task(syncer.run())
    try:
        yield syncer
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await io.close()


def _consensus(path) -> list[tuple]:
    with Journal(path) as journal:
        return journal._db.execute("SELECT * FROM consensus ORDER BY content_key").fetchall()


def _decoded(body: dict) -> contract.Observation:
    return msgspec.json.decode(msgspec.json.encode(body), type=contract.Observation)


GARBAGE = {
    "not JSON": lambda answer: (200, b"<html>maintenance</html>"),
    "a list": lambda answer: (200, b"[1, 2, 3]"),
    "too few results": lambda answer: (200, json.dumps({"results": answer["results"][:1]}).encode()),
    "a wrong type": lambda answer: (200, json.dumps({"results": [{"score": "high"} for _ in answer["results"]]}).encode()),
    "a title of a megabyte": lambda answer: (200, json.dumps({"results": [
        {**result, "metadata": {**result["metadata"], "title": "x" * 1_000_000}} if result else None
        for result in answer["results"]]}).encode()),
    # (a field the agent does not know is not garbage: a newer catalog's; test_sync_across_versions)
    "a required field missing": lambda answer: (200, json.dumps({"results": [
        {k: v for k, v in result.items() if k != "contributors"} if result else None
        for result in answer["results"]]}).encode()),
}


@pytest.mark.asyncio
async def test_a_catalog_answering_garbage_or_nothing_changes_nothing_and_is_asked_again(tmp_path, catalog_fingerprints):
    journal_path = tmp_path / "journal.sqlite"
    with Journal(journal_path) as journal:  # analyzed, not contributed: only a look-up can fill them
        known = _track(journal, 0, catalog_fingerprints[(0, "mp3")])
        _track(journal, 1, catalog_fingerprints[(1, "flac")])
    async with catalog_server(tmp_path / "catalog.sqlite") as (store, url):
        store.ingest(store.register()[0], [_decoded(observation(catalog_fingerprints[(0, "flac")], artist="Air",
                                                                title="La Femme d'Argent"))])
        tap = CatalogTap(url)
        try:
            async with syncer_over(tmp_path, tap.url) as syncer:
                await syncer.sync_now()  # registers and looks both up once
                with Journal(journal_path) as journal:
                    journal.forget_followed()  # as if never asked: every bad answer below must change nothing
                    journal._db.execute("DELETE FROM consensus")
                before = _consensus(journal_path)
                for name, bad in GARBAGE.items():
                    tap.answer_badly["/v1/lookup"] = bad
                    await syncer.sync_now()
                    status = syncer.status()
                    assert status["last_sync_error"] and "look-up" in status["last_sync_error"], name
                    assert status["next_retry_at"] is not None, name
                    assert _consensus(journal_path) == before, name
                tap.answer_badly.clear()
                tap.down = True  # no answer at all
                await syncer.sync_now()
                assert syncer.status()["offline"] and _consensus(journal_path) == before
                tap.down = False
                # a match just below the look-up threshold fills nothing
                tap.answer_badly["/v1/lookup"] = lambda answer: (200, json.dumps({"results": [
                    {**result, "score": 0.39} if result else None for result in answer["results"]]}).encode())
                await syncer.sync_now()
                with Journal(journal_path) as journal:
                    rows = dict(journal._db.execute("SELECT content_key, recording FROM consensus"))
                    assert json.loads(rows[known]) is None
                    assert journal._db.execute("SELECT title FROM library WHERE content_key = ?", (known,)).fetchone() == (None,)
                tap.answer_badly.clear()
                await syncer.sync_now()  # healed: asked again at once (``cratesense sync``), filled
                with Journal(journal_path) as journal:
                    assert journal._db.execute("SELECT artist, title, filled FROM library WHERE content_key = ?",
                                               (known,)).fetchone() == ("Air", "La Femme d'Argent", "artist,title")
                assert syncer.status()["last_sync_error"] is None
        finally:
            tap.close()


@pytest.mark.asyncio
async def test_a_garbled_change_feed_keeps_the_cursor_and_the_journal(tmp_path, catalog_fingerprints):
    journal_path = tmp_path / "journal.sqlite"
    with Journal(journal_path) as journal:
        mine = _track(journal, 0, catalog_fingerprints[(0, "mp3")], send_with=Identity(tmp_path / "identity.json").secret)
    async with catalog_server(tmp_path / "catalog.sqlite") as (store, url):
        tap = CatalogTap(url)
        try:
            async with syncer_over(tmp_path, tap.url) as syncer:
                await syncer.sync_now()  # our observation goes; the feed follows it
                with Journal(journal_path) as journal:
                    cursor = journal.setting("catalog_changes")
                    assert journal.lookup_due(10, float("inf")) == []  # followed: never looked up again
                assert cursor["change"] > 0
                store.ingest(store.register()[0], [_decoded(observation(catalog_fingerprints[(0, "flac")],
                                                                        artist="Air", title="Sexy Boy"))])
                before = _consensus(journal_path)
                for bad in (lambda a: (200, b"{}"),
                            lambda a: (200, json.dumps({**a, "cursor": {"change": -5, "recording": None}}).encode()),
                            lambda a: (200, json.dumps({**a, "changes": [{**c, "observations": ["../../etc"]}
                                                                          for c in a["changes"]]}).encode())):
                    tap.answer_badly["/v1/changes"] = bad
                    await syncer.sync_now()
                    assert "change feed" in syncer.status()["last_sync_error"]
                    assert _consensus(journal_path) == before
                    with Journal(journal_path) as journal:
                        assert journal.setting("catalog_changes") == cursor
                tap.answer_badly.clear()
                await syncer.sync_now()
                with Journal(journal_path) as journal:
                    assert journal._db.execute("SELECT title FROM library WHERE content_key = ?", (mine,)).fetchone() == \
                        ("Sexy Boy",)
                    assert journal.setting("catalog_changes")["change"] > cursor["change"]
        finally:
            tap.close()


def test_a_first_scan_registers_first_so_known_tracks_skip_their_descriptors(tmp_path, tracks):
    """``cratesense scan`` (one pass, no agent running) against a shared catalog that knows a
    track from three contributors: the track is only fingerprinted."""
    import asyncio as aio

    from test_daemon_sync import _known_by

    database = tmp_path / "shared.sqlite"
    port = __import__("communitykit").free_port()
    server = subprocess.Popen([sys.executable, "-m", "cratesense", "catalog", "serve", "--port", str(port),
                               "--db", str(database)], stderr=subprocess.DEVNULL)
    try:
        from test_daemon_sync import wait_for_port

        wait_for_port(port)
        url = f"http://127.0.0.1:{port}"
        aio.run(_known_by(url, 3, tracks[4]))
        home = tmp_path / "home"
        music = home / "music"
        music.mkdir(parents=True)
        shutil.copy(tracks[4], music)
        write_config(home, music, sync={"catalog_url": url})
        agent = AgentProcess(home)
        result = agent.cli("scan", timeout=300)
        assert result.returncode == 0, result.stderr
        with agent.journal() as db:
            [(source,)] = db.execute("SELECT json_extract(analysis, '$.descriptors_from') FROM tracks")
        assert source == "catalog"
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=10)


def test_the_library_row_says_who_stands_behind_the_consensus_and_where_it_disagrees():
    from cratesense.analysis.model import ConsensusAnalysis, ConsensusMetadata, Tags
    from cratesense.daemon.trackview import library_row

    ours = track_analysis(bpm=128.0, key="A minor", camelot="8A", tags=Tags(title="Mine"))

    def consensus(djs: int, **analysis) -> Consensus:
        return Consensus(score=1.0, recording=1, contributors=djs, metadata=ConsensusMetadata(title="Theirs", artist="X"),
                         analysis=ConsensusAnalysis(**analysis))

    row = library_row("k", ours, consensus(7, bpm=128.3, key="E minor", camelot="9A"))
    assert (row.backed_by, row.catalog_camelot, row.catalog_bpm) == (7, "9A", None)  # 0.3 BPM apart: the same tempo
    assert row.title == "Mine" and row.artist == "X" and row.filled == "artist"  # the file's own tag wins
    row = library_row("k", ours, consensus(3, bpm=64.0, key="A minor", camelot="8A"))
    assert (row.catalog_camelot, row.catalog_bpm) == (None, 64.0)  # half time is a disagreement a DJ hears
    row = library_row("k", ours, consensus(1, bpm=100.0, camelot="1B"))  # the consensus is ours alone: no dispute
    assert (row.backed_by, row.catalog_camelot, row.catalog_bpm) == (1, None, None)
    skipped = track_analysis(source="catalog")  # descriptors skipped for the consensus: filled, not disputed
    row = library_row("k", skipped, consensus(5, bpm=126.0, key="E minor", camelot="9A"))
    assert (row.bpm, row.camelot, row.catalog_camelot, row.catalog_bpm) == (126.0, "9A", None, None)
    assert set(row.filled.split(",")) == {"artist", "title", "bpm", "key"} and row.backed_by == 5
    assert library_row("k", ours, None).backed_by is None
