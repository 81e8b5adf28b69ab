"""Unit tests where the agent's decisions live: the analysis queue's bookkeeping, the
reconciler's plan of a full scan, and the known-track policy. Real folders and files; the only
stand-in is the catalog a policy asks (a ``known_tracks.Catalog``), to count its requests."""

from __future__ import annotations

import asyncio
import os
import threading
from collections import Counter

import pytest

from cratesense.analysis.model import Consensus, ConsensusAnalysis
from cratesense.daemon.analysis_queue import AnalysisQueue, native_results
from cratesense.daemon.filejob import Phase
from cratesense.daemon.known_tracks import KnownTracks, known_well
from cratesense.daemon.reconciler import ScanProgress, compare_with_disk
from cratesense.daemon.scan import walk
from trackkit import track_analysis

# --- the analysis queue's bookkeeping --------------------------------------------------------


def queue() -> AnalysisQueue:
    """A queue whose loop is not running: what it holds and hands out next, nothing more."""
    return AnalysisQueue(None, None, None, KnownTracks(), None, Counter())  # type: ignore[arg-type]


def test_files_are_taken_oldest_first_and_a_file_the_catalog_did_not_know_goes_first():
    q = queue()
    q.add([b"/m/a.flac", b"/m/b.flac", b"/m/c.flac"])
    q.add([b"/m/a.flac"])  # asked again while queued: still one job
    assert q.queued == 3 and q.phases() == {"queued": 3}
    first = q._next()
    assert first.path == b"/m/a.flac"
    first.phase = Phase.FINGERPRINTING
    q._describe_next(first)  # unknown to the catalog: analyzed in full before the other files
    assert q._next() is first and first.describe
    assert q._next().path == b"/m/b.flac"


def test_a_file_asked_for_while_in_a_workers_hands_is_read_again_after():
    q = queue()
    q.add([b"/m/a.flac"])
    job = q._next()
    job.phase = Phase.ANALYZING
    q.add([b"/m/a.flac"])
    assert job.again and q.analyzing == 1 and q.queued == 0
    q._finish(job)  # it changed while it was read: queued again, once
    assert q.queued == 1 and q._next() is job and not job.again


def test_a_deleted_file_leaves_the_queue_or_is_dropped_when_its_analysis_ends():
    q = queue()
    q.add([b"/m/a.flac", b"/m/b.flac", b"/m/c.flac"])
    leader, copy = q._next(), q._next()
    leader.phase, leader.content_key = Phase.ANALYZING, "k"
    q._leaders["k"] = leader
    copy.phase = Phase.WAITING_FOR_COPY
    leader.copies.append(copy)
    q.discard([b"/m/c.flac", b"/m/b.flac", b"/m/a.flac"])
    assert b"/m/c.flac" not in q._jobs  # queued: gone at once
    assert leader.copies == [] and b"/m/b.flac" not in q._jobs  # a waiting copy: unhooked from its leader
    assert leader.gone and b"/m/a.flac" in q._jobs  # in a worker's hands: checked when it ends
    q._finish(leader)
    assert q.empty and q.completed == 3


def test_an_upgrade_keeps_the_native_stages_it_did_not_change_only_from_a_full_analysis():
    from cratesense.analysis.constants import STAGE_VERSIONS

    def version(**stages) -> str:
        return ".".join(f"{stage[0]}{number}" for stage, number in dict(STAGE_VERSIONS, **stages).items())

    measured = dict(loudness_lufs=-9.5, loudness_range=5.0, true_peak_dbtp=-0.4, replaygain_db=-8.5,
                    embedding=(0.5,) * 64, bpm=124.0, cutoff_hz=16_800.0, genres=("house",), moods=("danceable",),
                    sound_tags=("synth",), tag_strengths={"house": 0.9})
    loudness = {"loudness_lufs": -9.5, "loudness_range": 5.0, "true_peak_dbtp": -0.4, "replaygain_db": -8.5}
    words = {"genres": ("house",), "moods": ("danceable",), "sound_tags": ("synth",), "tag_strengths": {"house": 0.9}}
    assert native_results(track_analysis(version(), **measured)) == {
        **loudness, "embedding": (0.5,) * 64, "cutoff_hz": 16_800.0, **words}
    # an earlier embedding: loudness, cutoff and the words are kept, the embedding is made again
    assert native_results(track_analysis(version(embedding=2), **measured)) == {**loudness, "cutoff_hz": 16_800.0, **words}
    assert native_results(track_analysis(version(cutoff=0, model=0), **measured)) == {**loudness, "embedding": (0.5,) * 64}
    # the model could not load: its words and embedding are missing, not made: tried again
    unmodelled = dict(measured, embedding=None, genres=None, moods=None, sound_tags=None, tag_strengths=None,
                      model_error="the sound model file musicnn-mtt.onnx is missing")
    assert native_results(track_analysis(version(), **unmodelled)) == {**loudness, "cutoff_hz": 16_800.0}
    assert native_results(track_analysis(version(), bpm=124.0)) is None  # a fingerprint-only pass: read in full
    assert native_results(None) is None


# --- the reconciler's plan of a full scan ----------------------------------------------------


def scan(folders, known, stale=(), permission=()):
    return compare_with_disk([os.fsencode(f) for f in folders], (dict(known), list(stale), list(permission)),
                             ScanProgress(), threading.Event())


def test_a_full_scan_plans_new_changed_moved_and_deleted_files(tmp_path):
    music = tmp_path / "music"
    (music / "a").mkdir(parents=True)
    for name in ("kept.flac", "changed.flac", "moved.flac", "deleted.flac"):
        (music / "a" / name).write_bytes(b"x" * 10)
    known = dict(walk([music]))
    (music / "a" / "changed.flac").write_bytes(b"y" * 20)
    os.rename(music / "a" / "moved.flac", music / "a" / "renamed.flac")
    os.unlink(music / "a" / "deleted.flac")
    (music / "a" / "new.mp3").write_bytes(b"z")
    (music / "a" / "notes.txt").write_bytes(b"not audio")
    kept = os.fsencode(music / "a" / "kept.flac")
    result = scan([music], known, stale=[kept])
    a = os.fsencode(music / "a")
    assert result.plan.new == [a + b"/new.mp3"] and result.plan.changed == [a + b"/changed.flac"]
    assert result.plan.moved == [(a + b"/moved.flac", a + b"/renamed.flac")]
    assert result.plan.deleted == [a + b"/deleted.flac"] and result.plan.unchanged == 1
    assert result.stale == [kept] and result.missing == {}


def test_a_missing_or_emptied_music_folder_keeps_its_tracks(tmp_path):
    music, drive = tmp_path / "music", tmp_path / "drive"
    music.mkdir()
    drive.mkdir()
    (music / "song.flac").write_bytes(b"x")
    (drive / "set.flac").write_bytes(b"x")
    known = dict(walk([music, drive]))
    os.unlink(drive / "set.flac")  # an unmounted drive leaves its mount point empty
    os.rename(music, tmp_path / "elsewhere")  # a folder that is not there at all
    result = scan([music, drive], known)
    assert result.plan.deleted == [] and result.plan.moved == []
    assert set(result.missing) == {str(music), str(drive)}
    assert "missing" in result.missing[str(music)] and "empty but held tracks" in result.missing[str(drive)]


def test_a_file_that_failed_for_permission_is_tried_again_once_readable(tmp_path):
    music = tmp_path / "music"
    music.mkdir()
    (music / "locked.flac").write_bytes(b"x")
    known = dict(walk([music]))
    locked = os.fsencode(music / "locked.flac")
    assert scan([music], known, permission=[locked]).readable_again == [locked]
    os.unlink(music / "locked.flac")
    assert scan([music], known, permission=[locked]).readable_again == []  # deleted: nothing to retry


# --- the known-track policy ----------------------------------------------------------------


def consensus(contributors: int, **analysis) -> Consensus:
    return Consensus(score=0.9, recording=7, contributors=contributors, analysis=ConsensusAnalysis(**analysis))


def test_a_track_is_known_well_with_enough_contributors_and_every_descriptor():
    full = {"bpm": 124.0, "key": "A minor", "camelot": "8A", "loudness_lufs": -8.0}
    assert known_well(consensus(3, **full), 3)
    assert not known_well(consensus(2, **full), 3)
    assert not known_well(consensus(5, **{**full, "key": None}), 3)
    assert not known_well(None, 3)


class CountingCatalog:
    """Answers look-ups as a catalog would (a ``known_tracks.Catalog``), counting the requests."""

    def __init__(self, fail: bool = False) -> None:
        self.requests: list[int] = []
        self.fail = fail

    def can_look_up(self) -> bool:
        return True

    async def look_up(self, fingerprints):
        self.requests.append(len(fingerprints))
        if self.fail:
            raise ConnectionError("the catalog is unreachable")
        return [consensus(4, bpm=float(len(fp)), key="A minor", camelot="8A", loudness_lufs=-9.0)
                for fp, _ in fingerprints]


@pytest.mark.asyncio
async def test_verdicts_asked_at_once_go_in_batches_and_a_failing_catalog_means_full_analysis():
    catalog = CountingCatalog()
    policy = KnownTracks(catalog, min_contributors=3)
    assert policy.fingerprint_first() and not KnownTracks(catalog).fingerprint_first()
    verdicts = await asyncio.gather(*(policy.verdict("A" * (i + 1), 180.0) for i in range(250)))
    assert catalog.requests == [100, 100, 50]  # MAX_LOOKUP per request, in the order asked
    assert [v.analysis.bpm for v in verdicts] == [float(i + 1) for i in range(250)]
    assert all(policy.known_well(v) for v in verdicts)
    failing = KnownTracks(CountingCatalog(fail=True), min_contributors=3)
    assert await asyncio.gather(*(failing.verdict("A", 180.0) for _ in range(3))) == [None, None, None]
    await policy.close()
    await failing.close()


def test_the_control_api_routes_every_dj_command():
    from cratesense.daemon.api import DJ_COMMANDS
    from cratesense.dj.usecases import READ_COMMANDS

    assert set(DJ_COMMANDS) == set(READ_COMMANDS)


# --- what an upgrade sends again -----------------------------------------------------------


@pytest.mark.asyncio
async def test_an_upgrade_of_a_stage_off_the_wire_sends_nothing_again(tmp_path):
    """Bars, phrases or cues never leave the machine: an upgrade of such a stage re-analyzes the
    track but queues no observation (it would be the one already sent); an upgrade of a stage
    on the wire queues the new one, under a new id."""
    import msgspec

    from audiogen import encode, fingerprintable_track
    from cratesense.analysis.constants import STAGE_VERSIONS, wire_version
    from cratesense.analysis.model import observation_fields
    from cratesense.analysis.pipeline import analyze_file
    from cratesense.daemon.analysis_queue import identify
    from cratesense.daemon.filejob import FileJob
    from cratesense.daemon.journal_io import JournalIO
    from cratesense.daemon.pool import Outcome
    from cratesense.daemon.recorder import Recorder

    path = encode(fingerprintable_track(3, seconds=24), 44100, tmp_path / "song.flac")
    track = analyze_file(path)

    def version(**changed: int) -> str:
        return ".".join(f"{stage[0]}{changed.get(stage, number)}" for stage, number in STAGE_VERSIONS.items())

    io = JournalIO(tmp_path / "journal.sqlite")
    await io.open()
    try:
        recorder = Recorder(io, b"secret" * 4, Counter(), lambda: None)

        async def record(analyzer_version: str) -> list[str]:
            job = FileJob(os.fsencode(path))
            job.identity, job.content_key = identify(job.path)
            analyzed = msgspec.structs.replace(track, analyzer_version=analyzer_version)
            assert await recorder.analysis(job, Outcome(str(path), analysis=analyzed,
                                                        observation=observation_fields(analyzed)))
            pending = await io.read(lambda journal: journal.pending(10))
            await io.write(lambda journal: journal.acknowledge([seq for seq, _, _ in pending]))
            return [payload["analysis"]["analyzer_version"] for _, _, payload in pending]

        first = version()
        assert await record(first) == [wire_version(first)]
        assert "d" not in wire_version(first).replace(".", " ").split()  # bars are not on the wire
        assert await record(version(downbeat=STAGE_VERSIONS["downbeat"] + 1)) == []  # nothing again
        newer = version(tempo=STAGE_VERSIONS["tempo"] + 1)
        assert await record(newer) == [wire_version(newer)] != [wire_version(first)]  # tempo is on the wire
    finally:
        await io.close()


def test_a_tag_plan_reads_its_yes_or_no_options_as_words_too(tmp_path):
    """The control API takes a query's "false" as no: it must never replace the genre and mood a
    user wrote in their files (bool("false") is True)."""
    from cratesense.daemon.journal import Journal
    from cratesense.dj.collection import Collection
    from cratesense.dj.usecases import tag_plan
    from cratesense.errors import QueryError

    with Journal(tmp_path / "journal.sqlite") as journal:
        collection = Collection(journal)
        plan = tag_plan(collection, {"replace_words": "false", "dry_run": "0", "include_uncertain": "no"})
        assert (plan.replace_words, plan.dry_run, plan.include_uncertain) == (False, False, False)
        plan = tag_plan(collection, {"replace_words": True, "dry_run": "true"})
        assert (plan.replace_words, plan.dry_run) == (True, True)
        with pytest.raises(QueryError, match="replace_words"):
            tag_plan(collection, {"replace_words": "perhaps"})
