"""Tags from every tag family, and garbage normalized or dropped, never a crash."""

from __future__ import annotations

import mutagen
import pytest
from mutagen.flac import FLAC
from mutagen.id3 import ID3, TALB, TBPM, TIT2, TKEY, TPE1, TPE2, TRCK, TSRC, TXXX
from mutagen.mp4 import MP4, MP4FreeForm

from cratesense.analysis.pipeline import analyze_file
from cratesense.analysis.tags import clean_text, read_tags

EXPECTED = {
    "artist": "Sigur Rós",
    "title": "Live 1/2/99",
    "album": "AC/DC: 50/50",
    "album_artist": "Various Artists",
    "track_number": 3,
    "isrc": "USRC17607839",
    "catalog_number": "WARP-CD 123",
    "bpm": 128.0,
    "key": "A minor",
}


def _copy(src, dst):
    dst.write_bytes(src.read_bytes())
    return dst


def _tag_vorbis(path):
    audio = mutagen.File(path)
    audio["ARTIST"] = "Sigur Rós"
    audio["TITLE"] = "Live 1/2/99"
    audio["ALBUM"] = "AC/DC: 50/50"
    audio["ALBUMARTIST"] = "Various Artists"
    audio["TRACKNUMBER"] = "3/12"
    audio["ISRC"] = "us-rc1-76-07839"
    audio["CATALOGNUMBER"] = "WARP-CD 123"
    audio["BPM"] = "128.00"
    audio["INITIALKEY"] = "8A"
    audio.save()


def _tag_id3(path):
    tags = ID3()
    tags.add(TPE1(encoding=3, text="Sigur Rós"))
    tags.add(TIT2(encoding=3, text="Live 1/2/99"))
    tags.add(TALB(encoding=3, text="AC/DC: 50/50"))
    tags.add(TPE2(encoding=3, text="Various Artists"))
    tags.add(TRCK(encoding=3, text="3/12"))
    tags.add(TSRC(encoding=3, text="USRC17607839"))
    tags.add(TXXX(encoding=3, desc="CATALOGNUMBER", text="WARP-CD 123"))
    tags.add(TBPM(encoding=3, text="128"))
    tags.add(TKEY(encoding=3, text="Am"))
    tags.save(path)


def _tag_mp4(path):
    audio = MP4(path)
    audio["\xa9ART"] = "Sigur Rós"
    audio["\xa9nam"] = "Live 1/2/99"
    audio["\xa9alb"] = "AC/DC: 50/50"
    audio["aART"] = "Various Artists"
    audio["trkn"] = [(3, 12)]
    audio["tmpo"] = [128]
    audio["----:com.apple.iTunes:ISRC"] = [MP4FreeForm(b"USRC17607839")]
    audio["----:com.apple.iTunes:CATALOGNUMBER"] = [MP4FreeForm(b"WARP-CD 123")]
    audio["----:com.apple.iTunes:initialkey"] = [MP4FreeForm(b"Am")]
    audio.save()


def _tag_riff_id3(path):
    audio = mutagen.File(path)
    audio.add_tags()
    audio.save()
    _tag_id3_into(audio)


def _tag_id3_into(audio):
    for frame in (
        TPE1(encoding=3, text="Sigur Rós"),
        TIT2(encoding=3, text="Live 1/2/99"),
        TALB(encoding=3, text="AC/DC: 50/50"),
        TPE2(encoding=3, text="Various Artists"),
        TRCK(encoding=3, text="3"),
        TSRC(encoding=3, text="USRC17607839"),
        TXXX(encoding=3, desc="CATALOGNUMBER", text="WARP-CD 123"),
        TBPM(encoding=3, text="128"),
        TKEY(encoding=3, text="A minor"),
    ):
        audio.tags.add(frame)
    audio.save()


TAGGERS = {
    "mp3": _tag_id3,
    "flac": _tag_vorbis,
    "ogg": _tag_vorbis,
    "opus": _tag_vorbis,
    "m4a": _tag_mp4,
    "wav": _tag_riff_id3,
    "aiff": _tag_riff_id3,
}


@pytest.mark.parametrize("ext", sorted(TAGGERS))
def test_tags_of_every_family(tmp_path, formats_dir, ext):
    path = _copy(formats_dir[ext], tmp_path / f"tagged.{ext}")
    TAGGERS[ext](path)
    tags = read_tags(path)
    for field, value in EXPECTED.items():
        assert getattr(tags, field) == value, field
    if ext != "ogg":  # PyAV's experimental Vorbis encoder writes granule positions mutagen misreads
        assert tags.duration == pytest.approx(30.0, abs=0.2)


def test_untagged_file_has_empty_tags_and_still_analyzes(formats_dir):
    result = analyze_file(formats_dir["wav"])
    assert result.tags.artist is None and result.tags.title is None
    assert result.tags.duration == pytest.approx(30.0, abs=0.05)


def test_garbage_tags_are_normalized_or_dropped(tmp_path, formats_dir):
    path = _copy(formats_dir["mp3"], tmp_path / "garbage.mp3")
    tags = ID3()
    tags.add(TPE1(encoding=0, text="BjÃ¶rk"))  # UTF-8 stored as Latin-1 by an old tagger
    tags.add(TIT2(encoding=3, text="Army\x1b of\x07 Me\r\n" + "x" * 1_000_000))
    tags.add(TALB(encoding=3, text="\ufeff  Post  "))
    tags.add(TBPM(encoding=3, text="12800"))
    tags.add(TKEY(encoding=3, text="banana"))
    tags.add(TSRC(encoding=3, text="not-an-isrc"))
    tags.add(TRCK(encoding=3, text="xx"))
    tags.save(path)
    read = read_tags(path)
    assert read.artist == "Björk"
    assert read.title.startswith("Army of Me x") and len(read.title) <= 256
    assert all(ord(char) >= 32 for char in read.title)
    assert read.album == "Post"
    assert read.bpm is None and read.key is None and read.isrc is None and read.track_number is None


def test_corrupt_tag_block_does_not_fail_analysis(tmp_path, formats_dir):
    data = bytearray(formats_dir["flac"].read_bytes())
    # Damage the first metadata block's header: mutagen refuses the file, FFmpeg still decodes.
    FLAC(formats_dir["flac"])  # sanity: the original parses
    data[4:8] = b"\x7f\xff\xff\xff"
    path = tmp_path / "badmeta.flac"
    path.write_bytes(bytes(data))
    assert read_tags(path).artist is None  # no exception


@pytest.mark.parametrize(
    "raw, expected",
    [
        ("AC/DC", "AC/DC"),
        ("50/50", "50/50"),
        ("Mr. Oizo – Flat Beat (Original Mix)", "Mr. Oizo – Flat Beat (Original Mix)"),
        ("坂本龍一", "坂本龍一"),
        ("👩‍🎤 Emoji", "👩‍🎤 Emoji"),
        ("Cafe\u0301", "Café"),  # NFC
        ("tab\there", "tab here"),
        ("\x00\x01", None),
        ("   ", None),
        (b"\xff\xfebytes", "ÿþbytes"),
    ],
)
def test_clean_text(raw, expected):
    assert clean_text(raw) == expected
