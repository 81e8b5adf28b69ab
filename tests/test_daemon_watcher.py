"""The watcher's decisions (pure) and its debouncing against real inotify events."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
from pathlib import Path

import pytest

from cratesense.daemon.scan import content_key
from cratesense.daemon.watcher import COLLAPSE_AT, Watcher, choose_modes, collapse, file_system_type

MOUNTINFO = """\
22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw
40 22 0:35 / /mnt/nas rw,relatime - nfs4 nas:/export rw
41 22 0:36 / /mnt/nas/local\\040disk rw - ext4 /dev/sdb1 rw
42 22 0:37 / /home/me/cloud rw - fuse.rclone remote: rw
"""


def test_file_system_type_takes_the_deepest_mount():
    assert file_system_type("/home/me/Music", MOUNTINFO) == "ext4"
    assert file_system_type("/mnt/nas/music", MOUNTINFO) == "nfs4"
    assert file_system_type("/mnt/nas/local disk/x", MOUNTINFO) == "ext4"
    assert file_system_type("/mnt/nasty", MOUNTINFO) == "ext4"
    assert file_system_type("/home/me/cloud/a", MOUNTINFO) == "fuse.rclone"


def test_network_mounts_and_too_many_folders_are_polled_with_the_sysctl_to_raise():
    fs = {"/a": "ext4", "/nas": "nfs4", "/cloud": "fuse.rclone"}
    modes = choose_modes(list(fs), "auto", fs, folder_count=10, watch_limit=8192)
    assert modes["/a"].mode == "inotify"
    assert modes["/nas"].mode == modes["/cloud"].mode == "polling" and "nfs4" in modes["/nas"].reason
    modes = choose_modes(["/a"], "auto", fs, folder_count=9000, watch_limit=8192)
    assert modes["/a"].mode == "polling"
    assert "9000 folders" in modes["/a"].reason and "sudo sysctl fs.inotify.max_user_watches=" in modes["/a"].reason
    assert choose_modes(["/a"], "polling", fs, 1, 8192)["/a"].reason == "library.watch = polling in the config"


def test_many_paths_in_one_folder_collapse_into_the_folder():
    many = {b"/m/album/%d.flac" % i for i in range(COLLAPSE_AT)}
    assert collapse(many | {b"/m/other/x.flac"}) == {b"/m/album", b"/m/other/x.flac"}
    assert collapse({b"/m/a.flac", b"/m/b.flac"}) == {b"/m/a.flac", b"/m/b.flac"}


def test_content_key_follows_content_not_name(tmp_path, formats_dir):
    original = formats_dir["flac"]
    copy = shutil.copy(original, tmp_path / "copy.flac")
    assert content_key(copy, copy.stat().st_size) == content_key(original, original.stat().st_size)
    data = bytearray(copy.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one byte in the middle of the audio
    copy.write_bytes(bytes(data))
    assert content_key(copy, len(data)) != content_key(original, original.stat().st_size)


async def until(condition, timeout: float = 30.0, what: str = "the watcher") -> None:
    """Wait for ``condition()`` (on a loaded machine events take their time; never a fixed sleep)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)


@pytest.mark.asyncio
async def test_a_file_written_in_bursts_is_handed_over_once_after_it_settles(tmp_path):
    batches: list[set[bytes]] = []

    def on_paths(paths):
        batches.append(paths)

    watcher = Watcher([tmp_path], on_paths, quiet_seconds=0.4, max_wait_seconds=1.0)
    await watcher.start()
    try:
        assert watcher.modes[str(tmp_path)].mode == "inotify"
        target = tmp_path / "growing.flac"
        with open(target, "wb") as out:
            for _ in range(12):  # 2.4 s of writing, longer than the maximum wait
                out.write(b"x" * 1000)
                out.flush()
                await asyncio.sleep(0.2)
        await until(lambda: batches and not watcher.pending, what="the batch, and nothing more held")
        assert batches == [{bytes(target)}]
    finally:
        await watcher.stop()


def test_the_daemon_process_does_not_load_the_analysis_stack():
    """numpy and PyAV load only in the analysis workers: the always-running agent stays small."""
    import subprocess
    import sys

    code = "import sys, cratesense.daemon.agent, cratesense.cli; print(sorted({'numpy', 'av', 'scipy', 'mutagen'} & set(sys.modules)))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


STORM = """
import os, sys
folder = sys.argv[1]
files = []
for sub in range(50):  # 50 folders of 40 files: too few anywhere to collapse into the top folder
    os.mkdir(os.path.join(folder, f"d{sub:02d}"))
    files += [open(os.path.join(folder, f"d{sub:02d}", f"{i:02d}.mp3"), "wb", buffering=0) for i in range(40)]
for round in range(12):  # interleaved writes: the kernel cannot merge them into one event
    for file in files:
        file.write(b"x")
"""


@pytest.mark.asyncio
async def test_an_overflowing_inotify_queue_means_a_rescan_of_the_whole_folder(tmp_path):
    """A real overflow: about 26,000 events at once, more than the kernel's inotify queue holds.
    The lost events cannot be known, so the folder is handed over whole (the library then walks
    it), instead of changes going unnoticed until the next scan. Whether a reader keeps up with
    a storm depends on the machine's load, so the watcher's queue is made small for sure: the
    limit (fs.inotify.max_queued_events, read when an inotify instance is made) is lowered
    while the watcher starts, and put back at once."""
    import subprocess
    import sys

    limit_file = Path("/proc/sys/fs/inotify/max_queued_events")
    limit = limit_file.read_text()
    try:
        limit_file.write_text("1024")
    except OSError:
        if int(limit) > 20_000:
            pytest.skip(f"fs.inotify.max_queued_events is {limit.strip()} and cannot be lowered here (needs root)")
    batches: list[set[bytes]] = []

    def on_paths(paths):
        batches.append(paths)

    watcher = Watcher([tmp_path], on_paths, quiet_seconds=0.3, max_wait_seconds=1.0)
    try:
        await watcher.start()
    finally:
        with contextlib.suppress(OSError):
            limit_file.write_text(limit)
    try:
        await asyncio.to_thread(subprocess.run, [sys.executable, "-c", STORM, str(tmp_path)], check=True)
        for _ in range(100):
            await asyncio.sleep(0.1)
            if watcher.overflows and any(bytes(tmp_path) in batch for batch in batches):
                break
        assert watcher.overflows >= 1
        assert any(bytes(tmp_path) in batch for batch in batches)  # the whole folder, to be walked
        assert COLLAPSE_AT > 50  # (else the top folder would be handed over anyway)
    finally:
        await watcher.stop()


@pytest.mark.asyncio
async def test_a_folder_that_appears_or_is_replaced_is_watched_anew(tmp_path):
    """A music folder missing at start (a drive not yet mounted) is watched once it exists; one
    replaced under us (deleted and made again, as a mount does) is watched again; each time
    the library is told to reconcile."""
    folder = tmp_path / "music"
    batches: list[set[bytes]] = []
    changes = []

    def on_paths(paths):
        batches.append(paths)

    def on_folders_changed():
        changes.append(watcher.modes[str(folder)].mode)

    watcher = Watcher([folder], on_paths, quiet_seconds=0.2, max_wait_seconds=1.0,
                      on_folders_changed=on_folders_changed, folder_check_seconds=0.2)
    await watcher.start()
    try:
        assert watcher.modes[str(folder)].mode == "none"
        folder.mkdir()
        await until(lambda: changes, what="the new folder to be watched")
        assert changes == ["inotify"]
        (folder / "a.flac").write_bytes(b"x")
        await until(lambda: batches and not watcher.pending, what="the new file")
        assert batches == [{bytes(folder / "a.flac")}]
        shutil.rmtree(folder)
        folder.mkdir()
        await until(lambda: len(changes) == 2, what="the replaced folder to be watched anew")
        assert changes == ["inotify", "inotify"]
        batches.clear()
        (folder / "b.flac").write_bytes(b"x")  # the old watch died with the old folder
        await until(lambda: bytes(folder / "b.flac") in set().union(set(), *batches), what="the file in the new folder")
    finally:
        await watcher.stop()
