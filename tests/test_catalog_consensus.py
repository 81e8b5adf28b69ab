"""The stored consensus of a recording is ``consensus_of`` its observations — when it is
derived at once (small recordings, erasures, a recording grown by an eighth) and after a
debounced refresh (a popular recording) — on random histories of observations and erasures,
over both backends; and a popular recording costs O(1) derivation work per new observation."""

from __future__ import annotations

import itertools
import random
import secrets
import time

import chromaprint
import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from catalogkit import observation, query, random_fingerprint
from cratesense.analysis.constants import ANALYZER_VERSION
from cratesense.catalog import contract
from cratesense.catalog.store import CONSENSUS_FIELDS, Observed, Store, consensus_of

FINGERPRINT_DURATION = 180.0
VALUES = {
    "artist": st.sampled_from(["Artist", "Other", "Ärtist", None]),
    "title": st.sampled_from(["Title", "Title (Edit)", "b", "B", None]),
    "album": st.sampled_from(["Album", None]),
    "isrc": st.sampled_from(["USAAA0000001", "GBBBB0000002", None]),
    "catalog_number": st.sampled_from(["CAT 1", "CAT 2", None]),
    "key": st.sampled_from(["A minor", "C major", None]),
    "camelot": st.sampled_from(["8A", "8B", None]),
    "duration": st.sampled_from([178.0, 180.0, 183.5, None]),
    "bpm": st.sampled_from([64.0, 127.0, 128.0, 256.0, 90.0, 172.5, None]),
    "loudness_lufs": st.sampled_from([-8.0, -9.5, -14.25, None]),
    "genres": st.sampled_from([["house", "electronic"], ["house"], ["techno", "house", "dance"], None]),
    "moods": st.sampled_from([["energetic"], ["calm", "sad"], None]),
}
fields = st.fixed_dictionaries(VALUES)
# a history: batches of observations (contributor number, fields), and erasures of a contributor
events = st.lists(st.one_of(
    st.tuples(st.just("add"), st.lists(st.tuples(st.integers(0, 4), fields), min_size=1, max_size=4)),
    st.tuples(st.just("erase"), st.integers(0, 4)),
), min_size=1, max_size=12)


def decoded(body: dict) -> contract.Observation:
    return msgspec.json.decode(msgspec.json.encode(body), type=contract.Observation)


def model_row(contributor: str, values: dict, received_at: float = 0.0) -> Observed:
    """The row ``consensus_of`` reads for one observation (duration: the tag's, else the fingerprint's)."""
    duration = values["duration"] if values["duration"] is not None else FINGERPRINT_DURATION
    return Observed(contributor, values["artist"], values["title"], values["album"], values["isrc"], values["catalog_number"],
            values["key"], values["camelot"], duration, values["bpm"], values["loudness_lufs"], ANALYZER_VERSION, received_at,
            ",".join(values["genres"]) if values.get("genres") else None,
            ",".join(values["moods"]) if values.get("moods") else None)


def test_genres_and_moods_are_what_most_contributors_heard():
    rows = [model_row(f"c{number:031d}", {**dict.fromkeys(VALUES), "genres": genres, "moods": moods})
            for number, (genres, moods) in enumerate([(["house", "electronic"], ["energetic"]),
                                                      (["house", "dance"], ["energetic", "sexy"]),
                                                      (["techno"], ["calm"])])]
    consensus = consensus_of(rows)
    assert consensus["genres"] == "house" and consensus["moods"] == "energetic"
    two = consensus_of(rows[:2])  # named by half: house by both, then dance and electronic by one each
    assert two["genres"] == "house,dance,electronic"


def test_a_contributors_words_are_those_of_its_newest_observation():
    """A contributor that sent the recording again (a re-analysis, another encode) names the
    words of its newest observation only: what it heard before does not vote beside it."""
    words = {**dict.fromkeys(VALUES)}
    a, b = f"c{1:031d}", f"c{2:031d}"
    rows = [model_row(a, {**words, "genres": ["techno"], "moods": ["dark"]}, received_at=1.0),
            model_row(a, {**words, "genres": ["house"], "moods": None}, received_at=2.0),
            model_row(b, {**words, "genres": ["house"], "moods": ["calm"]}, received_at=1.5)]
    consensus = consensus_of(rows)
    assert consensus["genres"] == "house"  # the union would give "house,techno" (techno: one of two)
    assert consensus["moods"] == "calm,dark"  # a's newest names no mood: its last one that did counts
    # two in one batch (the same moment): one of them, the same whichever order the rows come in
    tied = [model_row(a, {**words, "genres": ["techno"]}, received_at=3.0),
            model_row(a, {**words, "genres": ["dance"]}, received_at=3.0)]
    assert consensus_of(tied)["genres"] == consensus_of(tied[::-1])["genres"] == "techno"


def test_a_re_sent_recording_replaces_its_contributors_words_in_the_store(catalog_db):
    """The same on both engines, through accept and settle: the stored consensus counts each
    contributor's newest words."""
    store = Store(catalog_db)
    try:
        fingerprint = (chromaprint.encode_fingerprint(random_fingerprint(random.Random(11)), 1).decode(),
                       FINGERPRINT_DURATION)
        a, b = store.register()[0], store.register()[0]
        for contributor, genres in ((a, ["techno"]), (b, ["house"]), (a, ["house"])):
            store.accept(contributor, [decoded(observation(fingerprint, id=secrets.token_hex(16), genres=genres))])
            while store.settle():
                pass
        [state] = stored(store).values()
        assert state["contributors"] == 2 and state["genres"] == "house"
    finally:
        store.close()


def stored(store: Store) -> dict[int, dict]:
    """recording id -> its stored consensus (and whether it is stale)."""
    columns = (*CONSENSUS_FIELDS, "contributors")
    rows = query(store, f"SELECT id, {', '.join(columns)}, stale_since FROM recordings")
    return {row[0]: {**dict(zip(columns, row[1:-1])), "stale": row[-1] is not None} for row in rows}


@pytest.fixture
def consensus_store(catalog_db):
    # exact_below=3: the debounced path from the fourth observation on, so short histories use it
    store = Store(catalog_db, exact_below=3)
    yield store
    store.close()


@settings(max_examples=50, deadline=None, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(history=events)
def test_stored_consensus_is_consensus_of_the_observations(consensus_store, history):
    store = consensus_store
    items = random_fingerprint(random.Random(secrets.randbits(64)))  # a recording of its own per example
    fingerprint = (chromaprint.encode_fingerprint(items, 1).decode(), FINGERPRINT_DURATION)
    contributors = [store.register()[0] for _ in range(5)]
    held: list[tuple] = []  # what the catalog should hold: rows for consensus_of
    sent = itertools.count(1)  # the order batches arrive in (the store's received_at orders them alike)
    for kind, argument in history:
        if kind == "add":
            by_contributor: dict[int, list] = {}
            for number, values in argument:
                by_contributor.setdefault(number, []).append(values)
            for number, batch in by_contributor.items():
                bodies = [observation(fingerprint, **values) for values in batch]
                assert [r["status"] for r in store.accept(contributors[number], [decoded(b) for b in bodies])] == \
                    ["accepted"] * len(batch)
                at = next(sent)
                held += [model_row(contributors[number], values, received_at=at) for values in batch]
            while store.settle():
                pass
        else:
            store.delete_contributor_observations(contributors[argument])
            held = [row for row in held if row.contributor != contributors[argument]]
        ours = stored(store)
        mine = _recordings_of(store, contributors)
        if not held:
            assert mine == set()
            continue
        [recording] = mine
        state = ours[recording]
        if not state["stale"]:  # derived at once: exact now
            assert _consensus(state) == consensus_of(held)
    store.refresh(now=time.time() + 10**6)  # the debounce has run out
    if held:
        [recording] = _recordings_of(store, contributors)
        state = stored(store)[recording]
        assert not state["stale"] and _consensus(state) == consensus_of(held)


def _recordings_of(store: Store, contributors: list[str]) -> set[int]:
    placeholders = ", ".join("?" * len(contributors))
    return {row[0] for row in query(store, f"SELECT DISTINCT recording FROM observations WHERE contributor IN ({placeholders})",
                                    contributors)}


def _consensus(state: dict) -> dict:
    return {name: state[name] for name in (*CONSENSUS_FIELDS, "contributors")}


def test_a_popular_recording_costs_o1_derivation_work_per_observation(catalog_db):
    """1,000 contributors send the same recording in 200 small slices. Re-deriving at every
    change would read 100,500 observations; the debounced consensus reads a bounded number
    per observation, and is still exactly ``consensus_of`` once refreshed."""
    store = Store(catalog_db)
    try:
        rng = random.Random(5)
        items = random_fingerprint(rng)
        fingerprint = (chromaprint.encode_fingerprint(items, 1).decode(), FINGERPRINT_DURATION)
        held = []
        for _ in range(200):
            contributors = [store.register()[0] for _ in range(5)]
            for contributor in contributors:
                values = {"artist": rng.choice(["A", "B"]), "title": "T", "album": None, "isrc": None,
                          "catalog_number": None, "key": rng.choice(["A minor", "C major"]), "camelot": "8A",
                          "duration": rng.choice([179.0, 180.0, 181.0]), "bpm": rng.choice([64.0, 128.0, 127.5]),
                          "loudness_lufs": rng.choice([-8.0, -9.0]), "genres": rng.choice([["house"], ["techno", "house"]])}
                store.accept(contributor, [decoded(observation(fingerprint, **values))])
                held.append(model_row(contributor, values))
            while store.settle():
                pass
        assert store.counts()["recordings"] == 1 and store.counts()["observations"] == 1000
        naive = sum(5 * slice_number for slice_number in range(1, 201))
        assert naive == 100_500
        assert store.derived_rows <= 12 * 1000, store.derived_rows  # linear, not quadratic
        store.refresh(now=time.time() + 10**6)
        [state] = stored(store).values()
        assert _consensus(state) == consensus_of(held)
    finally:
        store.close()


def test_a_stale_consensus_is_refreshed_after_its_debounce(catalog_db):
    """A recording with many observations marked stale is re-derived by ``refresh`` only once
    its debounce (proportional to its size) has run out."""
    store = Store(catalog_db, exact_below=2, debounce_seconds=64.0)  # 1 s per observation
    try:
        fingerprint = (chromaprint.encode_fingerprint(random_fingerprint(random.Random(3)), 1).decode(),
                       FINGERPRINT_DURATION)
        ids = itertools.count()
        for title in ("Old", "Old", "Old", "Old", "Old", "Old", "Old", "Old", "New"):
            contributor = store.register()[0]
            store.accept(contributor, [decoded(observation(fingerprint, id=f"{next(ids):032x}", title=title))])
            while store.settle():
                pass
        # a tenth: 10 observations, 9 at the last derivation (less than an eighth more): stale
        store.accept(store.register()[0], [decoded(observation(fingerprint, id=secrets.token_hex(16), title="New"))])
        while store.settle():
            pass
        [state] = stored(store).values()
        assert state["stale"] and state["contributors"] == 9
        assert store.refresh(now=time.time() + 1) == 0  # 9 observations: 9 s of debounce
        assert store.refresh(now=time.time() + 10) == 1
        [state] = stored(store).values()
        assert not state["stale"] and state["contributors"] == 10 and state["title"] == "Old"
    finally:
        store.close()


def test_text_crosses_to_either_engine_exactly(catalog_db):
    """Metadata goes to PostgreSQL inside array literals: quotes, backslashes, braces, commas,
    the word NULL, spaces at the ends and non-Latin letters come back as they were sent."""
    store = Store(catalog_db)
    try:
        fingerprint = (chromaprint.encode_fingerprint(random_fingerprint(random.Random(12)), 1).decode(),
                       FINGERPRINT_DURATION)
        title = ' He said "NULL", {a,b} \\ back\\\\slash ÄÖ 東京 '
        contributor = store.register()[0]
        store.accept(contributor, [decoded(observation(fingerprint, title=title, artist="NULL", album="{}"))])
        while store.settle():
            pass
        [state] = stored(store).values()
        assert (state["title"], state["artist"], state["album"]) == (title, "NULL", "{}")
    finally:
        store.close()
