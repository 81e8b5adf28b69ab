"""The taste profile: running totals in the journal equal a recomputation from scratch."""

from __future__ import annotations

import random

import msgspec
import pytest
from hypothesis import given, settings, strategies as st

from cratesense.analysis.model import Consensus, ConsensusAnalysis
from cratesense.daemon.journal import FileIdentity, Journal
from cratesense.daemon.profile import ProfileTotals, TrackTaste, taste_profile
from cratesense.daemon.trackview import COLUMNS, library_row
from trackkit import track_analysis

CAMELOTS = [f"{n}{letter}" for n in range(1, 13) for letter in "AB"]


def analysis(rng: random.Random, source: str = "local", version: str = "v"):
    embedding = tuple(rng.uniform(-1, 1) for _ in range(64)) if rng.random() < 0.8 else None
    camelot = rng.choice([None, *CAMELOTS])
    return track_analysis(version, source=source, chromaprint="AQAA", bpm=rng.choice([None, rng.uniform(50, 210)]),
                 key="A minor" if camelot else None, camelot=camelot,
                 loudness_lufs=rng.choice([None, rng.uniform(-35, 0)]), embedding=embedding)


def consensus(rng: random.Random) -> Consensus:
    return Consensus(score=1.0, recording=1, contributors=3, analysis=ConsensusAnalysis(
        bpm=rng.uniform(60, 200), key="A minor", camelot=rng.choice(CAMELOTS), loudness_lufs=rng.uniform(-20, -5)))


def assert_profiles_equal(incremental: dict, scratch: dict) -> None:
    assert incremental["track_count"] == scratch["track_count"]
    for name in ("tempo_histogram", "key_histogram", "loudness_histogram"):
        assert incremental[name] == pytest.approx(scratch[name], abs=1e-6), name
    if scratch["embedding_centroid"] is None:
        assert incremental["embedding_centroid"] is None
    else:
        assert incremental["embedding_centroid"] == pytest.approx(scratch["embedding_centroid"], abs=1e-5)


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), steps=st.integers(1, 60))
def test_running_totals_equal_a_recomputation_after_any_changes(tmp_path_factory, seed, steps):
    """Analyses, re-analyses, copies (links), failures, moves, deletions and consensus arriving
    for skipped tracks, in any order: the journal's running profile always equals the profile
    computed from the tracks on disk now, and the library view holds exactly those tracks."""
    rng = random.Random(seed)
    path = tmp_path_factory.mktemp("profile") / "journal.sqlite"
    with Journal(path) as journal:
        paths: list[str] = []
        keys: list[str] = []
        revision = journal.profile()[1]
        for step in range(steps):
            action = rng.choice(["analyze", "analyze", "link", "fail", "move", "forget", "consensus", "reanalyze"])
            identity = FileIdentity(1, step, 100, step)
            if action == "analyze" or not paths:
                key = f"k{rng.randrange(12)}"
                source = rng.choice(["local", "local", "catalog"])
                file = f"/m/{step}.flac"
                journal.record_analysis(file, identity, key, analysis(rng, source), None,
                                        consensus(rng) if source == "catalog" else None)
                paths.append(file)
                keys.append(key)
            elif action == "reanalyze":
                index = rng.randrange(len(paths))
                journal.record_analysis(paths[index], identity, keys[index], analysis(rng, version="v2"), None)
            elif action == "link":
                index = rng.randrange(len(paths))
                file = f"/m/copy-{step}.flac"
                journal.record_link(file, identity, keys[index], "v")
                paths.append(file)
                keys.append(keys[index])
            elif action == "fail":
                journal.record_failure(paths[rng.randrange(len(paths))], identity, "decode", "broken")
            elif action == "move":
                index = rng.randrange(len(paths))
                target = rng.choice([f"/m/moved-{step}.flac", *paths])  # onto another file: it is replaced
                journal.move_files([(paths[index], target)])
                if target in paths and target != paths[index]:
                    other = paths.index(target)
                    keys[other] = keys[index]
                    del paths[index], keys[index]
                else:
                    paths[index] = target
            elif action == "forget":
                index = rng.randrange(len(paths))
                journal.forget_files([paths.pop(index)])
                keys.pop(index)
            else:  # a newer consensus for some track
                journal.record_consensus([(f"k{rng.randrange(12)}", consensus(rng))])
            profile, new_revision = journal.profile()
            assert new_revision >= revision
            revision = new_revision
            assert_profiles_equal(profile, taste_profile(list(journal.tastes().values())))
            # the library view follows the same changes: a row for exactly each track on disk
            on_disk = {key for (key,) in journal._db.execute(
                "SELECT DISTINCT content_key FROM files WHERE state = 'analyzed'")}
            assert {key for (key,) in journal._db.execute("SELECT content_key FROM library")} == on_disk
            # and each row is what its track and consensus derive to now (no stale row survives)
            for key, entry in journal.entries(sorted(on_disk)).items():
                derived = library_row(key, journal.track(key), journal.consensus(key))
                assert msgspec.structs.astuple(derived) == msgspec.structs.astuple(entry)[:len(COLUMNS)], key


def test_a_skipped_track_counts_with_the_catalogs_consensus(tmp_path):
    rng = random.Random(3)
    with Journal(tmp_path / "journal.sqlite") as journal:
        skipped = track_analysis("v", source="catalog", chromaprint="AQAA")
        found = consensus(rng)
        journal.record_analysis("/m/a.flac", FileIdentity(1, 1, 1, 1), "k", skipped, None, found)
        profile, _ = journal.profile()
        assert profile["track_count"] == 1 and sum(profile["tempo_histogram"]) == pytest.approx(1.0)
        expected = taste_profile([TrackTaste(found.analysis.bpm, found.analysis.camelot,
                                             found.analysis.loudness_lufs, None)])
        assert profile == expected


def test_an_unchanged_library_keeps_its_revision_and_a_change_moves_it(tmp_path):
    rng = random.Random(5)
    with Journal(tmp_path / "journal.sqlite") as journal:
        journal.record_analysis("/m/a.flac", FileIdentity(1, 1, 1, 1), "k", analysis(rng), None)
        _, revision = journal.profile()
        journal.move_files([(b"/m/a.flac", b"/m/b.flac")])  # a rename changes nothing the profile shows
        journal.record_link("/m/c.flac", FileIdentity(1, 2, 1, 1), "k", "v")  # a copy: the same track
        assert journal.profile()[1] == revision
        journal.forget_files([b"/m/b.flac", b"/m/c.flac"])
        profile, after = journal.profile()
        assert after > revision and profile["track_count"] == 0 and profile["embedding_centroid"] is None


def test_totals_round_trip_and_an_empty_library_has_a_zero_profile():
    totals = ProfileTotals()
    track = TrackTaste(128.0, "8A", -9.0, [0.6, 0.8])
    totals.add(track)
    again = ProfileTotals.from_json(totals.to_json())
    assert again.profile() == totals.profile() and again.profile()["embedding_centroid"] == [0.6, 0.8]
    again.add(track, -1)
    assert again.profile() == taste_profile([])
