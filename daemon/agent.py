"""The agent's composition root: ``cratesense run`` (and ``cratesense scan``, the same agent for
one pass).

Starts every component in dependency order (instance lock, journal, identity, analysis pool,
catalog and sync, library, watcher, control socket, scheduler) and stops them in reverse in a
``finally``, each within a timeout, logging anything that did not stop. It only wires parts
together: a file's life is in ``analysis_queue.py``, the disk in ``reconciler.py``, the one
loop over both in ``library.py``, the control routes in ``api.py``.
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

from cratesense import __version__
from cratesense.daemon.api import ControlAPI, Parts
from cratesense.daemon.config import Config
from cratesense.daemon.identity import Identity
from cratesense.daemon.instance import InstanceLock
from cratesense.daemon.journal_io import JournalIO
from cratesense.daemon.library import Library
from cratesense.daemon.paths import socket_path
from cratesense.daemon.pool import AnalysisPool
from cratesense.daemon.status import Status
from cratesense.daemon.sync import Syncer, adopt_choices
from cratesense.daemon.tag_writer import TagWriter
from cratesense.daemon.watcher import Watcher

log = logging.getLogger(__name__)

STOP_TIMEOUT = 3.0  # per component; the whole shutdown stays under 5 s
CLOCK_CHECK_SECONDS = 5.0
CLOCK_JUMP_TOLERANCE = 30.0  # NTP slews; a jump this large is a step (RTC reset, manual change)
WRITE_DELAY_VARIABLE = "CRATESENSE_DEBUG_WRITE_DELAY"  # seconds added to every journal write (tests)


class Agent:
    """One running agent. ``run(stop)`` returns once ``stop`` is set and everything stopped."""

    def __init__(self, config: Config, data_dir: Path, runtime_dir: Path) -> None:
        self.config = config
        self.data_dir = data_dir
        self.socket_path = socket_path(runtime_dir)
        self.started_at = time.time()
        self.ready = asyncio.Event()
        self.api: ControlAPI | None = None
        self.library: Library | None = None
        self.syncer: Syncer | None = None

    async def run(self, stop: asyncio.Event) -> None:
        async with contextlib.AsyncExitStack() as stack:
            await self._start(stack, live=True)
            self.ready.set()
            notify_service_manager("READY=1")
            log.info("agent %s ready: watching %s", __version__, ", ".join(self.config.music_folders))
            await stop.wait()
            notify_service_manager("STOPPING=1")
            log.info("stopping")

    async def run_once(self, on_status: Callable[[Status], None] | None = None) -> Status:
        """One reconciliation and analysis pass, then a sync, then stop (``cratesense scan``):
        the same parts as ``run``, without the watcher, the control socket and the timers."""
        async with contextlib.AsyncExitStack() as stack:
            await self._start(stack, live=False)
            library, api, syncer = self.library, self.api, self.syncer
            assert library is not None and api is not None and syncer is not None, "set by _start"
            library.request_scan()
            while True:
                await asyncio.sleep(0.2)
                if on_status is not None:
                    on_status(await api.status())
                if library.idle:
                    break
            with contextlib.suppress(asyncio.TimeoutError):
                await syncer.sync_now(timeout=120)
            return await api.status()

    async def _start(self, stack: contextlib.AsyncExitStack, *, live: bool) -> None:
        def on_stop(name: str, stop: Callable[[], Awaitable[None] | None]) -> None:
            stack.push_async_callback(_stop_within, name, stop)

        lock = InstanceLock(self.data_dir / "agent.lock").acquire()
        on_stop("instance lock", lock.release)

        io = JournalIO(self.data_dir / "journal.sqlite", write_delay=float(os.environ.get(WRITE_DELAY_VARIABLE) or 0))
        damaged = await io.open()
        on_stop("journal", io.close)
        if damaged:
            log.warning("the journal was damaged; moved it to %s and started a new one (a rescan fills it)", damaged)

        identity = Identity(self.data_dir / "identity.json")
        await io.read(lambda journal: adopt_choices(identity, journal))

        analysis = self.config.analysis
        pool = AnalysisPool(self.config.workers, analysis.timeout_seconds, analysis.nice,
                            idle_seconds=analysis.idle_worker_seconds)
        on_stop("analysis pool", lambda: asyncio.to_thread(pool.close))

        self.syncer = syncer = await self._start_sync(io, identity, on_stop)
        if self.config.sync.catalog_url and syncer.contribute:
            await syncer.register()  # before the first scan: what the catalog knows skips its descriptors from the start

        self.library = library = await Library.assemble(
            io, pool, self.config.music_folders, secret=identity.secret, catalog=syncer,
            skip_known_min_contributors=self._skip_known_min_contributors(), bpm_range=analysis.bpm_range,
            on_change=syncer.notify_change)
        on_stop("library", _task(library.run(), "library"))
        tag_writer = TagWriter(io, pool, self.config.tags, self.config.dj.key_notation)
        if self.config.tags.write_new:
            library.queue.after_recorded = tag_writer.after_analysis

        settings = self.config.library
        watcher = Watcher(
            self.config.music_folders if live else (),
            library.paths_changed,
            configured=settings.watch,
            quiet_seconds=settings.quiet_seconds,
            poll_interval_seconds=settings.poll_interval_seconds,
            on_folders_changed=library.request_scan,
        )
        if live:
            await watcher.start()  # before the first scan: nothing that changes during it is missed
            on_stop("watcher", watcher.stop)

        self.api = api = ControlAPI(Parts(io, library, pool, syncer, watcher, self.config.music_folders,
                                          self.started_at, str(damaged) if damaged else None, self.config.dj,
                                          tag_writer))
        if not live:
            return

        from cratesense.daemon.control import ControlServer

        control = ControlServer(self.socket_path, api.routes())
        await control.start()
        on_stop("control socket", control.stop)

        if self.config.web.enabled:
            from cratesense.daemon.web import WebPage, new_token

            token = identity.get("web_token")
            if token is None:  # kept: a page open in the browser stays open across restarts
                token = new_token()
                identity.set("web_token", token)
            page = WebPage(api, token, self.config.web.port)
            await page.start()  # a port in use is a status, not a failure to start
            api.attach_web(page)
            on_stop("web page", page.stop)

        from apscheduler.schedulers.asyncio import AsyncIOScheduler

        # a run that is late (a suspended laptop, a busy loop) still runs, once (coalesced)
        scheduler = AsyncIOScheduler(
            event_loop=asyncio.get_running_loop(), job_defaults={"misfire_grace_time": None, "coalesce": True}
        )

        async def scan_due() -> None:  # a coroutine: it runs on the loop, not in a thread
            library.request_scan()

        async def sync_due() -> None:
            syncer.request()

        interval = settings.scan_interval_minutes * 60
        # many agents, one catalog: never in lockstep; the first run is one interval from now
        scheduler.add_job(scan_due, "interval", seconds=interval, jitter=interval / 10, id="scan")
        sync_interval = self.config.sync.interval_minutes * 60
        scheduler.add_job(sync_due, "interval", seconds=sync_interval, jitter=sync_interval / 10, id="sync",
                          next_run_time=datetime.now())  # and once at start: the backlog
        scheduler.start()
        on_stop("scheduler", lambda: scheduler.shutdown(wait=False))
        on_stop("clock follower", _task(follow_clock_jumps(scheduler), "clock follower"))
        library.request_scan()  # the first scan

    async def _start_sync(self, io: JournalIO, identity: Identity, on_stop) -> Syncer:
        """The sync client, and the embedded catalog when no catalog URL is configured: the
        same HTTP code path, over a private Unix socket, with its database in the data folder,
        served from its own thread."""
        import aiohttp

        settings = self.config.sync
        if settings.catalog_url:
            url, label, connector = settings.catalog_url, settings.catalog_url, None
        else:
            from cratesense.daemon.embedded_catalog import EmbeddedCatalog

            catalog = EmbeddedCatalog(self.data_dir / "catalog.sqlite", self.socket_path.parent / "catalog.sock")
            await asyncio.to_thread(catalog.start)
            on_stop("embedded catalog", lambda: asyncio.to_thread(catalog.stop))
            url, label, connector = "http://embedded-catalog", "embedded", str(catalog.socket)

        def session() -> aiohttp.ClientSession:
            return aiohttp.ClientSession(connector=aiohttp.UnixConnector(path=connector) if connector else None)

        syncer = Syncer(io, identity, url, session, label=label, quiet_seconds=settings.quiet_seconds,
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


async def follow_clock_jumps(scheduler) -> None:
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
    except TimeoutError:
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

    from cratesense.errors import TrayUnavailableError
    from cratesense.tray.app import run_tray

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
