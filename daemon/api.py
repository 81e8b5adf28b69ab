"""The control API's routes: the facade the CLI, the tray and the web page see of the agent.

Every route is a coroutine from a JSON body to an answer; none runs SQLite on the event loop
(the journal is read on its reader threads), and the status is the one typed ``Status``.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from cratesense import __version__
from cratesense.analysis.constants import ANALYZER_VERSION
from cratesense.daemon.config import DjConfig
from cratesense.daemon.journal_read import JournalReader, display_path
from cratesense.daemon.journal_io import JournalIO
from cratesense.daemon.library import Library
from cratesense.daemon.pool import AnalysisPool
from cratesense.daemon.status import Problem, Progress, Status, WatchMode, overall_state
from cratesense.daemon.sync import Backoff, Syncer
from cratesense.daemon.tag_writer import TagWriter
from cratesense.daemon.watcher import Watcher
from cratesense.errors import QueryError

if TYPE_CHECKING:
    from cratesense.dj.playback import Playable
    from cratesense.daemon.web import WebPage

# the DJ's read-only commands (dj/usecases.READ_COMMANDS), named here so the agent's start does not
# import the DJ's code
DJ_COMMANDS = ("tracks", "next", "similar", "playlist", "duplicates", "library-export", "prep")


@dataclass
class Parts:
    """What the API reads from: the running agent's components."""

    io: JournalIO
    library: Library
    pool: AnalysisPool
    syncer: Syncer
    watcher: Watcher
    folders: tuple[str, ...]
    started_at: float
    journal_rebuilt_from: str | None = None
    dj: DjConfig = DjConfig()
    tag_writer: TagWriter | None = None
    web: WebPage | None = None  # the page, when it is on


def _journal_view(journal: JournalReader) -> dict:
    return {**journal.counts(), "known_to_catalog": journal.known_to_catalog(),
            "parked_reasons": [reason for _, reason in journal.parked(5)]}


class ControlAPI:
    def __init__(self, parts: Parts) -> None:
        self._parts = parts
        self._view: tuple[int, dict] | None = None  # (journal writes then, the journal's part of the status)

    def attach_web(self, page) -> None:
        self._parts.web = page

    def routes(self) -> dict:
        return {
            ("GET", "status"): self.status_route,
            ("POST", "pause"): self.pause,
            ("POST", "resume"): self.resume,
            ("POST", "rescan"): self.rescan,
            ("POST", "sync"): self.sync,
            ("PUT", "settings"): self.settings,
            ("POST", "forget"): self.forget,
            ("GET", "export"): self.export,
            ("GET", "preview"): self.preview,
            # the DJ's library (dj/usecases.py): the CLI's own functions, over read-only connections
            **{("GET", name): self.dj_command(name) for name in DJ_COMMANDS},
            ("POST", "tags"): self.tags,
            ("GET", "recommendations"): self.recommendations,
            ("GET", "overview"): self.overview,
            ("GET", "failures"): self.failures,
            ("GET", "web"): self.web,
        }

    async def status_route(self, _body: dict) -> Status:
        return await self.status()

    async def status(self) -> Status:
        parts = self._parts
        library, queue, reconciler = parts.library, parts.library.queue, parts.library.reconciler
        view = await self._journal_view()
        sync = parts.syncer.status()
        journal_error = library.journal_error
        state, error_kind = overall_state(
            journal_error=bool(journal_error), paused=library.pause.active, offline=sync["offline"],
            scanning=library.scanning, busy=not queue.empty and not library.pause.active,
            syncing=sync["syncing"], sync_error=bool(sync["last_sync_error"]))
        progress = reconciler.progress
        unreadable = reconciler.unreadable
        watch = {folder: WatchMode(mode.mode, mode.reason) for folder, mode in parts.watcher.modes.items()}
        return Status(
            state=state,
            error_kind=error_kind,
            version=__version__,
            analyzer_version=ANALYZER_VERSION,
            pid=os.getpid(),
            started_at=parts.started_at,
            paused=library.pause.active,
            paused_until=library.pause.until,
            scanning=(progress.seen, progress.known) if progress else None,
            last_scan_at=reconciler.last_scan_at,
            scans_completed=reconciler.scans_completed,
            tracks=view["tracks"],
            files=view["files"],
            queued=queue.queued,
            analyzing=queue.analyzing,
            idle=library.idle,
            settling=parts.watcher.pending,
            phases=queue.phases(),
            progress=_progress(queue),
            workers=parts.pool.alive,
            waiting_to_sync=view["outbox"],
            known_to_catalog=view["known_to_catalog"],
            parked=view["parked"],
            parked_reasons=view["parked_reasons"],
            failing_files=view["failed"],
            folders=list(parts.folders),
            missing_folders=dict(reconciler.missing_folders),
            unreadable=len(unreadable),
            unreadable_paths=[(display_path(path), why) for path, why in unreadable[:20]],
            watch=watch,
            events_seen=parts.watcher.events_seen,
            session=dict(library.stats),
            journal_rebuilt_from=parts.journal_rebuilt_from,
            journal_error=journal_error,
            catalog=sync["catalog"],
            contribute=sync["contribute"],
            syncing=sync["syncing"],
            last_sync_at=sync["last_sync_at"],
            last_sync_error=sync["last_sync_error"],
            offline=sync["offline"],
            next_retry_at=sync["next_retry_at"],
            deletion=sync["deletion"],
            sent_this_session=sync["sent_this_session"],
            problems=_problems(journal_error, sync, reconciler.missing_folders, unreadable, view, watch,
                               parts.journal_rebuilt_from),
        )

    async def _journal_view(self) -> dict:
        """The journal's counts, read again only after a write (a tray polling an idle agent of
        100,000 files costs nothing)."""
        writes = self._parts.io.writes
        if self._view is None or self._view[0] != writes:
            self._view = (writes, await self._parts.io.read(_journal_view))
        return self._view[1]

    async def pause(self, body: dict) -> Status:
        seconds = body.get("seconds")
        if seconds is not None and (isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or seconds <= 0):
            raise QueryError("seconds must be a positive number")
        await self._parts.library.pause.pause(time.time() + seconds if seconds else None)
        return await self.status()

    async def resume(self, _body: dict) -> Status:
        await self._parts.library.pause.resume()
        return await self.status()

    async def rescan(self, _body: dict) -> Status:
        self._parts.library.request_scan()  # coalesced with one in progress: it runs once after
        return await self.status()

    async def sync(self, _body: dict) -> Status:
        await self._parts.syncer.sync_now(timeout=120)
        return await self.status()

    async def settings(self, body: dict) -> Status:
        if not isinstance(body.get("contribute"), bool):
            raise QueryError("contribute must be true or false")
        self._parts.syncer.set_contribute(body["contribute"])
        return await self.status()

    async def forget(self, _body: dict) -> Status:
        syncer = self._parts.syncer
        syncer.request_deletion()
        try:
            await syncer.sync_now(timeout=60)
        except TimeoutError:
            pass  # durable: it is sent when the catalog can be reached
        return await self.status()

    async def export(self, _body: dict) -> dict:
        try:
            catalog = await self._parts.syncer.export()
        except Backoff as exc:
            catalog = {"error": f"the catalog could not be reached: {exc}"}
        return {"journal": await self._parts.io.read(lambda journal: journal.export()), "catalog": catalog}

    async def preview(self, _body: dict) -> dict:
        syncer = self._parts.syncer
        batch = await syncer.next_batch()
        return {
            "contribute": syncer.contribute,
            "catalog": syncer.label,
            "request": {"method": "POST", "path": "/v1/observations", "body": {"observations": [i for _, i in batch]}},
        }


    # --- the DJ's library: dj/usecases.py, the same functions the CLI calls ---------------

    async def _on_collection(self, work):
        from cratesense.dj.collection import Collection

        return await self._parts.io.read(lambda reader: work(Collection(reader)))

    def dj_command(self, name: str):
        """The route of one of the DJ's read-only commands."""

        async def route(body: dict) -> dict:
            from cratesense.dj.usecases import READ_COMMANDS

            command = READ_COMMANDS[name]
            return await self._on_collection(lambda collection: command(collection, body, self._parts.dj))

        return route

    async def audio(self, values: dict) -> Playable | None:
        """The library file a track's preview streams, opened and checked (``dj/usecases.audio``),
        or None: the page answers 404."""
        from cratesense.dj.usecases import audio

        return await self._on_collection(lambda collection: audio(collection, values))

    async def tags(self, body: dict) -> dict:
        """Write (or with ``dry_run`` only show) the tag fields into the files of the named
        tracks (all tracks when none are named); a key the analysis is unsure of only
        with ``include_uncertain``."""
        from cratesense.dj.usecases import tag_plan

        writer = self._parts.tag_writer
        if writer is None:
            raise QueryError("tags cannot be written by this agent")
        plan = await self._on_collection(lambda collection: tag_plan(collection, body))
        files = {track.content_key: paths for track, paths in plan.tracks}
        results = await writer.write_tracks([track for track, _ in plan.tracks], plan.fields,
                                            dry_run=plan.dry_run, include_uncertain=plan.include_uncertain,
                                            files_of=lambda track: files[track.content_key],
                                            replace_words=plan.replace_words)
        return {"dry_run": plan.dry_run, "files": [
            {"path": r.path, "changes": [c.describe() for c in r.changes], "error": r.error, "notes": list(r.notes)}
            for r in results]}

    async def recommendations(self, _body: dict) -> dict:
        return await self._parts.syncer.recommendations()

    async def overview(self, _body: dict | None = None) -> dict:
        """The library as a whole: its tempi, its keys (per Camelot code), its loudness."""
        return await self._parts.io.read(lambda reader: reader.overview())

    async def failures(self, _body: dict | None = None) -> dict:
        def read(journal: JournalReader) -> dict:
            return {"files": [{"path": display_path(path), "kind": kind, "reason": reason}
                              for path, kind, reason in journal.failures()],
                    "parked": [{"observation": oid, "reason": reason} for oid, reason in journal.parked()]}

        return await self._parts.io.read(read)

    async def web(self, _body: dict) -> dict:
        """The local web page's address, with its access token (``cratesense open``)."""
        page = self._parts.web
        if page is None:
            raise QueryError("the web page is off (web.enabled = false in the config)")
        if page.url is None:
            raise QueryError(page.error or "the web page is not up")
        return {"url": page.url}


def _progress(queue) -> Progress | None:
    if queue.empty or queue.backlog_started_at is None:
        return None
    done, total = queue.backlog_done, queue.backlog_done + queue.queued + queue.analyzing
    elapsed = time.monotonic() - queue.backlog_started_at
    rate = 60.0 * done / elapsed if done and elapsed > 0 else None
    eta = (total - done) / rate * 60.0 if rate else None
    return Progress(done=done, total=total, files_per_minute=round(rate, 1) if rate else None,
                    eta_seconds=round(eta) if eta is not None else None)


def _problems(journal_error, sync, missing, unreadable, view, watch, rebuilt_from) -> list[Problem]:
    """Every problem the user can act on, each in the words that say what to do."""
    problems = []
    if journal_error:
        problems.append(Problem("journal", journal_error))
    if rebuilt_from:
        problems.append(Problem("journal", f"the journal was damaged; it was moved to {rebuilt_from} and "
                                           "rebuilt by a rescan"))
    if sync["last_sync_error"]:
        problems.append(Problem("sync", sync["last_sync_error"]))
    for folder, why in missing.items():
        problems.append(Problem("folder", f"{folder}: {why}"))
    for path, why in unreadable[:20]:
        problems.append(Problem("unreadable", f"{display_path(path)}: {why} (its tracks are kept)"))
    if view["failed"]:
        problems.append(Problem("failing", f"{view['failed']} file(s) could not be analyzed (cratesense failures)"))
    if view["parked"]:
        problems.append(Problem("parked", f"{view['parked']} observation(s) refused by the catalog "
                                          "(cratesense failures)"))
    for folder, mode in watch.items():
        if mode.mode == "polling" and "config" not in mode.reason:
            problems.append(Problem("watch", f"{folder} is polled, not watched live: {mode.reason}"))
    return problems
