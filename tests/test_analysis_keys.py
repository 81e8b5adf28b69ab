import pytest

from cratesense.analysis.keys import Key, parse_key

# (written, canonical name, Camelot, Open Key), checked against the published Camelot wheel.
WHEEL = [
    ("Am", "A minor", "8A", "1m"),
    ("C", "C major", "8B", "1d"),
    ("Em", "E minor", "9A", "2m"),
    ("G", "G major", "9B", "2d"),
    ("F#m", "F# minor", "11A", "4m"),
    ("Gbm", "F# minor", "11A", "4m"),
    ("C#m", "C# minor", "12A", "5m"),
    ("G#m", "G# minor", "1A", "6m"),
    ("Ebm", "Eb minor", "2A", "7m"),
    ("Bbm", "Bb minor", "3A", "8m"),
    ("Fm", "F minor", "4A", "9m"),
    ("Cm", "C minor", "5A", "10m"),
    ("Gm", "G minor", "6A", "11m"),
    ("Dm", "D minor", "7A", "12m"),
    ("A♭ major", "Ab major", "4B", "9d"),
    ("F", "F major", "7B", "12d"),
    ("B major", "B major", "1B", "6d"),
]


@pytest.mark.parametrize("written, name, camelot, open_key", WHEEL)
def test_key_notations(written, name, camelot, open_key):
    key = parse_key(written)
    assert (key.name, key.camelot, key.open_key) == (name, camelot, open_key)
    assert parse_key(camelot) == key
    assert parse_key(open_key) == key


def test_every_key_round_trips():
    for tonic in range(12):
        for minor in (False, True):
            key = Key(tonic, minor)
            assert parse_key(key.name) == parse_key(key.camelot) == parse_key(key.open_key) == key


@pytest.mark.parametrize("text", ["", "banana", "13A", "0B", "H minor", "o", "Am7"])
def test_non_keys_are_rejected(text):
    assert parse_key(text) is None
