"""A large erasure answers once the data is gone and leaves the fingerprints' index terms to a
background sweep: in between, nothing can match an erased fingerprint, and afterwards the
index holds nothing of it — on both backends."""

from __future__ import annotations

import random

import chromaprint
import msgspec

from catalogkit import observation, query, random_fingerprint
from cratesense.catalog import contract
from cratesense.catalog.store import Store


def test_erased_fingerprints_are_swept_from_the_index_and_never_match_meanwhile(catalog_db):
    store = Store(catalog_db, sweep_inline=2)  # more than 2 fingerprints: swept later
    try:
        rng = random.Random(4)
        tracks = [random_fingerprint(rng) for _ in range(6)]
        encoded = [(chromaprint.encode_fingerprint(items, 1).decode(), 180.0) for items in tracks]
        alice, bob = store.register()[0], store.register()[0]

        def send(contributor, fingerprints):
            bodies = [msgspec.json.decode(msgspec.json.encode(observation(f)), type=contract.Observation)
                      for f in fingerprints]
            assert [r["status"] for r in store.ingest(contributor, bodies)] == ["accepted"] * len(bodies)

        send(alice, encoded[:5])
        send(bob, encoded[5:])
        postings = query(store, "SELECT COUNT(*) FROM fingerprint_terms")[0][0]
        assert store.delete_contributor_observations(alice) == 5
        assert query(store, "SELECT COUNT(*) FROM erased_fingerprints") == [(5,)]
        assert query(store, "SELECT COUNT(*) FROM fingerprint_terms")[0][0] == postings  # not swept yet
        # meanwhile: an erased fingerprint is never a hit, and the same track sent again by
        # someone else is a recording of its own, found at once
        assert store.lookup([(tracks[0], 180.0)]) == [None]
        send(bob, encoded[:1])
        [hit] = store.lookup([(tracks[0], 180.0)])
        assert hit is not None and hit["contributors"] == 1
        assert store.counts()["recordings"] == 2
        slices = 0
        while store.sweep():
            slices += 1
        assert slices == Store.SWEEP_SLICES  # one pass over the index, by term range
        assert query(store, "SELECT COUNT(*) FROM erased_fingerprints") == [(0,)]
        assert query(store, "SELECT COUNT(*) FROM fingerprint_terms t WHERE NOT EXISTS "
                            "(SELECT 1 FROM fingerprints f WHERE f.id = t.fingerprint)") == [(0,)]
        assert query(store, "SELECT COUNT(*) FROM fingerprint_terms")[0][0] == 2 * postings // 6
        [hit] = store.lookup([(tracks[0], 180.0)])
        assert hit is not None and store.lookup([(tracks[5], 180.0)])[0] is not None
        # a few erased fingerprints take their terms with them at once
        assert store.delete_contributor_observations(bob) == 2
        assert query(store, "SELECT COUNT(*) FROM fingerprint_terms") == [(0,)] and store.sweep() == 0
    finally:
        store.close()
