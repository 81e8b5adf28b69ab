"""The sound model's words: the vocabulary, how scores become words, the catalog's guard on them,
and writing them into the user's files (genre and mood) read back by mutagen and mediafile."""

from __future__ import annotations

import subprocess

import msgspec
import mutagen
import numpy as np
import pytest

from audiogen import encode, synth_track
from cratesense.analysis import sound_tags
from cratesense.analysis.constants import GENRE_WORDS, MOOD_WORDS, OTHER_TAG_WORDS, TAG_WORDS
from cratesense.catalog import contract
from cratesense.dj import tagging

SR = 44100


def test_every_word_has_labels_of_the_model_and_belongs_to_one_kind():
    from cratesense.analysis import learned

    labels = set(learned.load_model().labels)
    assert set(sound_tags.SOURCES) == set(TAG_WORDS)
    assert len(TAG_WORDS) == len(set(TAG_WORDS)) == len(GENRE_WORDS) + len(MOOD_WORDS) + len(OTHER_TAG_WORDS)
    for word, sources in sound_tags.SOURCES.items():
        assert sources and set(sources) <= labels, word


def _scores(**raised: float) -> dict[str, float]:
    """Every label low, the named ones (``mtt_soft=0.9`` for "mtt:soft") high."""
    from cratesense.analysis import learned

    scores = {label: 0.01 for label in learned.load_model().labels}
    for name, value in raised.items():
        scores[name.replace("_", ":", 1).replace("_", " ")] = value
    return scores


IDENTITY = {word: tuple(sound_tags.QUANTILES) for word in TAG_WORDS}  # strength = raw score


def test_words_come_from_the_strongest_labels_and_are_bounded():
    words = sound_tags.describe(_scores(mtt_classical=0.9, mtt_piano=0.9, mtt_soft=0.8, mtt_quiet=0.7), IDENTITY)
    assert words.genres[0] == "classical" and len(words.genres) <= sound_tags.MAX_GENRES
    assert "calm" in words.moods and "piano" in words.other
    assert set(words.strengths) == set(TAG_WORDS) and all(0 <= v <= 1 for v in words.strengths.values())
    loud = sound_tags.describe(_scores(mtt_metal=0.9, mtt_loud=0.9, mtt_fast=0.8, msd_heavy_metal=0.8), IDENTITY)
    assert loud.strengths["aggressive"] > words.strengths["aggressive"]
    assert loud.strengths["calm"] < words.strengths["calm"]


def test_strengths_are_places_in_the_reference_library_and_every_track_gets_a_genre_and_a_mood():
    reference = {**IDENTITY, "house": tuple(np.linspace(0.0, 0.2, 21)), "rock": tuple(np.linspace(0.3, 1.0, 21))}
    words = sound_tags.describe(_scores(msd_House=0.19, msd_rock=0.35), reference)
    assert words.strengths["house"] == 0.95 and words.strengths["rock"] < 0.1  # rare house outranks common rock
    assert words.genres[0] == "house"
    quiet = sound_tags.describe(_scores(), IDENTITY)  # nothing stands out: still one genre and one mood
    assert len(quiet.genres) == 1 and len(quiet.moods) == 1


def test_the_guard_accepts_the_vocabulary_and_rejects_any_other_word_naming_the_field():
    base = {"analyzer_version": "f1.t1.t2.k2.l2.e3.d1.m1"}
    accepted = msgspec.json.decode(msgspec.json.encode({**base, "genres": ["hip-hop", "house"], "moods": ["calm"]}),
                                   type=contract.AnalysisPart)
    assert accepted.genres == ["hip-hop", "house"]
    for field, value in (("genres", ["polka"]), ("moods", ["rock"]), ("genres", ["/home/me/Music"]),
                         ("genres", ["rock", "pop", "jazz", "folk"])):
        with pytest.raises(contract.ContractError) as caught:
            contract.decode(msgspec.json.encode({**base, field: value}), contract.AnalysisPart)
        assert caught.value.field.startswith(field), caught.value


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("words")
    samples = synth_track(bpm=124, tonic=9, minor=True, seconds=8, seed=3)
    made = {ext: encode(samples, SR, folder / f"song.{ext}") for ext in ("mp3", "flac", "m4a", "opus")}
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-i", str(made["flac"]), "-c:a", "libvorbis",
                    str(folder / "song.ogg")], check=True)
    made["ogg"] = folder / "song.ogg"
    return made


def _mediafile(path):
    import mediafile

    class WithMood(mediafile.MediaFile):
        pass

    WithMood.add_field("mood", mediafile.MediaField(
        mediafile.MP3StorageStyle("TMOO"), mediafile.MP4StorageStyle("----:com.apple.iTunes:MOOD"),
        mediafile.StorageStyle("MOOD")))
    return WithMood(str(path))


@pytest.mark.parametrize("ext", ["mp3", "flac", "m4a", "opus", "ogg"])
def test_genre_and_mood_are_written_in_standard_fields_and_read_back(files, ext, tmp_path):
    path = tmp_path / files[ext].name
    path.write_bytes(files[ext].read_bytes())
    wanted = tagging.Wanted(genre="hip-hop", mood="calm")
    done = tagging.retag(str(path), wanted, ("genre", "mood"), "camelot")
    assert done.error is None and {change.new for change in done.changes} == {"Hip-Hop", "Calm"}
    tags = mutagen.File(path).tags
    expected = {"mp3": ("TCON", "TMOO"), "m4a": ("\xa9gen", "----:com.apple.iTunes:MOOD")}.get(ext, ("GENRE", "MOOD"))
    genre, mood = (tags[name] for name in expected)
    as_text = lambda value: (bytes(value[0]).decode() if ext == "m4a" and not isinstance(value[0], str)  # noqa: E731
                             else str(value[0] if isinstance(value, list) else value))
    assert as_text(genre) == "Hip-Hop" and as_text(mood) == "Calm"
    second = _mediafile(path)  # a second reader (beets' mediafile) agrees
    assert second.genre == "Hip-Hop" and second.mood == "Calm"
    assert tagging.plan(str(path), wanted, ("genre", "mood"), "camelot")[0] == []  # nothing left to write


def test_a_genre_the_user_wrote_is_kept_unless_asked(files, tmp_path):
    path = tmp_path / "mine.flac"
    path.write_bytes(files["flac"].read_bytes())
    audio = mutagen.File(path)
    audio["GENRE"] = ["Deep House"]
    audio.save()
    done = tagging.retag(str(path), tagging.Wanted(genre="techno", mood="energetic"), ("genre", "mood"), "camelot")
    assert [change.field for change in done.changes] == ["MOOD"]
    assert mutagen.File(path)["GENRE"] == ["Deep House"]
    replaced = tagging.retag(str(path), tagging.Wanted(genre="techno", replace_words=True), ("genre",), "camelot")
    assert [(c.old, c.new) for c in replaced.changes] == [("Deep House", "Techno")]
    assert mutagen.File(path)["GENRE"] == ["Techno"]


def test_writing_words_never_touches_the_audio(files, tmp_path):
    import av

    def decoded(path):
        with av.open(str(path)) as container:
            return np.concatenate([frame.to_ndarray().ravel() for frame in container.decode(audio=0)])

    path = tmp_path / "same.mp3"
    path.write_bytes(files["mp3"].read_bytes())
    before = decoded(path)
    tagging.retag(str(path), tagging.Wanted(genre="rock", mood="aggressive"), ("genre", "mood"), "camelot")
    assert np.array_equal(decoded(path), before)


def test_exports_carry_the_files_genre_or_ours_and_the_moods(files, tmp_path):
    """rekordbox (read back by pyrekordbox) and Traktor (read back by traktor-nml-utils when
    installed, else as XML): the file's own genre wins over the model's; moods in the comment."""
    import xml.etree.ElementTree as ET

    from pyrekordbox.rbxml import RekordboxXml

    from cratesense.dj.collection import Track
    from cratesense.dj.exports import rekordbox, traktor

    def track(name: str, tag_genre: str | None) -> Track:
        return Track(content_key=name, path=str(files["flac"]), copies=1, artist="Ann", title=name, album=None,
                     isrc=None, catalog_number=None, duration=8.0, bpm=124.0, key=None, loudness=None,
                     replaygain=None, true_peak=None, beat_offset=0.1, downbeat_offset=None, beats_per_bar=None,
                     codec="flac", sample_rate=SR, channels=2, added_at=None, tag_genre=tag_genre,
                     genres=("hip-hop", "soul"), moods=("calm", "sad"), sound_tags=("piano",))

    tracks = [track("ours", None), track("theirs", "Deep House")]
    output = tmp_path / "collection.xml"
    output.write_bytes(rekordbox(tracks))
    read = {t["Name"]: t for t in RekordboxXml(str(output)).get_tracks()}
    assert read["ours"]["Genre"] == "Hip-Hop" and read["theirs"]["Genre"] == "Deep House"
    assert read["ours"]["Comments"] == "Mood: calm, sad"
    entries = {entry.get("TITLE"): entry.find("INFO") for entry in ET.fromstring(traktor(tracks)).iter("ENTRY")
               if entry.get("TITLE")}
    assert entries["ours"].get("GENRE") == "Hip-Hop" and entries["theirs"].get("GENRE") == "Deep House"
    assert entries["ours"].get("COMMENT") == "Mood: calm, sad"


def test_a_word_filter_takes_the_vocabulary_in_any_case_and_refuses_others_in_one_line():
    from cratesense.dj.collection import parse_filters
    from cratesense.errors import QueryError

    filters = parse_filters({"genre": "Hip Hop", "mood": "CALM", "tag": "piano"})
    assert (filters.genre, filters.mood, filters.tag) == ("hip-hop", "calm", "piano")
    with pytest.raises(QueryError, match="'polka' is not a genre CrateSense knows; choose one of: rock"):
        parse_filters({"genre": "polka"})
    with pytest.raises(QueryError, match="not a mood"):
        parse_filters({"mood": "rock"})  # a genre is no mood


def test_the_consensus_fills_a_missing_genre_as_it_fills_a_missing_artist():
    """A track whose own analysis has no words (the catalog's consensus stood in for its
    descriptors, or its model could not run) shows the consensus's, marked as filled; our own
    words are never replaced by it. An embedding of another version is not in the library row."""
    from cratesense.analysis.model import (
        AudioFacts, Consensus, ConsensusAnalysis, ConsensusMetadata, Descriptors, Fingerprint, Tags, TrackAnalysis,
    )
    from cratesense.daemon.trackview import library_row

    consensus = Consensus(score=0.9, recording=1, contributors=3, metadata=ConsensusMetadata(artist="Them"),
                          analysis=ConsensusAnalysis(genres=("house", "electronic"), moods=("energetic",)))
    base = dict(fingerprint=Fingerprint(chromaprint="AQAA", duration=200.0), tags=Tags(),
                audio=AudioFacts(container="flac", codec="flac", sample_rate=44100, channels=2, duration=200.0,
                                 fully_decoded=True))
    skipped = TrackAnalysis(**base, descriptors=Descriptors(), descriptors_from="catalog")
    row = library_row("k", skipped, consensus)
    assert row.genres == "house,electronic" and row.moods == "energetic" and row.artist == "Them"
    assert {"genres", "moods", "artist"} <= set(row.filled.split(","))
    ours = TrackAnalysis(**base, descriptors=Descriptors(genres=("techno",), moods=("calm",), embedding=(1.0,) + (0.0,) * 63))
    row = library_row("k", ours, consensus)
    assert row.genres == "techno" and row.moods == "calm" and "genres" not in (row.filled or "")
    assert row.embedding is not None
    older = TrackAnalysis(**base, descriptors=Descriptors(embedding=(1.0,) + (0.0,) * 63),
                          analyzer_version="f1.t1.t2.k2.l2.e2.d1")
    assert library_row("k", older, None).embedding is None  # version 2: never compared with version 3


def test_the_catalog_keeps_a_profiles_embedding_version(catalog_db):
    """Centroids of different embedding versions must never be compared: the catalog stores
    what the agent says its centroid is (NULL from agents before version 3)."""
    from catalogkit import query

    from cratesense.analysis.constants import KEY_BINS, LOUDNESS_BINS, STAGE_VERSIONS, TEMPO_BINS
    from cratesense.catalog.store import Store

    store = Store(catalog_db)
    try:
        ours, older = store.register()[0], store.register()[0]
        profile = dict(track_count=3, tempo_histogram=[1 / TEMPO_BINS] * TEMPO_BINS,
                       key_histogram=[1 / KEY_BINS] * KEY_BINS, loudness_histogram=[1 / LOUDNESS_BINS] * LOUDNESS_BINS,
                       embedding_centroid=[0.125] * 64)
        store.put_profile(ours, contract.Profile(**profile, embedding_version=STAGE_VERSIONS["embedding"]))
        store.put_profile(older, contract.Profile(**profile))
        versions = dict(query(store, "SELECT contributor, embedding_version FROM profiles"))
        assert versions == {ours: STAGE_VERSIONS["embedding"], older: None}
    finally:
        store.close()
