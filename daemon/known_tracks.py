"""The known-track policy: fingerprint first, and skip the descriptors of what the catalog knows.

With a shared catalog, a new file is first only fingerprinted (the head of the file, no
descriptors); if the catalog already knows that recording from enough contributors, its
consensus is kept beside our analysis and the expensive descriptors are skipped; otherwise the
file is analyzed in full. Verdicts are asked for in batches: while one look-up is on its way,
the files fingerprinted meanwhile wait for the next one.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Protocol

from cratesense.analysis.model import Consensus
from cratesense.catalog.contract import MAX_LOOKUP

log = logging.getLogger(__name__)

LOOKUP_TIMEOUT = 15.0  # then the file is analyzed in full: a slow catalog never stalls the queue


class Catalog(Protocol):
    """What the policy asks the catalog (the ``Syncer`` answers)."""

    def can_look_up(self) -> bool: ...

    async def look_up(self, fingerprints: list[tuple[str, float]]) -> list[Consensus | None]: ...


def known_well(consensus: Consensus | None, min_contributors: int) -> bool:
    """Does the catalog know this recording well enough to skip our own descriptors?"""
    if consensus is None or consensus.contributors < min_contributors:
        return False
    agreed = consensus.analysis
    return agreed.bpm is not None and agreed.key is not None and agreed.loudness_lufs is not None


class KnownTracks:
    def __init__(self, catalog: Catalog | None = None, min_contributors: int | None = None) -> None:
        """Without ``catalog`` or ``min_contributors`` every file gets the full analysis."""
        self._catalog = catalog
        self._min = min_contributors
        self._waiting: list[tuple[tuple[str, float], asyncio.Future[Consensus | None]]] = []
        self._sender: asyncio.Task | None = None

    def fingerprint_first(self) -> bool:
        return bool(self._min) and self._catalog is not None and self._catalog.can_look_up()

    def known_well(self, consensus: Consensus | None) -> bool:
        return known_well(consensus, self._min or 0)

    @property
    def judging(self) -> int:
        return len(self._waiting)

    async def verdict(self, chromaprint: str, duration: float) -> Consensus | None:
        """The catalog's consensus for this fingerprint; None when it knows nothing or cannot
        be asked now (then the file gets our own full analysis, as without a catalog)."""
        future = asyncio.get_running_loop().create_future()
        self._waiting.append(((chromaprint, duration), future))
        if self._sender is None or self._sender.done():
            self._sender = asyncio.create_task(self._send(), name="catalog look-ups")
        return await future

    async def _send(self) -> None:
        await asyncio.sleep(0)  # the files fingerprinted in the same moment go in one request
        catalog = self._catalog
        assert catalog is not None, "verdicts are asked only when fingerprint_first() said so"
        while self._waiting:
            batch, self._waiting = self._waiting[:MAX_LOOKUP], self._waiting[MAX_LOOKUP:]
            try:
                results = await asyncio.wait_for(catalog.look_up([fp for fp, _ in batch]), LOOKUP_TIMEOUT)
            except Exception as exc:  # offline, refused, too slow: our own analysis
                log.info("no catalog look-up (%s): analyzing %d file(s) in full", exc, len(batch))
                results = [None] * len(batch)
            for (_, future), result in zip(batch, results):
                if not future.done():
                    future.set_result(result)

    async def close(self) -> None:
        if self._sender is not None:
            self._sender.cancel()
            try:
                await self._sender
            except asyncio.CancelledError:
                pass
