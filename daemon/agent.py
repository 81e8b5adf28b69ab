"""The agent's composition root: ``cratesense run``.

Starts every component in dependency order (instance lock, journal, analysis pool, library,
watcher, control socket, scheduler) and stops them in reverse in a ``finally``, each within a
timeout, logging anything that did not stop. A failure inside a component becomes a status,
not a crash of the daemon.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import time
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from pathlib import Path

import aiohttp
from apscheduler.schedulers.asyncio import AsyncIOScheduler

from cratesense import __version__
from cratesense.analysis.constants import ANALYZER_VERSION
from cratesense.daemon.config import Config
from cratesense.daemon.control import ControlServer, socket_path
from cratesense.daemon.identity import Identity
from cratesense.daemon.instance import InstanceLock
from cratesense.daemon.journal import Journal, display_path
from cratesense.daemon.library import Library
from cratesense.daemon.pool import AnalysisPool
from cratesense.daemon.sync import Backoff, Syncer
from cratesense.daemon.watcher import Watcher

log = logging.getLogger(__name__)

STOP_TIMEOUT = 3.0  # per component; the whole shutdown stays under 5 s
CLOCK_CHECK_SECONDS = 5.0
CLOCK_JUMP_TOLERANCE = 30.0  # NTP slews; a jump this large is a step (RTC reset, manual change)


class Agent:
    """One running agent. ``run(stop)`` returns once ``stop`` is set and everything stopped."""

    def __init__(self, config: Config, data_dir: Path, runtime_dir: Path) -> None:
        self.config = config
        self.data_dir = data_dir
        self.socket_path = socket_path(runtime_dir)
        self.started_at = time.time()
        self.journal: Journal | None = None
        self.library: Library | None = None
        self.watcher: Watcher | None = None
        self.ready = asyncio.Event()
        self.journal_rebuilt_from: str | None = None

    async def run(self, stop: asyncio.Event) -> None:
        async with contextlib.AsyncExitStack() as stack:
            await self._start(stack)
            self.ready.set()
            notify_service_manager("READY=1")
            log.info("agent %s ready: watching %s", __version__, ", ".join(self.config.music_folders))
            await stop.wait()
            notify_service_manager("STOPPING=1")
            log.info("stopping")

    async def _start(self, stack: contextlib.AsyncExitStack) -> None:
        def on_stop(name: str, stop: Callable[[], Awaitable[None] | None]) -> None:
            stack.push_async_callback(_stop_within, name, stop)

        lock = InstanceLock(self.data_dir / "agent.lock").acquire()
        on_stop("instance lock", lock.release)

        self.journal, damaged = Journal.open_or_rebuild(self.data_dir / "journal.sqlite")
        journal = self.journal
        on_stop("journal", journal.close)
        if damaged:
            log.warning("the journal was damaged; moved it to %s and started a new one (a rescan fills it)", damaged)
            self.journal_rebuilt_from = str(damaged)

        analysis = self.config.analysis
        pool = await asyncio.to_thread(AnalysisPool, self.config.workers, analysis.timeout_seconds, analysis.nice)
        on_stop("analysis pool", lambda: asyncio.to_thread(pool.close))

        self.identity = Identity(self.data_dir / "identity.json")
        self.syncer = syncer = await self._start_sync(journal, on_stop)

        self.library = library = Library(
            journal,
            pool,
            self.config.music_folders,
            secret=self.identity.secret,
            bpm_range=analysis.bpm_range,
            on_change=syncer.notify_change,
            catalog=syncer,
            skip_known_min_contributors=self._skip_known_min_contributors(),
        )
        on_stop("library", _task(library.run(), "library"))

        settings = self.config.library
        self.watcher = watcher = Watcher(
            self.config.music_folders,
            library.refresh,
            configured=settings.watch,
            quiet_seconds=settings.quiet_seconds,
            poll_interval_seconds=settings.poll_interval_seconds,
            on_folders_changed=self._scan,  # waits for a scan in progress, then scans again
        )
        await watcher.start()  # before the first scan: nothing that changes during it is missed
        on_stop("watcher", watcher.stop)

        control = ControlServer(self.socket_path, self._routes())
        await control.start()
        on_stop("control socket", control.stop)

        # a run that is late (a suspended laptop, a busy loop) still runs, once (coalesced)
        self.scheduler = scheduler = AsyncIOScheduler(
            event_loop=asyncio.get_running_loop(), job_defaults={"misfire_grace_time": None, "coalesce": True}
        )
        interval = settings.scan_interval_minutes * 60
        scheduler.add_job(
            self._scan,
            "interval",
            seconds=interval,
            jitter=interval / 10,  # many agents, one catalog: never in lockstep
            id="scan",
            max_instances=1,
        )  # first run one interval from now: the scan at start is the "first scan" task below
        sync_interval = self.config.sync.interval_minutes * 60
        scheduler.add_job(syncer.request, "interval", seconds=sync_interval, jitter=sync_interval / 10, id="sync",
                          coalesce=True, next_run_time=datetime.now())  # and once at start: the backlog
        scheduler.start()
        on_stop("scheduler", lambda: scheduler.shutdown(wait=False))
        on_stop("clock follower", _task(follow_clock_jumps(scheduler), "clock follower"))
        on_stop("first scan", _task(self._scan(), "first scan"))

    async def _start_sync(self, journal: Journal, on_stop) -> Syncer:
        """The sync client, and the embedded catalog when no catalog URL is configured: the
        same HTTP code path, over a private Unix socket, with its database in the data folder."""
        settings = self.config.sync
        if settings.catalog_url:
            url, label, connector = settings.catalog_url, settings.catalog_url, None
        else:
            from cratesense.catalog.server import start_unix
            from cratesense.catalog.store import Store

            store = Store(self.data_dir / "catalog.sqlite")
            on_stop("embedded catalog database", store.close)
            catalog_socket = self.socket_path.parent / "catalog.sock"
            catalog_socket.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            runner = await start_unix(store, catalog_socket)
            on_stop("embedded catalog", runner.cleanup)
            url, label, connector = "http://embedded-catalog", "embedded", str(catalog_socket)

        def session() -> aiohttp.ClientSession:
            return aiohttp.ClientSession(connector=aiohttp.UnixConnector(path=connector) if connector else None)

        syncer = Syncer(journal, self.identity, url, session, label=label, quiet_seconds=settings.quiet_seconds,
                        contribute_default=settings.contribute)
        on_stop("sync", _task(syncer.run(), "sync"))
        return syncer

    def _skip_known_min_contributors(self) -> int | None:
        """Fingerprint first only where it can pay: the embedded catalog holds nothing but our
        own observations, so there an unknown track would just cost a second pass (~12 %)."""
        settings = self.config.sync
        if not settings.skip_known_descriptors or not settings.catalog_url:
            return None
        return max(1, settings.known_min_contributors)

    async def _scan(self) -> None:
        try:
            await self.library.scan()
        except Exception:  # recorded as a status; the next scan tries again
            log.exception("scan failed")

    # --- control API ---------------------------------------------------------------------

    def _routes(self):
        return {
            ("GET", "status"): self._status,
            ("POST", "pause"): self._pause,
            ("POST", "resume"): self._resume,
            ("POST", "rescan"): self._rescan,
            ("POST", "sync"): self._sync,
            ("PUT", "settings"): self._settings,
            ("POST", "forget"): self._forget,
            ("GET", "export"): self._export,
            ("GET", "preview"): self._preview,
        }

    async def _sync(self, _body: dict) -> dict:
        await self.syncer.sync_now(timeout=120)
        return self.status()

    async def _settings(self, body: dict) -> dict:
        if not isinstance(body.get("contribute"), bool):
            raise ValueError("contribute must be true or false")
        self.syncer.set_contribute(body["contribute"])
        return self.status()

    async def _forget(self, _body: dict) -> dict:
        self.syncer.request_deletion()
        try:
            await self.syncer.sync_now(timeout=60)
        except asyncio.TimeoutError:
            pass  # durable: it is sent when the catalog can be reached
        return self.status()

    async def _export(self, _body: dict) -> dict:
        try:
            catalog = await self.syncer.export()
        except Backoff as exc:
            catalog = {"error": f"the catalog could not be reached: {exc}"}
        return {"journal": self.journal.export(), "catalog": catalog}

    async def _preview(self, _body: dict) -> dict:
        batch = self.syncer.next_batch()
        return {
            "contribute": self.syncer.contribute,
            "catalog": self.syncer.label,
            "request": {"method": "POST", "path": "/v1/observations", "body": {"observations": [i for _, i in batch]}},
        }

    async def _status(self, _body: dict) -> dict:
        return self.status()

    async def _pause(self, body: dict) -> dict:
        seconds = body.get("seconds")
        if seconds is not None and (not isinstance(seconds, (int, float)) or seconds <= 0):
            raise ValueError("seconds must be a positive number")
        self.library.pause(time.time() + seconds if seconds else None)
        return self.status()

    async def _resume(self, _body: dict) -> dict:
        self.library.resume()
        return self.status()

    async def _rescan(self, _body: dict) -> dict:
        # the scheduler's job, run now: its own lock keeps scans from overlapping
        self.scheduler.modify_job("scan", next_run_time=datetime.now())
        return self.status()

    def status(self) -> dict:
        library, counts, sync = self.library, self.journal.counts(), self.syncer.status()
        if library.journal_error:
            state = "error"
        elif library.paused:
            state = "paused"
        elif sync["offline"]:
            state = "offline"
        elif library.scanning is not None:
            state = "scanning"
        elif library.analyzing or library.queued:
            state = "analyzing"
        elif sync["syncing"]:
            state = "syncing"
        elif sync["last_sync_error"]:
            state = "error"
        else:
            state = "watching"
        return {
            "state": state,
            "version": __version__,
            "analyzer_version": ANALYZER_VERSION,
            "pid": os.getpid(),
            "started_at": self.started_at,
            "paused": library.paused,
            "paused_until": library.paused_until,
            "scanning": list(library.scanning) if library.scanning else None,
            "last_scan_at": library.last_scan_at,
            "tracks": counts["tracks"],
            "files": counts["files"],
            "queued": library.queued,
            "analyzing": library.analyzing,
            "waiting_to_sync": counts["outbox"],
            "known_to_catalog": self.journal.known_to_catalog(),
            "parked": counts["parked"],
            "parked_reasons": [reason for _, reason in self.journal.parked(5)],
            "failing_files": counts["failed"],
            "folders": list(self.config.music_folders),
            "missing_folders": library.missing_folders,
            "unreadable": len(library.unreadable),
            "unreadable_paths": [[display_path(path), why] for path, why in library.unreadable[:20]],
            "watch": {folder: {"mode": m.mode, "reason": m.reason} for folder, m in self.watcher.modes.items()},
            "events_seen": self.watcher.events_seen,
            "session": dict(library.stats),
            "journal_rebuilt_from": self.journal_rebuilt_from,
            "journal_error": library.journal_error,
            **sync,
        }


async def follow_clock_jumps(scheduler: AsyncIOScheduler) -> None:
    """APScheduler plans in wall-clock time: after the clock jumps back an hour, every periodic
    job would wait an extra hour (after a reset to 2001, decades). Compared with the monotonic
    clock, a jump is seen within seconds and the jobs' next runs move with it, so they keep
    their pace."""
    wall, steady = time.time(), time.monotonic()
    while True:
        await asyncio.sleep(CLOCK_CHECK_SECONDS)
        jump = (time.time() - wall) - (time.monotonic() - steady)
        wall, steady = time.time(), time.monotonic()
        if abs(jump) < CLOCK_JUMP_TOLERANCE:
            continue
        log.warning("the system clock jumped %+.0f s; periodic scans and syncs keep their pace", jump)
        for job in scheduler.get_jobs():
            if job.next_run_time is not None:
                job.modify(next_run_time=job.next_run_time + timedelta(seconds=jump))


def notify_service_manager(message: str) -> None:
    """sd_notify(3) without libsystemd: one datagram to $NOTIFY_SOCKET, when systemd set it."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return
    import socket

    if address.startswith("@"):
        address = "\0" + address[1:]  # an abstract socket
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.sendto(message.encode(), address)
    except OSError as exc:
        log.warning("could not notify the service manager: %s", exc)


def _task(coroutine, name: str) -> Callable[[], Awaitable[None]]:
    """Start ``coroutine`` as a task; return what cancels it."""
    task = asyncio.create_task(coroutine, name=name)

    async def cancel() -> None:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    return cancel


async def _stop_within(name: str, stop: Callable[[], Awaitable[None] | None]) -> None:
    try:
        result = stop()
        if asyncio.iscoroutine(result) or isinstance(result, asyncio.Future):
            await asyncio.wait_for(result, STOP_TIMEOUT)
    except asyncio.TimeoutError:
        log.warning("%s did not stop within %.0f s; leaving it behind", name, STOP_TIMEOUT)
    except Exception:
        log.exception("%s failed to stop cleanly", name)


def run_forever(agent: Agent) -> None:
    """Run ``agent`` until SIGTERM or SIGINT."""

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        await agent.run(stop)

    asyncio.run(main())


def run_with_tray(agent: Agent) -> None:
    """The agent and its tray icon in one process: pystray owns the main thread (macOS requires
    it), the agent's event loop runs beside it. Quitting the tray stops the agent; without a
    tray host the agent runs on alone, and says so once."""
    import threading

    from cratesense.tray.app import TrayUnavailableError, run_tray

    started = threading.Event()
    handles: dict = {}

    def agent_thread() -> None:
        async def main() -> None:
            handles["loop"], handles["stop"] = asyncio.get_running_loop(), asyncio.Event()
            started.set()
            await agent.run(handles["stop"])

        try:
            asyncio.run(main())
        finally:
            started.set()

    def stop(*_args) -> None:
        if "loop" in handles and not handles["loop"].is_closed():
            handles["loop"].call_soon_threadsafe(handles["stop"].set)

    thread = threading.Thread(target=agent_thread, name="agent")
    thread.start()
    started.wait()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, stop)
    try:
        run_tray(agent.socket_path, on_quit=stop)
    except TrayUnavailableError as exc:
        log.warning("%s", exc)
    while thread.is_alive():
        thread.join(timeout=0.5)  # wakes up for signals
