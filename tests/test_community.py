"""Better together, for real (#24): a small community of real agent processes around one real
catalog (``cratesense catalog serve``), each holder with its own encode of the same music.

A DJ whose copy of a track is untagged gets the artist and title at the first sync after another
DJ's tagged copy reached the catalog (not a week later), never a value for a track nobody else
knows, and a library where nothing changed costs one small request per sync."""

from __future__ import annotations

import json
import signal
import time

import pytest
from mutagen.flac import FLAC

from agentproc import AgentProcess, write_config
from audiogen import encode, fingerprintable_track
from communitykit import CatalogProcess, CatalogTap, token_of

SR = 44100


@pytest.fixture
def community(tmp_path):
    catalog = CatalogProcess(tmp_path / "catalog.sqlite", tmp_path / "catalog.log")
    tap = CatalogTap(catalog.url)
    agents: list[AgentProcess] = []

    def agent(name: str) -> AgentProcess:
        home = tmp_path / name
        music = home / "music"
        music.mkdir(parents=True)
        write_config(home, music, sync={"quiet_seconds": 0.5, "catalog_url": tap.url})
        process = AgentProcess(home)
        process.music = music
        agents.append(process)
        return process

    yield tap, agent
    for process in agents:
        process.stop(signal.SIGKILL)
    tap.close()
    catalog.stop()


def library(agent: AgentProcess) -> dict[str, dict]:
    """The agent's library rows by file name."""
    rows = json.loads(agent.cli("tracks", "--json").stdout)["tracks"]
    return {row["path"].rsplit("/", 1)[-1]: row for row in rows}


def synced(agent: AgentProcess, tracks: int, after: float = 0.0) -> dict:
    """Wait until ``tracks`` are analyzed and a sync that started after ``after`` has sent them all."""
    return agent.wait_for(lambda s: s["tracks"] == tracks and s["queued"] + s["analyzing"] == 0
                          and s["waiting_to_sync"] == 0 and not s["syncing"] and (s["last_sync_at"] or 0) > after,
                          180, f"{tracks} tracks analyzed and synced")


def test_a_gap_is_filled_at_the_first_sync_after_another_djs_tagged_copy_reaches_the_catalog(tmp_path, community):
    tap, agent = community
    source = tmp_path / "source"
    source.mkdir()
    anthem, b_side, later = (fingerprintable_track(i, seconds=24) for i in (0, 1, 2))
    bob, carol, alice = agent("bob"), agent("carol"), agent("alice")
    # each holder has its own encode; only Alice's copy of the anthem is tagged
    encode(anthem, SR, bob.music / "untitled 01.mp3", bitrate=192_000)
    encode(b_side, SR, bob.music / "untitled 02.flac")
    encode(anthem, SR, carol.music / "track01.opus", bitrate=96_000)
    tagged = encode(anthem, SR, alice.music / "anthem.flac")
    tags = FLAC(tagged)
    tags["artist"], tags["title"] = "Sigur Rós", "Hoppípolla"
    tags.save()

    for holder, count in ((bob, 2), (carol, 1)):  # the untagged copies reach the catalog first
        holder.start()
        synced(holder, count)
    assert library(bob)["untitled 01.mp3"]["title"] is None

    arrived = time.time()
    alice.start()
    synced(alice, 1)

    # Bob's next sync (after a new file, as any change brings one) is the first after Alice's copy
    encode(later, SR, bob.music / "untitled 03.flac")
    synced(bob, 3, after=arrived)
    rows = library(bob)
    anthem_row = rows["untitled 01.mp3"]
    assert anthem_row["title"] == "Hoppípolla" and anthem_row["artist"] == "Sigur Rós"
    assert {"artist", "title"} <= set(anthem_row["from_catalog"])
    for name in ("untitled 02.flac", "untitled 03.flac"):  # nobody else holds these: nothing is made up
        assert rows[name]["title"] is None and rows[name]["artist"] is None, rows[name]
        assert not {"artist", "title"} & set(rows[name]["from_catalog"] or ())

    # Carol asks at once
    assert carol.cli("sync").returncode == 0
    row = library(carol)["track01.opus"]
    assert row["title"] == "Hoppípolla" and {"artist", "title"} <= set(row["from_catalog"])

    # a steady library: each sync costs one small request (the change feed), no look-up
    token = token_of(bob.home, tap.url)
    for _ in range(2):
        before = tap.requests(token)
        assert bob.cli("sync").returncode == 0
        spent = tap.requests(token) - before
        assert spent == {"GET /v1/changes": 1}, spent


def test_the_consensus_shows_where_the_dj_looks(tmp_path, community):
    """How many DJs stand behind a value the catalog filled, and where the consensus disagrees
    with the file's own analysis ("key 8A here; 4 DJs say 9A"): in `tracks`, `next` and the page."""
    import asyncio
    import secrets
    import shutil

    import aiohttp

    from catalogkit import Client
    from cratesense.analysis.keys import parse_key
    from cratesense.analysis.model import observation_fields
    from cratesense.analysis.pipeline import analyze_file

    tap, agent = community
    dj = agent("dj")
    untagged = encode(fingerprintable_track(3, seconds=24), SR, dj.music / "untagged.flac")
    doubtful = encode(fingerprintable_track(4, seconds=24), SR, dj.music / "doubtful.flac")
    dj.start()
    synced(dj, 2)
    ours = library(dj)["doubtful.flac"]
    theirs_key = parse_key(f"{int(ours['camelot'][:-1]) % 12 + 1}{ours['camelot'][-1]}")  # one step round the wheel
    theirs_bpm = round(ours["bpm"] + 4.0, 1)

    async def three_djs() -> None:
        named = {**(fields := observation_fields(analyze_file(untagged)))}
        named["metadata"] = {**fields["metadata"], "artist": "Sigur Rós", "title": "Hoppípolla"}
        other = observation_fields(analyze_file(doubtful))
        other["analysis"] = {**other["analysis"], "key": theirs_key.name, "camelot": theirs_key.camelot,
                             "bpm": theirs_bpm}
        async with aiohttp.ClientSession() as session:
            for _ in range(3):
                client = await Client(session, tap.url).register()
                status, answer = await client.ingest([{"id": secrets.token_hex(16), **named},
                                                      {"id": secrets.token_hex(16), **other}])
                assert status == 200, answer

    asyncio.run(three_djs())
    assert dj.cli("sync").returncode == 0
    rows = library(dj)
    filled, disputed = rows["untagged.flac"], rows["doubtful.flac"]
    assert filled["title"] == "Hoppípolla" and "title" in filled["from_catalog"] and filled["consensus_djs"] == 4
    assert filled["consensus_disagrees"] == {}
    assert disputed["consensus_djs"] == 4 and disputed["key"] == ours["key"] and disputed["bpm"] == ours["bpm"]
    assert disputed["consensus_disagrees"] == {"key": theirs_key.camelot, "bpm": theirs_bpm}
    note = f"key {ours['key']} here; 4 DJs say {theirs_key.camelot}; {ours['bpm']:.1f} BPM here; 4 DJs say {theirs_bpm:.1f}"
    table = dj.cli("tracks").stdout
    assert note in table and "* 4 DJs" in table and "Hoppípolla*" in table and f"{ours['key']}!" in table, table
    answer = json.loads(dj.cli("next", "doubtful", "--json").stdout)
    assert answer["track"]["consensus_disagrees"] == {"key": theirs_key.camelot, "bpm": theirs_bpm}
    assert note in dj.cli("next", "doubtful").stdout
    musical = json.loads(dj.cli("tracks", "--json", "--search", "doubtful").stdout)  # in the user's notation
    assert musical["tracks"][0]["consensus_disagrees"]["key"] == theirs_key.camelot

    if shutil.which("chromium") is None or shutil.which("chromedriver") is None:
        return  # the page's part needs Debian's chromium (scripts/setup.sh test installs it)
    from selenium.webdriver.common.by import By

    from test_web import browser, page_url, wait

    downloads = tmp_path / "downloads"
    downloads.mkdir()
    driver = browser(downloads)
    try:
        driver.get(page_url(dj))
        rows_on_page = lambda: driver.find_elements(By.CSS_SELECTOR, "#tracks tbody tr")  # noqa: E731
        wait(lambda: len(rows_on_page()) == 2, what="the library")
        by_title = {row.find_elements(By.TAG_NAME, "td")[1].text: row for row in rows_on_page()}
        title_cell = by_title["Hoppípolla*"].find_elements(By.TAG_NAME, "td")[1]
        assert title_cell.get_attribute("class") == "catalog" and "4 DJs" in title_cell.get_attribute("title")
        doubtful_row = next(row for title, row in by_title.items() if title != "Hoppípolla*")
        key_cell = doubtful_row.find_elements(By.TAG_NAME, "td")[3]
        assert key_cell.get_attribute("class") == "disputed" and key_cell.text == f"{ours['key']} !"
        assert f"4 DJs say {theirs_key.camelot}" in key_cell.get_attribute("title")
        doubtful_row.click()
        wait(lambda: "4 DJs say" in driver.find_element(By.ID, "track-facts").text, what="the track's facts")
    finally:
        driver.quit()


def test_a_dj_who_does_not_contribute_is_never_recommended_what_it_holds(tmp_path, community):
    """The catalog knows only the taste profile of a DJ who does not contribute, so it cannot
    leave out what that DJ holds: the agent does, by the fingerprint sketch each recommendation
    carries (another encode of the same recording included)."""
    import asyncio
    import secrets

    import aiohttp

    from catalogkit import Client
    from cratesense.analysis.model import observation_fields
    from cratesense.analysis.pipeline import analyze_file
    from cratesense.daemon.journal import Journal

    tap, agent = community
    private = agent("private")
    write_config(private.home, private.music, sync={"quiet_seconds": 0.5, "catalog_url": tap.url, "contribute": False})
    held, wanted = fingerprintable_track(0, seconds=24), fingerprintable_track(1, seconds=24)
    encode(held, SR, private.music / "mine.flac")
    private.start()
    private.wait_for(lambda s: s["tracks"] == 1 and s["queued"] + s["analyzing"] == 0, 120, "the analysis")
    assert private.cli("sync").returncode == 0
    with Journal(private.journal_path) as journal:
        profile, _ = journal.profile()
    theirs = tmp_path / "theirs"
    theirs.mkdir()
    fields = [{**observation_fields(analyze_file(encode(audio, SR, theirs / name, bitrate=128_000))),
               "metadata": None} for audio, name in ((held, "held.mp3"), (wanted, "wanted.mp3"))]
    for item, title in zip(fields, ("Mine", "Wanted")):
        item["metadata"] = {"artist": "Them", "title": title, "album": None, "isrc": None, "catalog_number": None,
                            "duration": 24.0}

    async def three_djs_like_me() -> None:
        async with aiohttp.ClientSession() as session:
            for _ in range(3):
                client = await Client(session, tap.url).register()
                assert (await client.call("PUT", "/v1/profile", profile))[0] == 200
                status, answer = await client.ingest([{"id": secrets.token_hex(16), **item} for item in fields])
                assert status == 200, answer

    asyncio.run(three_djs_like_me())
    answer = json.loads(private.cli("recommendations", "--json").stdout)
    assert [r["metadata"]["title"] for r in answer["recommendations"]] == ["Wanted"], answer
    assert "taste profiles are" in answer["recommendations"][0]["reason"]
