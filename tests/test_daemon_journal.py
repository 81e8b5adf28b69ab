"""The journal: a real SQLite file, real processes killed mid-write."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time

import pytest

from trackkit import track_analysis
from unprivileged import without_bypass
from cratesense.daemon.journal import SCHEMA_VERSION, FileIdentity, Journal, JournalError, Observation

IDENTITY = FileIdentity(device=1, inode=2, size=3, mtime_ns=4)


def test_created_in_wal_mode_and_migrated_once(tmp_path):
    path = tmp_path / "data" / "journal.sqlite"
    with Journal(path) as journal:
        assert journal.schema_version == SCHEMA_VERSION >= 2
    with Journal(path) as journal:  # reopening applies nothing twice
        assert journal.schema_version == SCHEMA_VERSION
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert db.execute("SELECT COUNT(*) FROM migrations").fetchone()[0] == SCHEMA_VERSION


def test_subtree_queries_moves_and_stale_files(tmp_path):
    with Journal(tmp_path / "j.sqlite") as journal:
        for path in (b"/m/a/x.flac", b"/m/a/y.flac", b"/m/ab/z.flac", b"/m/a\xff/w.flac", b"/n/v.flac"):
            journal.record_analysis(path, IDENTITY, path.decode("latin-1"), track_analysis("v1"), None)
        assert set(journal.files_under([b"/m/a"])) == {b"/m/a/x.flac", b"/m/a/y.flac"}  # not /m/ab, /m/a\xff
        assert set(journal.files_under([b"/m/a/x.flac"])) == {b"/m/a/x.flac"}
        journal.move_files([(b"/m/a/x.flac", b"/n/x.flac")])
        assert journal.identity(b"/n/x.flac") == IDENTITY and journal.identity(b"/m/a/x.flac") is None
        journal.record_failure(b"/n/bad.mp3", IDENTITY, "decode", "garbage", "v1")
        journal.record_analysis(b"/n/new.flac", IDENTITY, "k2", track_analysis("v2"), None)
        assert b"/n/new.flac" not in journal.stale_files("v2")
        assert {b"/n/bad.mp3", b"/n/x.flac"} <= set(journal.stale_files("v2"))
        assert journal.stale_files("v1") == [b"/n/new.flac"]
        journal.forget_files([b"/n/new.flac"])
        assert journal.identity(b"/n/new.flac") is None


def test_analysis_track_and_observation_are_written_together(tmp_path):
    with Journal(tmp_path / "j.sqlite") as journal:
        observation = Observation("obs-1", {"metadata": {"title": "AC/DC"}})
        journal.record_analysis("/music/a.flac", IDENTITY, "key-1", track_analysis("v1", bpm=128.0), observation)
        journal.record_analysis("/music/a.flac", IDENTITY, "key-1", track_analysis("v1", bpm=128.0), observation)
        assert journal.identity("/music/a.flac") == IDENTITY
        assert journal.track("key-1") == track_analysis("v1", bpm=128.0)
        assert journal.counts() == {"files": 1, "tracks": 1, "outbox": 1, "parked": 0, "failed": 0}
        [(seq, observation_id, payload)] = journal.pending(10)
        assert observation_id == "obs-1" and payload["metadata"]["title"] == "AC/DC"
        journal.park(seq, "rejected: metadata.title looks like a path")
        assert journal.pending(10) == [] and journal.counts()["parked"] == 1


def test_acknowledged_rows_leave_the_outbox(tmp_path):
    with Journal(tmp_path / "j.sqlite") as journal:
        for index in range(5):
            journal.record_analysis(f"/m/{index}.mp3", IDENTITY, f"k{index}", track_analysis("v1"), Observation(f"o{index}", {}))
        rows = journal.pending(3)
        assert [row[1] for row in rows] == ["o0", "o1", "o2"]
        journal.acknowledge([row[0] for row in rows])
        assert [row[1] for row in journal.pending(10)] == ["o3", "o4"]


def test_failures_and_non_utf8_paths(tmp_path):
    odd_path = b"/music/caf\xe9.mp3"  # Latin-1 bytes: not valid UTF-8
    with Journal(tmp_path / "j.sqlite") as journal:
        journal.record_failure(odd_path, IDENTITY, "decode", "not a recognizable audio file")
        assert journal.failures() == [(odd_path, "decode", "not a recognizable audio file")]
        assert journal.identity(odd_path) == IDENTITY
        journal.forget_files([odd_path])
        assert journal.failures() == []


def test_settings_round_trip(tmp_path):
    with Journal(tmp_path / "j.sqlite") as journal:
        assert journal.setting("contribute", True) is True
        journal.set_setting("contribute", False)
    with Journal(tmp_path / "j.sqlite") as journal:
        assert journal.setting("contribute") is False


_WRITER = """
import sys
from cratesense.analysis.model import AudioFacts, Fingerprint, Tags, TrackAnalysis
from cratesense.daemon.journal import FileIdentity, Journal, Observation
journal = Journal(sys.argv[1])
audio = AudioFacts(container="flac", codec="flac", sample_rate=44100, channels=2, duration=60.0, fully_decoded=True)
print("ready", flush=True)
index = 0
while True:
    identity = FileIdentity(1, index, 100, index)
    analysis = TrackAnalysis(fingerprint=Fingerprint(chromaprint="", duration=60.0 + index), tags=Tags(), audio=audio,
                             analyzer_version="v1")
    journal.record_analysis(f"/music/{index}.flac", identity, f"key-{index}", analysis, Observation(f"obs-{index}", {"n": index}))
    index += 1
"""


def test_kill_9_mid_write_leaves_a_consistent_journal(tmp_path):
    path = tmp_path / "j.sqlite"
    for _ in range(3):
        writer = subprocess.Popen([sys.executable, "-c", _WRITER, str(path)], stdout=subprocess.PIPE, text=True)
        assert writer.stdout.readline().strip() == "ready"
        time.sleep(0.4)
        os.kill(writer.pid, signal.SIGKILL)
        writer.wait()
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    files = db.execute("SELECT COUNT(*) FROM files").fetchone()[0]
    assert files > 10
    # Every file has its track and exactly one outbox row, and nothing else exists.
    assert db.execute("SELECT COUNT(*) FROM tracks").fetchone()[0] == files
    assert db.execute("SELECT COUNT(*) FROM outbox").fetchone()[0] == files
    orphans = db.execute(
        "SELECT COUNT(*) FROM files f LEFT JOIN tracks t ON t.content_key = f.content_key WHERE t.content_key IS NULL"
    ).fetchone()[0]
    assert orphans == 0


def test_damaged_journal_says_what_to_do(tmp_path):
    path = tmp_path / "j.sqlite"
    path.write_bytes(b"this is not a database at all" * 100)
    with pytest.raises(JournalError, match="damaged; move it aside"):
        Journal(path)


def test_locked_journal_names_the_likely_cause(tmp_path):
    path = tmp_path / "j.sqlite"
    Journal(path).close()
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        journal = Journal(path, busy_timeout=0.1)
        with pytest.raises(JournalError, match="another CrateSense agent"):
            journal.record_failure("/m/x.mp3", IDENTITY, "decode", "x")
    finally:
        holder.execute("ROLLBACK")


def test_unwritable_location_is_explained(tmp_path):
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o500)
    # in a process that cannot bypass permissions (root in CI can): see unprivileged.py
    check = (f"from cratesense.daemon.journal import Journal, JournalError\n"
             f"try:\n    Journal({str(folder / 'sub' / 'j.sqlite')!r})\nexcept JournalError as exc:\n    print('refused:', exc)")
    result = subprocess.run(without_bypass([sys.executable, "-c", check]), capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and result.stdout.startswith("refused:") and "ro" in result.stdout, result.stderr


def test_a_read_only_command_refuses_a_journal_of_another_schema_and_changes_nothing(tmp_path):
    """`cratesense failures` reads the journal read-only: never migrating it under a running
    agent of another version. A newer schema: it says so (exit 2) and leaves the file as it was."""
    import hashlib
    import os
    import sqlite3
    import subprocess
    import sys

    path = tmp_path / "data" / "cratesense" / "journal.sqlite"
    with Journal(path) as journal:
        journal.record_failure(b"/m/x.flac", FileIdentity(1, 1, 1, 1), "decode", "not audio")
        journal._db.execute("INSERT INTO migrations VALUES (?, 0)", (SCHEMA_VERSION + 1,))  # a newer agent's
    before = hashlib.sha256(path.read_bytes()).hexdigest(), path.stat().st_mtime_ns
    env = {**os.environ, "XDG_DATA_HOME": str(tmp_path / "data")}

    def failures() -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "cratesense", "failures"], env=env, capture_output=True,
                              text=True, timeout=60)

    result = failures()
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "newer CrateSense" in result.stderr and "nothing was changed" in result.stderr
    assert (hashlib.sha256(path.read_bytes()).hexdigest(), path.stat().st_mtime_ns) == before
    with sqlite3.connect(path) as db:  # the same journal at this version's schema reads fine
        db.execute("DELETE FROM migrations WHERE version = ?", (SCHEMA_VERSION + 1,))
    result = failures()
    assert result.returncode == 0 and "/m/x.flac: decode: not audio" in result.stdout


def test_an_older_journal_gains_how_sure_each_key_is(tmp_path):
    """Migration 12 (#29): a journal from before it reads its library rows again on open, and
    each gains our analysis' key strength (none where there is no key of ours)."""
    path = tmp_path / "j.sqlite"
    with Journal(path) as journal:
        journal.record_analysis("/music/a.flac", IDENTITY, "key-1", track_analysis(
            bpm=124.0, key="A minor", camelot="8A", key_strength=0.41), Observation("o1", {}))
        journal.record_analysis("/music/b.flac", IDENTITY._replace(inode=3), "key-2", track_analysis(), Observation("o2", {}))
    db = sqlite3.connect(path)  # as the agent before migration 12 left it
    with db:
        db.execute("ALTER TABLE library DROP COLUMN key_strength")
        db.execute("DELETE FROM migrations WHERE version = 12")
    db.close()
    with Journal(path) as journal:
        rows = {entry.content_key: entry for entry in journal.entries(["key-1", "key-2"]).values()}
        assert rows["key-1"].key_strength == 0.41
        assert rows["key-2"].key_strength is None
