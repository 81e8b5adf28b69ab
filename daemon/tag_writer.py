"""Writing tags from the running agent: for ``cratesense tags write`` (and the web page) while
the agent runs, and into each newly analyzed file when ``tags.write_new`` is on.

The writing itself happens in an analysis worker (``dj/tagging.py``: the agent never loads
mutagen); the journal learns each written file's new identity through its writer thread, so
the agent's own write is never mistaken for a change to analyze.
"""

from __future__ import annotations

import logging
import os

from cratesense.analysis.model import TrackAnalysis
from cratesense.daemon.config import TagsConfig
from cratesense.daemon.journal import FileIdentity, display_path
from cratesense.daemon.journal_io import JournalIO
from cratesense.daemon.pool import AnalysisPool, TagTask
from cratesense.dj.tagging import Retagged, Wanted, wanted_for, wanted_from_analysis

log = logging.getLogger(__name__)


class TagWriter:
    def __init__(self, io: JournalIO, pool: AnalysisPool, settings: TagsConfig, notation: str) -> None:
        self._io = io
        self._pool = pool
        self._settings = settings
        self._notation = notation

    async def write(self, path: str, wanted: Wanted, fields: tuple[str, ...], *, dry_run: bool = False) -> Retagged:
        answer = await self._pool.retag(TagTask(path, wanted, fields, self._notation, dry_run))
        if not isinstance(answer, Retagged):  # its worker died or overran
            return Retagged(path, [], error=f"{path}: {answer.error}")
        if answer.identity is not None and answer.content_key is not None:
            identity, key = FileIdentity(*answer.identity), answer.content_key
            await self._io.write(lambda journal: journal.retagged(os.fsencode(path), identity, key))
        return answer

    async def write_tracks(self, tracks, fields: tuple[str, ...], *, dry_run: bool = False,
                           include_uncertain: bool = False, files_of=None, replace_words: bool = False) -> list[Retagged]:
        """Every file of each of ``tracks`` (``files_of(track)`` lists them)."""
        results = []
        for track in tracks:
            wanted = wanted_for(track, include_uncertain=include_uncertain, replace_words=replace_words)
            for path in files_of(track):
                results.append(await self.write(path, wanted, fields, dry_run=dry_run))
        return results

    async def after_analysis(self, paths: list[bytes], analysis: TrackAnalysis) -> None:
        """``tags.write_new``: a newly analyzed file (and its copies) gets its tags."""
        if not self._settings.write_new:
            return
        wanted = wanted_from_analysis(analysis, include_uncertain=self._settings.include_uncertain)
        for path in paths:
            result = await self.write(os.fsdecode(path), wanted, tuple(self._settings.fields))
            if result.error:
                log.warning("tags not written: %s", result.error)
            elif result.changes:
                log.info("wrote %d tag(s) into %s", len(result.changes), display_path(path))
