"""Fingerprint matching, after AcoustID (shared/design.md, "Scale"): pure functions.

``index_terms`` picks the terms a fingerprint is indexed and queried by; ``score`` compares two
raw fingerprints: align them by a histogram of offsets between items that share their top bits,
then score (overlap / shorter length) x (1 - 2 x bit error rate). Plain Python (``int.bit_count``)
so the embedded catalog adds no numpy to the agent's process.
"""

from __future__ import annotations

import struct

SILENCE = 627964279  # the item Chromaprint gives digital silence
ITEMS_PER_SECOND = 8.08
TERMS = 120
TERM_SHIFT = 4  # terms are items masked to their top 28 bits
ALIGN_SHIFT = 20  # items sharing their top 12 bits vote for an offset
ALIGN_STRIDE = 4
MAX_OFFSET = 120  # items (~15 s): a 12 s head cut still aligns
DURATION_TOLERANCE = 7.0  # seconds

# Thresholds on ``score`` (AcoustID's, confirmed by tests/test_real_recordings.py's measured
# distributions: same recording 0.77-1.0 across encodes and cuts, different recordings < 0.1).
SAME_FINGERPRINT = 0.9  # an encode this close shares the stored fingerprint
SAME_RECORDING = 0.6  # attach to the recording
SAME_RECORDING_WITH_ISRC = 0.4  # when the ISRCs agree
LOOKUP_HIT = 0.4


def index_terms(items: list[int]) -> list[int]:
    """Up to 120 unique terms from about 10 s in (earlier for short fingerprints), silence skipped."""
    start = min(int(10 * ITEMS_PER_SECOND), max(0, len(items) - TERMS))
    terms: list[int] = []
    seen: set[int] = set()
    for item in items[start:]:
        if item == SILENCE:
            continue
        term = item >> TERM_SHIFT
        if term not in seen:
            seen.add(term)
            terms.append(term)
            if len(terms) == TERMS:
                break
    return terms


SKETCH_TERMS = 16  # a fingerprint's sketch: this many of its index terms


def sketch(items: list[int], count: int = SKETCH_TERMS) -> list[int]:
    """A bottom-k sketch of a fingerprint: its ``count`` index terms with the smallest hash
    (Knuth's multiplicative hash, a fixed shuffle). Two encodes of one recording share many of
    their terms, so they share some of these; different recordings almost never do."""
    return sorted(set(index_terms(items)), key=lambda term: (term * 2654435761) & 0xFFFFFFFF)[:count]


def minimum_shared_terms(terms: list[int]) -> int:
    return max(1, -(-len(terms) // 20))


def score(a: list[int], b: list[int] | bytes, *, a_bytes: bytes | None = None) -> float:
    """Similarity of two raw fingerprints in [0, 1] at their best alignment. ``b`` may be given
    packed (as stored) and ``a`` packed too (``a_bytes``): most pairs then need no conversion."""
    if not a or not b:
        return 0.0
    a_bytes = a_bytes if a_bytes is not None else pack(a)
    b_bytes = b if isinstance(b, bytes) else pack(b)
    aligned = _score_at(a_bytes, b_bytes, 0)
    if aligned >= SAME_FINGERPRINT:  # the common case (the same encode, or one that starts alike)
        return aligned  # no other alignment can matter; skip the offset histogram
    b = unpack(b) if isinstance(b, bytes) else b
    positions: dict[int, list[int]] = {}
    for j, item in enumerate(b):
        positions.setdefault(item >> ALIGN_SHIFT, []).append(j)
    # one item of ``a`` in ALIGN_STRIDE votes: the true offset still collects most of their
    # votes (a random one, next to none), and this loop is most of the cost
    offsets: dict[int, int] = {}
    for i in range(0, len(a), ALIGN_STRIDE):
        for j in positions.get(a[i] >> ALIGN_SHIFT, ()):
            offset = i - j
            if -MAX_OFFSET <= offset <= MAX_OFFSET:
                offsets[offset] = offsets.get(offset, 0) + 1
    best = sorted(offsets, key=lambda offset: (-offsets[offset], offset))[:3]
    return max([aligned] + [_score_at(a_bytes, b_bytes, offset) for offset in best])


def _score_at(a: bytes, b: bytes, offset: int) -> float:
    """The score of packed fingerprints ``a`` and ``b`` with ``a`` shifted by ``offset`` items.
    The bit errors of the whole overlap in one XOR of two big integers and one popcount (C
    speed; an item-by-item loop cost 30 times as much)."""
    x, y = (a[4 * offset:], b) if offset >= 0 else (a, b[-4 * offset:])
    overlap = min(len(x), len(y)) // 4
    if not overlap:
        return 0.0
    errors = (int.from_bytes(x[:4 * overlap], "little") ^ int.from_bytes(y[:4 * overlap], "little")).bit_count()
    bit_error_rate = errors / (32 * overlap)
    return overlap / (min(len(a), len(b)) // 4) * max(0.0, 1.0 - 2.0 * bit_error_rate)


def pack(items: list[int]) -> bytes:
    return struct.pack(f"<{len(items)}I", *items)


def unpack(blob: bytes) -> list[int]:
    return list(struct.unpack(f"<{len(blob) // 4}I", blob))
