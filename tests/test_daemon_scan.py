"""The reconciliation scan over real folders: renames, moves, edits, deletions."""

from __future__ import annotations

import os

from cratesense.daemon.scan import is_candidate, reconcile, walk


def _tree(root):
    (root / "House" / "2024").mkdir(parents=True)
    (root / ".Trash").mkdir()
    files = {
        "House/2024/a.flac": b"a" * 10,
        "House/b.mp3": b"b" * 20,
        "c.opus": b"c" * 30,
        "House/cover.jpg": b"not audio",
        "House/.hidden.mp3": b"hidden",
        "House/incoming.mp3.part": b"partial download",
        ".Trash/old.mp3": b"trashed",
    }
    for name, data in files.items():
        (root / name).write_bytes(data)


def test_walk_finds_audio_only(tmp_path):
    _tree(tmp_path)
    found = {os.path.relpath(path, os.fsencode(tmp_path)) for path, _ in walk([str(tmp_path)])}
    assert found == {b"House/2024/a.flac", b"House/b.mp3", b"c.opus"}


def test_candidates():
    assert is_candidate(b"Track.MP3") and is_candidate(b"mix.flac")
    for name in (b".x.mp3", b"song.mp3.part", b"song.crdownload", b"notes.txt", b"x.tmp"):
        assert not is_candidate(name)


def test_non_utf8_names_survive(tmp_path):
    name = os.fsencode(tmp_path) + b"/caf\xe9.mp3"
    with open(name, "wb") as handle:
        handle.write(b"x")
    assert [path for path, _ in walk([str(tmp_path)])] == [name]


def test_reconcile_tells_new_changed_moved_deleted(tmp_path):
    _tree(tmp_path)
    known = dict(walk([str(tmp_path)]))
    root = os.fsencode(tmp_path)
    os.rename(tmp_path / "House" / "b.mp3", tmp_path / "House" / "2024" / "renamed.mp3")
    os.rename(tmp_path / "House" / "2024", tmp_path / "Moved2024")  # a folder moved: its files too
    (tmp_path / "c.opus").write_bytes(b"c" * 31)  # edited
    (tmp_path / "d.wav").write_bytes(b"d" * 40)  # new
    disk = dict(walk([str(tmp_path)]))
    plan = reconcile(known, disk)
    assert sorted(plan.moved) == sorted(
        [
            (root + b"/House/2024/a.flac", root + b"/Moved2024/a.flac"),
            (root + b"/House/b.mp3", root + b"/Moved2024/renamed.mp3"),
        ]
    )
    assert plan.changed == [root + b"/c.opus"]
    assert plan.new == [root + b"/d.wav"]
    assert plan.deleted == [] and plan.unchanged == 0
    (tmp_path / "d.wav").unlink()
    again = reconcile(disk, dict(walk([str(tmp_path)])))
    assert again.deleted == [root + b"/d.wav"] and again.unchanged == 3


def test_unreadable_folder_is_reported_not_fatal(tmp_path):
    errors = []
    assert list(walk([str(tmp_path / "unplugged-drive")], errors)) == []
    assert errors and b"unplugged-drive" in errors[0][0]
