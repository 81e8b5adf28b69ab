"""Debian's Mixxx as a reader of what we write: Mixxx started under Xvfb with a settings folder of
its own, its first-run question (the music folder) answered with xdotool, its library scan left
to read the files' tags (Serato's cues, colours, BPM lock and beat grid: Mixxx finishes their
import by opening the audio, as it does for files Serato wrote), then what it stored read from
its own SQLite database. No sound card is needed: ALSA's default device is a null one, in a
home folder of the run's own."""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

TOOLS = ("mixxx", "Xvfb", "xdotool")
MISSING = [tool for tool in TOOLS if shutil.which(tool) is None]
SCANNED = "LibraryScanner - Recursive scanning finished cleanly"


@dataclass(frozen=True)
class MixxxCue:
    hotcue: int  # Mixxx's hot cue number (0 = its hot cue 1)
    seconds: float
    label: str
    colour: str  # "#RRGGBB", as Mixxx shows it


@dataclass(frozen=True)
class MixxxTrack:
    bpm: float
    bpm_lock: bool
    beats: list[float]  # seconds
    cues: list[MixxxCue]


def _free_display() -> int:
    for number in range(150, 250):
        if not Path(f"/tmp/.X11-unix/X{number}").exists() and not Path(f"/tmp/.X{number}-lock").exists():
            return number
    raise RuntimeError("no free X display number")


def _varint(data: bytes, at: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = data[at]
        value |= (byte & 0x7F) << shift
        at += 1
        if byte < 0x80:
            return value, at
        shift += 7


def beat_frames(blob: bytes) -> list[int]:
    """The beats (frame positions) of Mixxx's ``BeatMap-1.0`` protobuf: ``repeated Beat beat = 1``,
    each ``Beat`` holding ``frame_position = 1`` (only the fields Mixxx writes are read)."""
    frames, at = [], 0
    while at < len(blob):
        key, at = _varint(blob, at)
        if key >> 3 == 1 and key & 7 == 2:  # a Beat
            length, at = _varint(blob, at)
            beat, inner = blob[at : at + length], 0
            while inner < len(beat):
                field, inner = _varint(beat, inner)
                value, inner = _varint(beat, inner)  # every Beat field Mixxx writes is a varint
                if field >> 3 == 1:
                    frames.append(value)
            at += length
        else:
            raise ValueError(f"unexpected protobuf field {key}")
    return frames


class MixxxSkippedATrack(Exception):
    """Mixxx 2.3's own scanner dropped a file ("needed SqlQuerys have not been prepared"): a race
    inside Mixxx on a loaded machine, not a verdict on the file."""


def scan_with_mixxx(music: Path, work: Path, expected: int, timeout: float = 240.0,
                    attempts: int = 3) -> dict[str, MixxxTrack]:
    """What Mixxx stores for each file of ``music`` (by file name) after its first library scan;
    a scan in which Mixxx itself skipped a file is run again from fresh settings."""
    for attempt in range(1, attempts + 1):
        try:
            return _scan_once(music, work / f"attempt-{attempt}", expected, timeout)
        except MixxxSkippedATrack:
            if attempt == attempts:
                raise
    raise AssertionError("unreachable")


def _scan_once(music: Path, work: Path, expected: int, timeout: float) -> dict[str, MixxxTrack]:
    home, settings = work / "home", work / "settings"
    home.mkdir(parents=True)
    settings.mkdir()
    (home / ".asoundrc").write_text("pcm.!default { type null }\n")
    display = f":{_free_display()}"
    env = {**os.environ, "HOME": str(home), "DISPLAY": display, "QT_QPA_PLATFORM": "xcb"}
    log_path = work / "mixxx.log"
    processes: list[subprocess.Popen] = []
    try:
        processes.append(subprocess.Popen(["Xvfb", display, "-screen", "0", "1280x800x24"],
                                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        deadline = time.monotonic() + 30
        while not Path(f"/tmp/.X11-unix/X{display[1:]}").exists():
            assert time.monotonic() < deadline, "Xvfb did not start"
            time.sleep(0.1)
        with open(log_path, "wb") as log:
            processes.append(subprocess.Popen(["mixxx", "--settingsPath", f"{settings}/", "--safeMode", "--logLevel",
                                               "debug"], env=env, stdout=log, stderr=subprocess.STDOUT))
        deadline = time.monotonic() + timeout
        answered, last = False, None
        while True:
            assert processes[-1].poll() is None, f"Mixxx stopped:\n{log_path.read_text(errors='replace')[-3000:]}"
            assert time.monotonic() < deadline, f"Mixxx did not scan in time:\n{log_path.read_text(errors='replace')[-3000:]}"
            if not answered:  # the first run asks for the music folder
                found = subprocess.run(["xdotool", "search", "--name", "Choose music library directory"], env=env,
                                       capture_output=True, text=True, timeout=30).stdout.split()
                if found:
                    subprocess.run(["xdotool", "windowactivate", "--sync", found[0]], env=env, timeout=30)
                    subprocess.run(["xdotool", "key", "--window", found[0], "ctrl+a"], env=env, timeout=30)
                    subprocess.run(["xdotool", "type", "--window", found[0], str(music)], env=env, timeout=30)
                    subprocess.run(["xdotool", "key", "--window", found[0], "Return"], env=env, timeout=30)
                    answered = True
            elif "Failed to add track to library" in log_path.read_text(errors="replace"):
                raise MixxxSkippedATrack(log_path.read_text(errors="replace")[-3000:])
            elif SCANNED in log_path.read_text(errors="replace"):
                try:
                    tracks = _stored(settings / "mixxxdb.sqlite")
                except sqlite3.Error:  # read while Mixxx writes it (locked, mid-checkpoint): read again
                    last = None
                    time.sleep(1.0)
                    continue
                if len(tracks) >= expected and tracks == last:  # every file in, and nothing moved since
                    return tracks
                last = tracks
            time.sleep(1.0)
    finally:
        for process in reversed(processes):
            process.terminate()
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def _stored(database: Path) -> dict[str, MixxxTrack]:
    db = sqlite3.connect(f"file:{database}?mode=ro", uri=True, timeout=10)
    try:
        rows = db.execute("SELECT library.id, track_locations.filename, library.bpm, library.bpm_lock, library.beats, "
                          "library.beats_version, library.samplerate FROM library "
                          "JOIN track_locations ON library.location = track_locations.id").fetchall()
        tracks = {}
        for track_id, name, bpm, lock, beats, version, rate in rows:
            frames = beat_frames(beats) if beats and version == "BeatMap-1.0" else []
            # a cue's position counts the engine's samples: two per frame, whatever the file holds
            cues = [MixxxCue(hotcue, position / (rate * 2), label, f"#{colour & 0xFFFFFF:06X}")
                    for hotcue, position, label, colour in db.execute(
                        "SELECT hotcue, position, label, color FROM cues WHERE track_id = ? AND type = 1 "
                        "ORDER BY hotcue", (track_id,))]
            tracks[name] = MixxxTrack(bpm=bpm, bpm_lock=bool(lock), beats=[frame / rate for frame in frames], cues=cues)
        return tracks
    finally:
        db.close()
