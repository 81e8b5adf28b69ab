"""The command line as a person runs it: a real subprocess."""

from __future__ import annotations

import json
import subprocess
import sys

from audiogen import write_broken_variants

from cratesense import __version__


def run(*args, cwd=None):
    return subprocess.run(
        [sys.executable, "-m", "cratesense", *args], capture_output=True, text=True, cwd=cwd, timeout=300
    )


def test_version_and_help():
    assert run("--version").stdout.strip() == f"cratesense {__version__}"
    result = run("analyze", "--help")
    assert result.returncode == 0 and "--table" in result.stdout


def test_analyze_folder_prints_every_track_and_lists_failures(tmp_path, formats_dir):
    library = tmp_path / "library"
    (library / "sub").mkdir(parents=True)
    for ext in ("mp3", "flac", "opus"):
        (library / "sub" / f"song.{ext}").write_bytes(formats_dir[ext].read_bytes())
    write_broken_variants(library, formats_dir["flac"])
    (library / "cover.jpg").write_bytes(b"not audio, not looked at")
    (library / ".hidden.mp3").write_bytes(b"hidden files are skipped")
    result = run("analyze", str(library))
    assert result.returncode == 1
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert sorted(r["path"].rsplit("/", 1)[1] for r in records) == ["song.flac", "song.mp3", "song.opus"]
    assert all(r["fingerprint"]["chromaprint"].startswith("AQA") for r in records)
    assert "4 of 7 files failed" in result.stderr
    for name in ("empty.mp3", "truncated.flac", "noise.mp3", "notes.flac"):
        assert name in result.stderr
    assert "cover.jpg" not in result.stderr and ".hidden" not in result.stderr
    assert "Traceback" not in result.stderr


def test_analyze_table_and_success_exit_code(formats_dir):
    result = run("analyze", "--table", str(formats_dir["flac"]), str(formats_dir["m4a"]))
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split()[:3] == ["file", "artist", "title"]
    assert len(lines) == 3 and "0:30" in lines[1]
    # untagged: the title is the file's name; the format as people name it, never FFmpeg's decoder
    assert lines[1].split()[1:3] == ["-", formats_dir["flac"].stem] and lines[1].split()[-1] == "FLAC"
    assert lines[2].split()[-1] == "AAC"


def test_missing_path_is_a_failure_not_a_crash(tmp_path):
    result = run("analyze", str(tmp_path / "nowhere"))
    assert result.returncode == 1
    assert "not found" in result.stderr and "Traceback" not in result.stderr


def test_bpm_range_option(tmp_path):
    from audiogen import encode, synth_track

    ballad = encode(synth_track(bpm=64, seconds=30, pattern="ballad"), 44100, tmp_path / "ballad.flac")
    wide = json.loads(run("analyze", "--bpm-range", "55-180", str(ballad)).stdout)
    assert abs(wide["descriptors"]["bpm"] - 64) <= 0.5
    bad = run("analyze", "--bpm-range", "fast", str(ballad))
    assert bad.returncode == 2 and "LOW-HIGH" in bad.stderr
