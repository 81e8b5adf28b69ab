"""The library view: one compact, query-ready row per track, derived from its analysis and the
catalog's consensus (pure: the journal stores the rows, in the same transactions as what they
derive from).

A DJ's questions (tracks at 124-128 BPM in 8A, what plays next, what sounds alike, which files
are the same recording) must be answered from a cold CLI in well under 200 ms on 100,000 tracks,
without numpy and without parsing 100,000 JSON analyses. So each row carries typed columns for
the filters, the embedding as 64 float32, and two sketches:

* ``sound_sketch``: 128 sign bits of random projections of the embedding (SimHash): the
  Hamming distance between two sketches estimates the angle between the embeddings, so the
  nearest neighbours are found among all rows with one XOR and a popcount each, then ranked
  exactly by cosine.
* ``fingerprint_sketch``: the 16 index terms of the Chromaprint fingerprint with the smallest
  hash (a bottom-k sketch). Two encodes of one recording share many of their terms, so they
  share some of these; different recordings almost never do. Duplicates are confirmed with the
  full fingerprint score (AcoustID's method, ``catalog/matching.py``).

Where the file's tags are empty and the catalog's consensus knows a value, the consensus fills
it, and ``filled`` names the field, so every view can mark it as coming from the catalog.
"""

from __future__ import annotations

import functools
import random
import struct

from cratesense.analysis.constants import EMBEDDING_LENGTH

SOUND_SKETCH_BITS = 128
FINGERPRINT_SKETCH_TERMS = 16
_TEXT_FIELDS = ("artist", "title", "album", "isrc", "catalog_number")
LOSSLESS_CODECS = frozenset({"flac", "alac", "wavpack", "ape", "tak", "tta", "mlp", "truehd"})

COLUMNS = (
    "content_key", "artist", "title", "album", "isrc", "catalog_number", "filled", "duration", "bpm",
    "key", "camelot", "loudness", "replaygain", "true_peak", "beat_offset", "downbeat_offset",
    "beats_per_bar", "codec", "sample_rate", "channels", "embedding", "sound_sketch",
    "fingerprint_sketch", "fingerprint_duration",
)


def library_row(content_key: str, analysis: dict, consensus: dict | None) -> tuple:
    """The row of ``COLUMNS`` for one track."""
    tags = analysis.get("tags") or {}
    descriptors = analysis.get("descriptors") or {}
    audio = analysis.get("audio") or {}
    fingerprint = analysis.get("fingerprint") or {}
    metadata = (consensus or {}).get("metadata") or {}
    agreed = (consensus or {}).get("analysis") or {}
    filled = []

    def text(name: str):
        if tags.get(name):
            return tags[name]
        if metadata.get(name):
            filled.append(name)
            return metadata[name]
        return None

    texts = [text(name) for name in _TEXT_FIELDS]

    def measured(ours, theirs, name: str):
        """Our own descriptor; the consensus where ours was skipped or could not be found."""
        if ours is not None:
            return ours
        if theirs is not None:
            filled.append(name)
        return theirs

    bpm = measured(descriptors.get("bpm"), agreed.get("bpm"), "bpm")
    key = measured(descriptors.get("key"), agreed.get("key"), "key")
    camelot = descriptors.get("camelot") if descriptors.get("key") else agreed.get("camelot")
    loudness = measured(descriptors.get("loudness_lufs"), agreed.get("loudness_lufs"), "loudness")
    embedding = descriptors.get("embedding")
    return (
        content_key, *texts, ",".join(filled) or None, audio.get("duration") or fingerprint.get("duration"),
        bpm, key, camelot, loudness, descriptors.get("replaygain_db"), descriptors.get("true_peak_dbtp"),
        descriptors.get("beat_offset"), descriptors.get("downbeat_offset"), descriptors.get("beats_per_bar"),
        audio.get("codec"), audio.get("sample_rate"), audio.get("channels"),
        pack_embedding(embedding) if embedding else None,
        sound_sketch(embedding) if embedding else None,
        fingerprint_sketch(fingerprint.get("chromaprint")),
        fingerprint.get("duration"),
    )


def pack_embedding(embedding) -> bytes:
    return struct.pack(f"<{EMBEDDING_LENGTH}f", *embedding)


def unpack_embedding(blob: bytes) -> tuple[float, ...]:
    return struct.unpack(f"<{EMBEDDING_LENGTH}f", blob)


@functools.cache
def _hyperplanes() -> tuple[tuple[float, ...], ...]:
    """Fixed random directions (a constant seed: every install and every version of the
    sketch agree, so a stored sketch never needs recomputing for a new process)."""
    rng = random.Random(20261201)
    return tuple(tuple(rng.gauss(0.0, 1.0) for _ in range(EMBEDDING_LENGTH)) for _ in range(SOUND_SKETCH_BITS))


def sound_sketch(embedding) -> bytes:
    bits = 0
    for index, plane in enumerate(_hyperplanes()):
        if sum(p * e for p, e in zip(plane, embedding)) >= 0.0:
            bits |= 1 << index
    return bits.to_bytes(SOUND_SKETCH_BITS // 8, "little")


SKETCH_BYTES = SOUND_SKETCH_BITS // 8
_BYTE_POPCOUNTS = bytes(bin(value).count("1") for value in range(256))
_ONE_PER_SKETCH_BYTE = int.from_bytes(b"\x01" * SKETCH_BYTES, "little")


def hamming_distances(query: bytes, packed: bytes) -> bytes:
    """The bit distance from ``query`` to each sketch of ``packed`` (sketches end to end), one
    byte per sketch. Everything runs in C, which a Python loop over 100,000 sketches does not:
    one XOR of two big integers, a byte-wise popcount table, and one multiplication that adds
    each sketch's 16 byte counts into its last byte (a sum is at most 128, so no carry ever
    spills into a neighbour)."""
    count = len(packed) // SKETCH_BYTES
    differing = int.from_bytes(packed, "little") ^ int.from_bytes(query * count, "little")
    ones = differing.to_bytes(len(packed), "little").translate(_BYTE_POPCOUNTS)
    sums = (int.from_bytes(ones, "little") * _ONE_PER_SKETCH_BYTE).to_bytes(len(packed) + SKETCH_BYTES, "little")
    return sums[SKETCH_BYTES - 1 :: SKETCH_BYTES][:count]


def nearest(distances: bytes, count: int) -> list[int]:
    """The positions of the ``count`` smallest distances (ties at the cut in position order),
    found by C-level counts and searches over the bytes, never a loop over every sketch."""
    total = 0
    for cut in range(SOUND_SKETCH_BITS + 1):
        total += distances.count(cut)
        if total >= count:
            break
    closer = distances.translate(bytes(int(distance < cut) for distance in range(256)))
    return sorted(_positions(closer, 1, count) + _positions(distances, cut, count - closer.count(1)))


def _positions(data: bytes, value: int, limit: int) -> list[int]:
    found, start = [], 0
    while len(found) < limit and (position := data.find(value, start)) >= 0:
        found.append(position)
        start = position + 1
    return found


def cosine(a, b) -> float:
    """Embeddings are unit length: their dot product is the cosine."""
    return sum(x * y for x, y in zip(a, b))


def _term_order(term: int) -> int:
    return (term * 2654435761) & 0xFFFFFFFF  # Knuth's multiplicative hash: a fixed shuffle


def fingerprint_sketch(chromaprint: str | None) -> bytes | None:
    if not chromaprint:
        return None
    from cratesense.catalog import matching
    from cratesense.catalog.contract import ContractError, fingerprint_items

    try:
        items = fingerprint_items("fingerprint", chromaprint)
    except ContractError:
        return None
    terms = sorted(set(matching.index_terms(items)), key=_term_order)[:FINGERPRINT_SKETCH_TERMS]
    return struct.pack(f"<{len(terms)}I", *terms)


def unpack_terms(blob: bytes | None) -> tuple[int, ...]:
    return struct.unpack(f"<{len(blob) // 4}I", blob) if blob else ()
