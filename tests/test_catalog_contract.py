"""The wire contract and its guard: real metadata passes, paths and binary never do."""

from __future__ import annotations

import base64
import os
import sqlite3
from pathlib import Path

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from catalogkit import observation
from cratesense.catalog.contract import (
    AnalysisPart, ContractError, FingerprintPart, Metadata, Observation, check_text, decode, sanitize_observation,
)
from cratesense.catalog.store import Observed, Store, consensus_of, fold_octave

CORPUS = [
    line.rstrip("\n")
    for line in (Path(__file__).parent / "data" / "metadata_corpus.txt").read_text(encoding="utf-8").splitlines()
    if line and not line.startswith("# ")
]
TEXT_FIELDS = ("artist", "title", "album", "catalog_number")
EXAMPLES = int(os.environ.get("CRATESENSE_GUARD_EXAMPLES", "200"))


def test_the_corpus_is_big_and_every_entry_is_accepted():
    assert len(CORPUS) >= 300
    for must in ("AC/DC", "50/50", "Live 1/2/99", "Sigur Rós", "坂本龍一", "Mr. Oizo – Flat Beat (Original Mix)"):
        assert must in CORPUS
    rejected = []
    for text in CORPUS:
        try:
            check_text("metadata.title", text[:256])
        except ContractError as exc:
            rejected.append((text, exc.rule))
    assert rejected == []


def test_corpus_entries_pass_in_a_full_observation(catalog_fingerprints):
    fingerprint = catalog_fingerprints[(0, "flac")]
    for index in range(0, len(CORPUS), 3):
        artist, title, album = (CORPUS[(index + k) % len(CORPUS)][:256] for k in range(3))
        body = msgspec.json.encode(observation(fingerprint, artist=artist, title=title, album=album))
        decode(body, Observation)


# what leaks look like: every one must be refused wherever it is put
PATHS = st.sampled_from([
    "/home/{u}/Music/{n}.flac", "/Users/{u}/Music/iTunes/{n}.m4a", "C:\\Users\\{u}\\Music\\{n}.mp3",
    "D:/Music/{n}.wav", "~/Music/{n}", "file:///media/{u}/{n}", "\\\\nas\\{u}\\{n}", "/media/{u}/USB/{n}.ogg",
    "/mnt/music/{u}/{n}.opus", "{n}/{u}/playlist.m3u", "..\\..\\{u}\\{n}.aiff", "/root/{n}", "/var/lib/{u}/{n}/x",
    "%USERPROFILE%\\{n}", "$HOME/{n}", "{n}.flac",
])
NAMES = st.text(alphabet=st.characters(min_codepoint=0x30, max_codepoint=0x7A, categories=("Ll", "Lu", "Nd")),
                min_size=1, max_size=12)
AUDIO_HEADERS = st.sampled_from([b"RIFF\x24\x08\x00\x00WAVEfmt ", b"ID3\x04\x00\x00\x00\x00\x00", b"fLaC\x00\x00\x00\x22",
                                 b"OggS\x00\x02\x00\x00", b"\x00\x00\x00\x20ftypM4A "])


@st.composite
def leaks(draw) -> str:
    kind = draw(st.sampled_from(["path", "audio-base64", "blob-base64", "hex", "control"]))
    if kind == "path":
        leak = draw(PATHS).format(u=draw(NAMES), n=draw(NAMES))
    elif kind == "audio-base64":
        leak = base64.b64encode(draw(AUDIO_HEADERS) + draw(st.binary(min_size=0, max_size=60))).decode()
    elif kind == "blob-base64":
        leak = base64.b64encode(draw(st.binary(min_size=48, max_size=120))).decode()
    elif kind == "hex":
        leak = draw(st.binary(min_size=16, max_size=60)).hex()
    else:
        leak = "x" + chr(draw(st.sampled_from([0, 7, 8, 10, 13, 27, 127, 0x85]))) + "y"
    prefix = draw(st.sampled_from(["", "Live at ", "Track: "]))
    suffix = draw(st.sampled_from(["", " (Remix)"])) if kind not in ("path",) else ""
    return prefix + leak + suffix


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(field=st.sampled_from(TEXT_FIELDS), leak=leaks())
def test_paths_and_binary_in_any_field_are_rejected(catalog_fingerprints, field, leak):
    body = observation(catalog_fingerprints[(0, "flac")], **{field: leak[:64] if field == "catalog_number" else leak[:256]})
    with pytest.raises(ContractError) as caught:
        decode(msgspec.json.encode(body), Observation)
    assert caught.value.field == f"metadata.{field}"


@settings(max_examples=EXAMPLES // 4, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(name=st.text(min_size=1, max_size=20).filter(lambda n: n.isidentifier()), value=st.one_of(st.text(max_size=20), st.integers()))
def test_unknown_fields_are_rejected_everywhere(catalog_fingerprints, name, value):
    body = observation(catalog_fingerprints[(0, "flac")])
    models = {None: Observation, "fingerprint": FingerprintPart, "metadata": Metadata, "analysis": AnalysisPart}
    for section, model in models.items():
        target = body if section is None else body[section]
        if name in target or name in model.__struct_fields__:
            continue  # a field the contract knows (an optional one the body leaves out, e.g. genres)
        target[name] = value
        with pytest.raises(ContractError) as caught:
            decode(msgspec.json.encode(body), Observation)
        assert caught.value.rule == "unknown field" and caught.value.field.endswith(name)
        del target[name]


def test_the_agent_side_drops_bad_fields_and_keeps_the_rest(catalog_fingerprints):
    body = observation(catalog_fingerprints[(0, "flac")], title="/home/me/Music/x.flac", artist="AC/DC", bpm=128.0)
    clean, dropped = sanitize_observation(body)
    assert clean["metadata"]["title"] is None and clean["metadata"]["artist"] == "AC/DC"
    assert clean["analysis"]["bpm"] == 128.0 and dropped == ["metadata.title: looks like an absolute file path"]
    body["metadata"]["folder"] = "Music"
    clean, dropped = sanitize_observation(body)
    assert "folder" not in clean["metadata"]
    broken = observation(("AQAAdGVzdA", 30.0))
    assert sanitize_observation(broken)[0] is None


def test_no_column_can_hold_a_path_or_audio(tmp_path):
    Store(tmp_path / "c.sqlite").close()
    db = sqlite3.connect(tmp_path / "c.sqlite")
    tables = [row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
    sql = {name: db.execute("SELECT sql FROM sqlite_master WHERE name = ?", (name,)).fetchone()[0] for name in tables}
    for table in tables:
        for _, column, kind, *_ in db.execute(f"PRAGMA table_info({table})"):
            assert not any(word in column.lower() for word in ("path", "file", "folder", "dir", "url", "audio", "sample", "name"))
            if kind.upper() in ("TEXT", "BLOB"):
                bounded = f"length({column})" in sql[table]
                assert bounded or (table, column) == ("fingerprint_terms", None), f"{table}.{column} is unbounded"
    blobs = {(t, column) for t in tables for _, column, kind, *_ in db.execute(f"PRAGMA table_info({t})") if kind == "BLOB"}
    # the only binary columns, each size-checked above: a token hash, raw fingerprint items (at
    # most 1000 x 4 bytes) and their index terms (120 x 4), an embedding (64 floats), a profile
    # vector; arrivals (accepted, not matched yet) hold the same items and embedding; an erased
    # fingerprint keeps only its index terms until they are swept from the index
    assert blobs == {("contributors", "token_hash"), ("fingerprints", "items"), ("fingerprints", "terms"),
                     ("observations", "embedding"), ("profiles", "vector"), ("arrivals", "items"),
                     ("arrivals", "embedding"), ("erased_fingerprints", "terms")}


def test_no_column_can_hold_a_path_or_audio_on_postgresql(postgres):
    from catalogkit import query

    store = Store(postgres.new_database())
    try:
        columns = query(store, "SELECT table_name, column_name, data_type FROM information_schema.columns "
                               "WHERE table_schema = 'public'")
        checks = query(store, "SELECT conrelid::regclass::text, pg_get_constraintdef(oid) FROM pg_constraint "
                              "WHERE contype = 'c'")
    finally:
        store.close()
    for table, column, kind in columns:
        assert not any(word in column.lower() for word in ("path", "file", "folder", "dir", "url", "audio", "sample", "name"))
        if kind in ("text", "bytea") and table != "migrations":
            assert any(t == table and f"length({column})" in rule for t, rule in checks), f"{table}.{column} is unbounded"
    assert {(t, c) for t, c, kind in columns if kind == "bytea"} == {
        ("contributors", "token_hash"), ("fingerprints", "items"), ("fingerprints", "terms"), ("observations", "embedding"),
        ("profiles", "vector"), ("arrivals", "items"), ("arrivals", "embedding"), ("erased_fingerprints", "terms")}


def test_consensus_counts_contributors_and_folds_octaves():
    v, t = "f1.t1.t2.k2.l2.e2.d1", 1.0  # one analyzer version, one arrival time
    rows = [
        Observed("a", "Artist", "Title", None, None, None, "A minor", "8A", 200.0, 128.0, -8.0, v, t),
        Observed("a", "Artist", "Title", None, None, None, "A minor", "8A", 200.0, 128.0, -8.0, v, t),
        Observed("a", "Artist", "Title", None, None, None, "A minor", "8A", 200.0, 128.0, -8.0, v, t),  # one voice, three files
        Observed("b", "Artist", "Title (Edit)", None, None, None, "C major", "8B", 201.0, 64.0, -9.0, v, t),
        Observed("c", "Artist", "Title (Edit)", None, None, None, "A minor", "8A", 199.0, 127.0, -7.0, v, t),
    ]
    result = consensus_of(rows)
    assert result["contributors"] == 3 and result["title"] == "Title (Edit)"  # 2 contributors to 1
    assert result["bpm"] == 128.0 and result["key"] == "A minor" and result["camelot"] == "8A"
    assert result["loudness_lufs"] == -8.0 and result["duration"] == 200.0
    assert consensus_of([Observed("a", "X", None, None, None, None, None, None, None, None, None, v, t),
                         Observed("b", "Y", None, None, None, None, None, None, None, None, None, v, t)])["artist"] == "X"  # tie
    assert fold_octave(64.0, 128.0) == 128.0 and fold_octave(255.0, 128.0) == 127.5


def test_an_upgraded_contributor_votes_with_its_newest_analysis_only():
    """An agent's upgrade sends its new figures as new observations; its old ones stay stored
    but must not vote beside them (they would outvote a contributor who holds one file)."""
    old, new = "f1.t1.t1.k1.l2.e1", "f1.t1.t2.k2.l2.e2.d1"
    rows = [
        Observed("a", "Artist", "Title", None, None, None, "A minor", "8A", 200.0, 85.3, -8.0, old, 1.0),
        Observed("a", "Artist", "Title", None, None, None, "E minor", "9A", 200.0, 128.0, -8.0, new, 2.0),
        Observed("b", "Artist", "Title", None, None, None, "A minor", "8A", 200.0, 85.3, -8.0, old, 1.5),  # not upgraded yet
        Observed("c", "Artist", "Title", None, None, None, "E minor", "9A", 200.0, 128.0, -8.0, new, 1.7),
    ]
    result = consensus_of(rows)
    # counting a's superseded A minor would make it a 2-2 tie, which A minor wins
    assert result["key"] == "E minor" and result["camelot"] == "9A" and result["contributors"] == 3
    assert result["bpm"] == 128.0  # medians of a's new 128 (not 85.3 and 128), b's 85.3 (folded: 170.6), c's 128


@pytest.mark.slow
def test_guard_with_a_large_budget_reports_what_it_tried(catalog_fingerprints):
    """`./scripts/test.sh -m slow -k large_budget -s`: $CRATESENSE_GUARD_EXAMPLES_SLOW payloads
    (default 20,000) with a path or binary in some field; prints how many got through (must be 0)."""
    tried, through = [0], []
    fingerprint = catalog_fingerprints[(0, "flac")]

    @settings(max_examples=int(os.environ.get("CRATESENSE_GUARD_EXAMPLES_SLOW", "20000")), deadline=None,
              suppress_health_check=list(HealthCheck), database=None)
    @given(field=st.sampled_from(TEXT_FIELDS), leak=leaks())
    def attempt(field, leak):
        tried[0] += 1
        body = observation(fingerprint, **{field: leak[:64] if field == "catalog_number" else leak[:256]})
        try:
            decode(msgspec.json.encode(body), Observation)
            through.append((field, leak))
        except ContractError:
            pass

    attempt()
    print(f"guard: {tried[0]} payloads tried, {len(through)} got through")
    assert through == []


def test_fingerprints_decode_alike_without_the_bindings_handle(catalog_fingerprints, monkeypatch):
    """The guard decodes through pyacoustid's ctypes handle (bytes, no int per item); a binding
    version without that handle is decoded by its public function, to the same bytes and errors."""
    import sys
    import types

    import chromaprint

    from cratesense.catalog.contract import ContractError, fingerprint_packed

    real = [catalog_fingerprints[key][0] for key in ((0, "flac"), (0, "opus-32k"), (3, "flac"))]
    broken = [real[0][:40] + "!" + real[0][41:], "AQ" + "A" * 10, real[0][: len(real[0]) // 3]]

    def outcomes():
        found = []
        for value in real + broken:
            try:
                found.append(fingerprint_packed("fp", value))
            except ContractError as exc:
                found.append(exc.rule)
        return found

    fast = outcomes()
    assert all(isinstance(item, bytes) and len(item) > 400 for item in fast[:3])
    # a binding of another version: its public decode, no ctypes handle in sight
    monkeypatch.setitem(sys.modules, "chromaprint", types.SimpleNamespace(decode_fingerprint=chromaprint.decode_fingerprint))
    assert outcomes() == fast
