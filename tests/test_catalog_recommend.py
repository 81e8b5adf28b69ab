"""The recommender (catalog/recommend.py) over both backends: it knows taste (a community of
DJs with taste clusters: what it recommends is from their clusters far more often than chance
or the most-held recordings), it never recommends what you hold (duplicates by fingerprint
included), and it never tells who holds what."""

from __future__ import annotations

import json
import random
import re

import aiohttp
import chromaprint
import msgspec
import pytest

from catalogkit import Client, catalog_server, observation, random_fingerprint
from communitykit import SyntheticCommunity
from cratesense.catalog import contract, recommend
from cratesense.catalog.store import Store


def decoded(body: dict) -> contract.Observation:
    return msgspec.json.decode(msgspec.json.encode(body), type=contract.Observation)


def build(store: Store, community: SyntheticCommunity, seed: int = 1) -> tuple[list[str], dict[int, int]]:
    """The community in the catalog: each DJ's observations of what it holds (one random
    fingerprint per recording) and its profile. Returns the contributor ids and recording id
    -> the community's recording number."""
    rng = random.Random(seed)
    prints = [(chromaprint.encode_fingerprint(random_fingerprint(rng), 1).decode(), 180.0)
              for _ in community.cluster_of]
    djs = []
    for dj, held in enumerate(community.holdings):
        contributor = store.register()[0]
        djs.append(contributor)
        store.ingest(contributor, [decoded(observation(prints[i], title=f"R{i}")) for i in sorted(held)])
        store.put_profile(contributor, msgspec.convert(community.profile(dj), contract.Profile))
    with store.backend.reading() as db:
        numbers = {recording: int(title[1:]) for recording, title in db.execute("SELECT id, title FROM recordings")}
    return djs, numbers


def precision(items: list[int], dj: int, community: SyntheticCommunity) -> float:
    return sum(community.relevant(dj, i) for i in items) / len(items) if items else 0.0


def test_recommendations_follow_taste_not_popularity(catalog_db):
    community = SyntheticCommunity(7, 12, clusters=4, per_cluster=14, hits=4, holdings=(7, 12))
    store = Store(catalog_db)
    try:
        djs, numbers = build(store, community)
        ours, by_popularity, by_chance, top = [], [], [], 5
        for dj, contributor in enumerate(djs):
            found = recommend.recommend(store, contributor, limit=top)
            items = [numbers[r["recording"]] for r in found]
            assert not set(items) & community.holdings[dj]  # never what you hold
            holders = {i: sum(i in held for held in community.holdings) for i in range(len(community.cluster_of))}
            assert all(holders[i] >= recommend.MIN_HOLDERS and r["contributors"] >= 3 for i, r in zip(items, found))
            eligible = [i for i in holders if holders[i] >= 3 and i not in community.holdings[dj]]
            popular = sorted(eligible, key=lambda i: (-holders[i], i))[:top]
            ours.append(precision(items, dj, community))
            by_popularity.append(precision(popular, dj, community))
            by_chance.append(precision(eligible, dj, community))
            for r in found:  # the count is of every holder (never fewer than 3), then of those near you
                assert re.fullmatch(rf"held by {r['contributors']} DJs( whose libraries overlap yours by \d+ %|"
                                    r", \d+ of them near you \((its library overlaps|their libraries overlap) "
                                    r"yours by \d+ %\))", r["reason"]), r["reason"]
        mean = lambda values: sum(values) / len(values)  # noqa: E731
        assert mean(ours) >= 2 * mean(by_chance) and mean(ours) > mean(by_popularity) + 0.2, \
            (mean(ours), mean(by_popularity), mean(by_chance))
    finally:
        store.close()


def test_a_dj_who_does_not_contribute_is_known_by_profile_alone(catalog_db):
    community = SyntheticCommunity(11, 13, clusters=3, per_cluster=14, hits=3, holdings=(7, 12))
    store = Store(catalog_db)
    try:
        djs, numbers = build(store, community)
        # the 13th DJ keeps its library to itself: its observations are erased, its profile stays
        listener = djs[-1]
        store.delete_contributor_observations(listener)
        community.holdings[-1], held = set(), community.holdings[-1]
        found = recommend.recommend(store, listener, limit=5)
        assert found and all("taste profiles are" in r["reason"] or "taste profile is" in r["reason"] for r in found)
        relevant = sum(community.cluster_of[numbers[r["recording"]]] in community.taste[-1] for r in found)
        eligible = [i for i in range(len(community.cluster_of))
                    if sum(i in h for h in community.holdings) >= 3]
        chance = sum(community.cluster_of[i] in community.taste[-1] for i in eligible) / len(eligible)
        assert relevant / len(found) > chance, (relevant, chance, held)
    finally:
        store.close()


def test_never_a_recording_you_hold_nor_its_duplicate_and_never_one_of_fewer_than_3(catalog_db):
    rng = random.Random(3)
    store = Store(catalog_db)
    try:
        mine = random_fingerprint(rng)
        # the same music the catalog keeps apart: half the items alike, half not (score ~0.5:
        # below the attach threshold, above the look-up threshold)
        twin = mine[: len(mine) // 2] + random_fingerprint(rng)[len(mine) // 2 :]
        rare, popular = random_fingerprint(rng), random_fingerprint(rng)
        as_print = lambda items: (chromaprint.encode_fingerprint(items, 1).decode(), 180.0)  # noqa: E731
        me = store.register()[0]
        store.ingest(me, [decoded(observation(as_print(mine), title="Mine"))])
        for n in range(4):  # four DJs like me hold my track's twin and a popular one; one holds a rare one
            other = store.register()[0]
            held = [as_print(mine), as_print(twin), as_print(popular)] + ([as_print(rare)] if n == 0 else [])
            store.ingest(other, [decoded(observation(p, title=t)) for p, t in zip(held, ("Mine", "Twin", "Hit", "Rare"))])
        assert store.counts()["recordings"] == 4  # the twin is a recording of its own
        found = recommend.recommend(store, me)
        assert [r["metadata"]["title"] for r in found] == ["Hit"]  # not Mine, not its Twin, not Rare (1 holder)
        # 4 DJs hold it, the 3 nearest are listened to
        assert found[0]["reason"] == "held by 4 DJs, 3 of them near you (their libraries overlap yours by 100 %)"
    finally:
        store.close()


@pytest.mark.asyncio
async def test_the_answer_names_no_other_contributor(catalog_db):
    community = SyntheticCommunity(5, 6, clusters=2, per_cluster=8, hits=2, holdings=(5, 8))
    async with catalog_server(catalog_db) as (store, url), aiohttp.ClientSession() as session:
        djs, _ = build(store, community)
        newcomer = await Client(session, url).register()  # holds nothing, no profile yet: nothing to say
        status, answer = await newcomer.call("GET", "/v1/recommendations")
        assert status == 200 and answer == {"recommendations": []}
        for dj in djs:
            found = recommend.recommend(store, dj)
            msgspec.convert({"recommendations": found}, contract.Recommendations)  # the API's shape
            text = json.dumps(found)
            assert not any(other in text for other in djs + [newcomer.id])


def test_a_reason_counts_every_holder_and_then_those_near_you():
    """"held by 1 DJ" read as if one DJ held it, which never happens: the count is of every
    holder (at least 3), then of those among your neighbours, with their average."""
    near = [recommend.Neighbour(0.5, 0.29, 0.8), recommend.Neighbour(0.4, 0.31, 0.6)]
    assert recommend._reason(near[:1], 5, True) == "held by 5 DJs, 1 of them near you (its library overlaps yours by 29 %)"
    assert recommend._reason(near, 5, True) == "held by 5 DJs, 2 of them near you (their libraries overlap yours by 30 %)"
    assert recommend._reason(near, 5, False) == "held by 5 DJs, 2 of them near you (their taste profiles are 70 % like yours)"
    assert recommend._reason(near + near[:1], 3, True) == "held by 3 DJs whose libraries overlap yours by 30 %"
    assert recommend._reason(near[:1], 3, False).endswith("(its taste profile is 80 % like yours)")


def test_profile_centroids_are_compared_only_within_one_embedding_version():
    """Version 3 of the embedding (the sound model) is another space than version 2: an old
    agent's centroid, number for number the same as mine, says nothing of its taste; its
    histograms still do."""
    from cratesense.catalog.contract import EMBEDDING_LENGTH, PROFILE_LENGTH

    rng = random.Random(5)
    histograms = [rng.random() for _ in range(PROFILE_LENGTH - EMBEDDING_LENGTH)]
    others = [rng.random() for _ in range(PROFILE_LENGTH - EMBEDDING_LENGTH)]
    mine, elsewhere = ([rng.gauss(0, 1) for _ in range(EMBEDDING_LENGTH)] for _ in range(2))
    profiles = {"me": histograms + mine, "same": others + mine, "old": others + mine, "far": others + elsewhere,
                "old far": others + elsewhere}
    versions = {"me": 3, "same": 3, "old": 2, "far": 3, "old far": 2}
    parts = recommend._centred_parts(profiles, versions)
    alike = lambda who: recommend._profile_similarity(parts["me"], parts[who], versions[who] == 3)  # noqa: E731
    histograms_only = recommend._profile_similarity(parts["me"][:-1], parts["old"][:-1])
    assert alike("same") > alike("far") and alike("same") > alike("old")
    assert alike("old") == pytest.approx(histograms_only) == pytest.approx(alike("old far"))
    # the centroids are centred among their own version: the two old ones are opposite there
    assert recommend._profile_similarity(parts["old"][-1:], parts["old far"][-1:]) == pytest.approx(-1.0)
