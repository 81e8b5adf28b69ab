"""Shared fixtures: test audio is synthesized and encoded here, once per session."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from audiogen import FORMATS, encode, fingerprintable_track, synth_track

SR = 44100


@pytest.fixture(scope="session")
def tracks(tmp_path_factory) -> list[Path]:
    """Six different 24 s tracks (FLAC) the catalog accepts, outside any watched folder."""
    folder = tmp_path_factory.mktemp("source")
    return [encode(fingerprintable_track(i), SR, folder / f"s{i}.flac") for i in range(6)]


@pytest.fixture(scope="session")
def track_30s():
    """A 30 s A-minor track at 128 BPM (stereo float32, 44.1 kHz)."""
    return synth_track(bpm=128, tonic=9, minor=True, seconds=30, seed=1)


@pytest.fixture(scope="session")
def formats_dir(tmp_path_factory, track_30s) -> dict[str, Path]:
    """The same 30 s track encoded into every format the agent reads: extension -> path."""
    folder = tmp_path_factory.mktemp("formats")
    return {ext: encode(track_30s, SR, folder / f"track.{ext}") for ext in FORMATS}


@pytest.fixture(scope="session")
def long_formats_dir(tmp_path_factory) -> dict[str, Path]:
    """A 130 s track in every format: long enough that Debian's fpcalc exits 0 on it.

    Ogg Vorbis is encoded by Debian's ffmpeg with libvorbis, as real .ogg files are made:
    PyAV's FFmpeg has only the experimental native Vorbis encoder, whose streams FFmpeg 5.1
    (fpcalc's) and FFmpeg 8 (PyAV's) decode differently.
    """
    folder = tmp_path_factory.mktemp("long")
    samples = synth_track(bpm=100, tonic=2, minor=False, seconds=130, seed=2)
    files = {ext: encode(samples, SR, folder / f"long.{ext}") for ext in FORMATS if ext != "ogg"}
    if shutil.which("ffmpeg"):
        ogg = folder / "long.ogg"
        subprocess.run(
            ["ffmpeg", "-v", "error", "-y", "-i", str(files["wav"]), "-c:a", "libvorbis", str(ogg)],
            check=True,
        )
        files["ogg"] = ogg
    return files


def fpcalc(path: Path) -> tuple[int, dict | None]:
    """fpcalc's exit status and its JSON (which it prints even when it exits 3)."""
    import json

    result = subprocess.run(["fpcalc", "-json", str(path)], capture_output=True, text=True)
    return result.returncode, (json.loads(result.stdout) if result.stdout.strip() else None)


requires_fpcalc = pytest.mark.skipif(
    shutil.which("fpcalc") is None, reason="fpcalc not installed (apt-get install libchromaprint-tools)"
)


@pytest.fixture(scope="session")
def catalog_fingerprints(tmp_path_factory):
    """(source, encode) -> (chromaprint, duration): 5 different tracks, source 0 in 8 encodes."""
    from catalogkit import make_fingerprints

    return make_fingerprints(tmp_path_factory.mktemp("catalog-audio"))


class FailingDisk:
    """A small ext4 file system on a loop device, mounted at ``folder``, that can be made to fail
    for real: ``fail()`` has the kernel record an error, abort the file-system journal and remount
    it read-only (errors=remount-ro), so whatever was not yet flushed to the disk is lost, as in a
    power cut or a dying disk; ``repair()`` (everything on it closed) runs e2fsck and mounts it again."""

    def __init__(self, image: Path, folder: Path) -> None:
        self.image, self.folder = image, folder

    def mount(self) -> subprocess.CompletedProcess:
        return subprocess.run(["mount", "-o", "loop,errors=remount-ro", str(self.image), str(self.folder)],
                              capture_output=True, text=True)

    def fail(self) -> None:
        device = subprocess.run(["findmnt", "-n", "-o", "SOURCE", str(self.folder)],
                                capture_output=True, text=True, check=True).stdout.strip()
        Path(f"/sys/fs/ext4/{Path(device).name}/trigger_fs_error").write_text("cratesense test\n")
        assert subprocess.run(["touch", str(self.folder / "probe")], capture_output=True).returncode != 0

    def repair(self) -> None:
        subprocess.run(["umount", str(self.folder)], check=True)
        checked = subprocess.run(["e2fsck", "-f", "-y", str(self.image)], capture_output=True, text=True)
        assert checked.returncode in (0, 1), checked.stdout  # 1: errors found and corrected
        self.mount().check_returncode()


@pytest.fixture
def failing_disk(tmp_path):
    folder = tmp_path / "disk"
    folder.mkdir()
    disk = FailingDisk(tmp_path / "disk.img", folder)
    subprocess.run(["truncate", "-s", "64M", str(disk.image)], check=True)
    subprocess.run(["mkfs.ext4", "-q", "-F", str(disk.image)], check=True)
    mounted = disk.mount()
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a loop device here ({mounted.stderr.strip()}); needs root")
    yield disk
    subprocess.run(["umount", "-l", str(folder)], capture_output=True)


@pytest.fixture(scope="session")
def postgres():
    """A throwaway PostgreSQL server for the session (tests/pgserver.py); skipped where none is
    installed (scripts/setup.sh test installs it)."""
    from pgserver import PostgresServer, binaries

    if binaries() is None:
        pytest.skip("PostgreSQL is not installed (scripts/setup.sh test installs it)")
    server = PostgresServer().start()
    yield server
    server.stop()


@pytest.fixture(params=["sqlite", "postgresql"])
def catalog_db(request, tmp_path):
    """Where a catalog test's database goes, once per backend: a SQLite file or a fresh
    PostgreSQL database's URL."""
    if request.param == "sqlite":
        return tmp_path / "catalog.sqlite"
    return request.getfixturevalue("postgres").new_database()
