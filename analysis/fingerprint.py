"""Chromaprint fingerprints through pyacoustid's binding to the system libchromaprint.

Fed from the decoder's analysis stream (mono int16 at 11025 Hz, resampled as fpcalc does), the
result is bit-identical to ``fpcalc``'s for the same file. Like AcoustID, only the first
``FINGERPRINT_SECONDS`` are fingerprinted.
"""

from __future__ import annotations

import numpy as np

from cratesense.errors import CrateSenseError

FINGERPRINT_SECONDS = 120
_ALGORITHM = 1  # CHROMAPRINT_ALGORITHM_TEST2, the default and the one AcoustID indexes


def _chromaprint():
    """The pyacoustid binding, imported on first use so a missing system library is one clear
    error and not an import-time crash of everything."""
    try:
        import chromaprint
    except (ImportError, OSError) as exc:
        raise CrateSenseError(
            "libchromaprint is not installed (Debian/Ubuntu: apt-get install libchromaprint1; "
            "macOS: brew install chromaprint)"
        ) from exc
    return chromaprint


class FingerprintBuilder:
    """Streaming Chromaprint: ``feed`` analysis blocks in order, then ``finish``."""

    def __init__(self, sample_rate: int, max_seconds: float = FINGERPRINT_SECONDS) -> None:
        self._fingerprinter = _chromaprint().Fingerprinter(_ALGORITHM)
        self._fingerprinter.start(sample_rate, 1)
        self._remaining = int(max_seconds * sample_rate)

    @property
    def wants_more(self) -> bool:
        return self._remaining > 0

    def feed(self, samples: np.ndarray) -> None:
        if self._remaining <= 0 or samples.size == 0:
            return
        chunk = np.ascontiguousarray(samples[: self._remaining], dtype=np.int16)
        self._remaining -= chunk.size
        self._fingerprinter.feed(chunk.tobytes())

    def finish(self) -> str:
        return self._fingerprinter.finish().decode("ascii")


def fingerprint_pcm(samples: np.ndarray, sample_rate: int) -> str:
    """The compressed fingerprint of mono int16 PCM (a convenience over ``FingerprintBuilder``)."""
    builder = FingerprintBuilder(sample_rate)
    builder.feed(samples)
    return builder.finish()


def decode_items(fingerprint: str) -> tuple[list[int], int]:
    """The raw 32-bit items and the algorithm of a compressed fingerprint string."""
    items, algorithm = _chromaprint().decode_fingerprint(fingerprint.encode("ascii"))
    return [item & 0xFFFFFFFF for item in items], algorithm
