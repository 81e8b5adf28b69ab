"""Opt-in (``pytest -m real_recordings``): every file of real Debian music packages is analyzed
with zero crashes, and every fingerprint matches fpcalc's."""

from __future__ import annotations

import os
import shutil

import pytest

from conftest import fpcalc
from cratesense.daemon.pool import AnalysisPool, Task
from realaudio import fetch
from test_analysis_fingerprint import bit_error_rate

pytestmark = pytest.mark.real_recordings


@pytest.mark.skipif(shutil.which("fpcalc") is None, reason="fpcalc not installed")
def test_real_recordings_analyze_and_match_fpcalc():
    files = fetch()
    assert len(files) >= 20, "expected the packages' recordings"
    with AnalysisPool(workers=os.cpu_count() or 1, timeout=300) as pool:
        outcomes = list(pool.run(Task(str(path)) for path in files))
    assert len(outcomes) == len(files)
    crashes = [o for o in outcomes if o.error_kind in ("crash", "internal", "timeout")]
    assert not crashes, crashes
    exact = close = 0
    for outcome in outcomes:
        status, reference = fpcalc(outcome.path)
        if outcome.error_kind in ("silent", "too-short"):
            continue  # refused by design (fpcalc prints a degenerate fingerprint for these)
        if not outcome.ok:
            # A file FFmpeg cannot decode is a normal event; fpcalc must not read it either.
            assert reference is None or not reference.get("fingerprint"), outcome
            continue
        assert reference is not None, f"fpcalc read {outcome.path} but exited {status}"
        assert outcome.analysis is not None
        ours = outcome.analysis.fingerprint.chromaprint
        if ours == reference["fingerprint"]:
            exact += 1
        else:
            assert bit_error_rate(ours, reference["fingerprint"]) < 0.001, outcome.path
            close += 1
    print(f"\n{len(files)} real files: {exact} bit-identical to fpcalc, {close} within decoder rounding, "
          f"{sum(not o.ok for o in outcomes)} refused with a recorded reason")


@pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="ffmpeg not installed")
def test_real_encodes_match_and_real_tracks_never_merge(tmp_path):
    """Each real track re-encoded (64 kb/s MP3, 32 kb/s Opus, a 3 s head cut) lands on one
    recording; the real tracks stay apart. A 12 s head cut aligns (its score is printed with the
    rest) but is kept apart on purpose: like AcoustID, durations more than 7 s apart are
    different edits (a radio edit is not the extended mix a DJ is looking for)."""
    import itertools
    import subprocess

    import msgspec

    from catalogkit import observation
    from cratesense.analysis.pipeline import analyze_file
    from cratesense.catalog.contract import Observation, decode, fingerprint_items
    from cratesense.catalog.matching import score
    from cratesense.catalog.store import Store
    from cratesense.errors import AnalysisError

    variants = {"mp3-64k": ["-c:a", "libmp3lame", "-b:a", "64k"], "opus-32k": ["-c:a", "libopus", "-b:a", "32k"],
                "cut-3s": ["-ss", "3"], "cut-12s": ["-ss", "12"]}
    fingerprints: dict[tuple[str, str], tuple[str, float]] = {}
    for path in fetch():
        if len({key[0] for key in fingerprints}) == 12:
            break
        try:
            track = analyze_file(path, descriptors=False)
        except AnalysisError:
            continue
        if track.fingerprint.duration < 40:
            continue
        fingerprints[(path.name, "original")] = (track.fingerprint.chromaprint, track.fingerprint.duration)
        for name, options in variants.items():
            out = tmp_path / f"{path.stem}-{name}.{'mp3' if 'mp3' in name else 'opus' if 'opus' in name else 'flac'}"
            subprocess.run(["ffmpeg", "-v", "error", "-y", "-i", str(path), *options, str(out)], check=True)
            variant = analyze_file(out, descriptors=False).fingerprint
            fingerprints[(path.name, name)] = (variant.chromaprint, variant.duration)
    items = {key: fingerprint_items("f", value[0]) for key, value in fingerprints.items()}
    same, different = [], []
    for a, b in itertools.combinations(items, 2):
        (same if a[0] == b[0] else different).append(score(items[a], items[b]))
    print(f"\nsame recording: {len(same)} pairs, min {min(same):.3f}, median {sorted(same)[len(same) // 2]:.3f}; "
          f"different: {len(different)} pairs, max {max(different):.3f}")

    cuts = [score(items[(name, "original")], items[(name, "cut-12s")]) for name, kind in items if kind == "cut-12s"]
    print(f"12 s head cuts vs their originals: min {min(cuts):.3f}")
    assert min(same) > 0.6 > 0.2 > max(different)
    store = Store(tmp_path / "catalog.sqlite")
    contributor, _ = store.register()
    keys = [key for key in fingerprints if key[1] != "cut-12s"]
    store.ingest(contributor, [decode(msgspec.json.encode(observation(fingerprints[key], id=f"{i:032x}")), Observation)
                               for i, key in enumerate(keys)])
    recording_of = {item["id"]: item["recording"] for item in store.export(contributor)["observations"]}
    by_track: dict[str, set[int]] = {}
    for i, (name, _) in enumerate(keys):
        by_track.setdefault(name, set()).add(recording_of[f"{i:032x}"])
    assert all(len(recordings) == 1 for recordings in by_track.values())  # every encode together
    assert len(set().union(*by_track.values())) == len(by_track)  # no two tracks merged


def test_real_recordings_copied_into_a_watched_folder_reach_the_catalog_once_and_no_path_leaves(tmp_path):
    """#6 with real music: 12 real recordings copied into private-looking folders of a watched
    library reach a real catalog exactly once each, and no request body carries any part of a
    path (captured and scanned at a tap in front of the catalog)."""
    import json
    import sqlite3

    from agentproc import AgentProcess, write_config
    from test_daemon_sync import RecordingCatalog

    real = [path for path in fetch() if path.name != "silence.ogg"][:12]
    catalog = RecordingCatalog(tmp_path / "shared.sqlite")
    music = tmp_path / "music"
    album = music / "Private Folder Name" / "Secret Album"
    album.mkdir(parents=True)
    write_config(tmp_path, music, sync={"quiet_seconds": 0.5, "catalog_url": catalog.url})
    agent = AgentProcess(tmp_path)
    try:
        agent.start()
        for index, path in enumerate(real):
            shutil.copy(path, album / f"{index:02d} my-private-name{path.suffix}")
        status = agent.wait_for(
            lambda s: s["files"] == len(real) and s["queued"] == 0 and s["analyzing"] == 0
            and s["waiting_to_sync"] == 0, timeout=300, what="the real recordings to be analyzed and synced")
        agent.cli("sync")
        assert status["failing_files"] == 0
    finally:
        agent.stop()
        catalog.close()
    with sqlite3.connect(tmp_path / "shared.sqlite") as db:
        ids = [row[0] for row in db.execute("SELECT id FROM observations")]
    assert len(ids) == len(set(ids)) == status["tracks"] == len(real)
    sent = [item["id"] for body in catalog.bodies if b'"observations"' in body
            for item in json.loads(body).get("observations", [])]
    assert sorted(sent) == sorted(ids)  # each sent once: no retry re-sent an acknowledged row
    everything = b"\n".join(catalog.bodies).decode("utf-8", "replace")
    for leak in (str(music), "Private Folder Name", "Secret Album", "my-private-name", str(tmp_path), "/tmp",
                 *{path.suffix for path in real}, *{path.parent.name for path in real}):
        assert leak not in everything, leak


@pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="ffmpeg not installed")
def test_real_encodes_keep_their_embedding(tmp_path):
    """Real tracks re-encoded as a DJ library holds them (MP3 128k, Opus 64k: the one that drops
    most) stay next to their original: it is their nearest track, at a cosine above 0.9."""
    import subprocess

    import numpy as np

    from cratesense.analysis.pipeline import analyze_file

    tracks = [path for path in fetch() if path.stat().st_size > 1_000_000][::5][:8]
    originals = np.array([analyze_file(path).descriptors.embedding for path in tracks])
    for codec, options in {"mp3": ["-c:a", "libmp3lame", "-b:a", "128k"], "opus": ["-c:a", "libopus", "-b:a", "64k"]}.items():
        for index, path in enumerate(tracks):
            out = tmp_path / f"{index}.{codec}"
            subprocess.run(["ffmpeg", "-v", "error", "-y", "-i", str(path), *options, str(out)], check=True)
            similarity = originals @ np.array(analyze_file(out).descriptors.embedding)
            assert int(np.argmax(similarity)) == index and similarity[index] > 0.9, (codec, path.name, similarity)
