"""The tray: a small pystray front end that sees the agent only through its control socket.

``TrayController`` holds the menu logic (what each item says, whether it is checked, what it
does) and is tested with pystray's dummy backend; ``run_tray`` puts it on a real icon. pystray
owns the main thread (macOS requires it); status polling and every action run on worker
threads, so the menu never waits for the agent.
"""

from __future__ import annotations

import datetime
import logging
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from cratesense.daemon.control_client import request, seconds_until, write_export
from cratesense.daemon.control_client import status as agent_status
from cratesense.daemon.paths import socket_path
from cratesense.daemon.status import Status
from cratesense.errors import ControlError, CrateSenseError, NotRunningError, TrayUnavailableError
from cratesense.tray.icons import draw_icon, state_of

log = logging.getLogger(__name__)

POLL_SECONDS = 2.0


def load_pystray():
    """pystray, or one clear line: it raises at import time when there is no display."""
    try:
        import pystray
    except Exception as exc:  # Xlib.error.DisplayNameError and friends
        raise TrayUnavailableError(
            f"no tray is available here ({type(exc).__name__}: {exc}); the agent runs fine without it"
        ) from None
    return pystray


class TrayController:
    """The menu's logic against the agent at ``socket``."""

    def __init__(self, socket: Path | None = None, *, start_agent: Callable[[], None] | None = None,
                 export_folder: Path | None = None) -> None:
        self.socket = socket or socket_path()
        self.status: Status | None = None
        self.message = ""  # the outcome of the last action, shown in the status line
        self._start_agent = start_agent or _start_agent_process
        self._export_folder = export_folder or Path.home() / "CrateSense export"
        self._workers = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tray-action")
        self.on_change: Callable[[], None] = lambda: None

    # --- state -----------------------------------------------------------------------------

    def refresh(self) -> None:
        try:
            self.status = agent_status(path=self.socket, timeout=5)
        except NotRunningError:
            self.status = None
        except ControlError as exc:
            self.status, self.message = None, str(exc)
        self.on_change()

    @property
    def running(self) -> bool:
        return self.status is not None

    @property
    def icon_state(self) -> str:
        return state_of(self.status)

    def status_line(self) -> str:
        s = self.status
        if s is None:
            return "CrateSense agent is not running"
        words = {"watching": "Up to date", "scanning": "Scanning", "analyzing": "Analyzing", "syncing": "Syncing",
                 "paused": "Paused", "offline": "Offline"}
        errors = {"journal": "Journal error", "sync": "Sync error"}
        state = errors.get(s.error_kind or "", "Error") if s.state == "error" else words.get(s.state, s.state)
        line = f"{state} · {s.tracks} tracks"
        busy = s.queued + s.analyzing
        if busy:
            line += f" · {busy} to analyze"
        if s.waiting_to_sync:
            line += f" · {s.waiting_to_sync} to sync"
        if s.failing_files:
            line += f" · {s.failing_files} failing"
        if s.state == "error" and s.error_kind == "journal" and s.journal_error:
            line += f" — {s.journal_error}"
        return line + (f" — {self.message}" if self.message else "")

    # --- actions (each on the worker thread) -----------------------------------------------

    def _do(self, method: str, name: str, body: dict | None = None, *, timeout: float = 10, done: str = "") -> None:
        def work() -> None:
            try:
                request(method, name, body, path=self.socket, timeout=timeout)
                self.message = done
            except CrateSenseError as exc:
                self.message = str(exc)
            self.refresh()

        self._workers.submit(work)

    def toggle_pause(self) -> None:
        self._do("POST", "resume" if self.status and self.status.paused else "pause")

    def pause_for_an_hour(self) -> None:
        self._do("POST", "pause", {"seconds": 3600})

    def pause_until_tomorrow(self) -> None:
        self._do("POST", "pause", {"seconds": seconds_until(datetime.time(6, 0))})

    def toggle_contribute(self) -> None:
        contribute = not (self.status and self.status.contribute)
        self._do("PUT", "settings", {"contribute": contribute})

    def sync_now(self) -> None:
        self._do("POST", "sync", timeout=150, done="synced")

    def rescan(self) -> None:
        self._do("POST", "rescan")

    def forget(self) -> None:
        self._do("POST", "forget", timeout=90, done="deletion requested")

    def export(self) -> None:
        def work() -> None:
            try:
                answer = request("GET", "export", path=self.socket, timeout=120)
                folder = self._export_folder / time.strftime("%Y-%m-%d %H.%M")
                write_export(answer, folder)
                self.message = f"exported to {folder}"
                _open_folder(folder)
            except (CrateSenseError, OSError) as exc:
                self.message = f"export failed: {exc}"
            self.refresh()

        self._workers.submit(work)

    def open_page(self) -> None:
        """The local web page, in the default browser."""

        def work() -> None:
            try:
                url = request("GET", "web", path=self.socket, timeout=5)["url"]
                import webbrowser

                if not webbrowser.open(url):
                    self.message = f"open {url}"
            except CrateSenseError as exc:
                self.message = str(exc)
            self.on_change()

        self._workers.submit(work)

    def start_agent(self) -> None:
        self._start_agent()
        self.message = "starting the agent…"
        self.on_change()

    def close(self) -> None:
        self._workers.shutdown(wait=False, cancel_futures=True)

    # --- the menu ----------------------------------------------------------------------------

    def menu(self, pystray):
        item, menu = pystray.MenuItem, pystray.Menu
        up = lambda _item: self.running  # noqa: E731

        return menu(
            item(lambda _item: self.status_line(), None, enabled=False),
            menu.SEPARATOR,
            item("Start the agent", lambda: self.start_agent(), visible=lambda _item: not self.running),
            item("Open CrateSense…", lambda: self.open_page(), visible=up),
            item("Paused", lambda: self.toggle_pause(), checked=lambda _item: bool(self.status and self.status.paused),
                 visible=up),
            item("Pause for 1 hour", lambda: self.pause_for_an_hour(), visible=up),
            item("Pause until tomorrow", lambda: self.pause_until_tomorrow(), visible=up),
            item("Contribute to shared catalog", lambda: self.toggle_contribute(),
                 checked=lambda _item: bool(self.status and self.status.contribute), visible=up),
            item("Sync now", lambda: self.sync_now(), visible=up),
            item("Rescan library", lambda: self.rescan(), visible=up),
            item("Open export…", lambda: self.export(), visible=up),
            item("Delete my contributions…", menu(
                item("This deletes everything you contributed", None, enabled=False),
                item("Yes, delete and stop contributing", lambda: self.forget()),
            ), visible=up),
            menu.SEPARATOR,
            item("Quit tray", lambda icon, _item: icon.stop()),
        )


def _start_agent_process() -> None:
    """The agent as its own process (it outlives the tray)."""
    subprocess.Popen([sys.executable, "-m", "cratesense", "run"], stdin=subprocess.DEVNULL,
                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)


def _open_folder(folder: Path) -> None:
    opener = "open" if sys.platform == "darwin" else "xdg-open"
    if shutil.which(opener):
        subprocess.Popen([opener, str(folder)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def run_tray(socket: Path | None = None, *, on_quit: Callable[[], None] | None = None) -> None:
    """The tray icon on the main thread until "Quit tray" (or ``icon.stop()`` from elsewhere)."""
    pystray = load_pystray()
    controller = TrayController(socket)
    icon = pystray.Icon("cratesense", draw_icon("offline"), "CrateSense", controller.menu(pystray))
    stop = threading.Event()
    shown: dict[str, str | None] = {"state": None, "line": None}

    def redraw() -> None:
        state, line = controller.icon_state, controller.status_line()
        if state != shown["state"]:
            icon.icon = draw_icon(state)
            shown["state"] = state
        if line != shown["line"]:
            log.debug("the tray shows: %s", line)  # (--debug) what the menu's first line now says
            shown["line"] = line
        icon.title = line
        icon.update_menu()

    controller.on_change = redraw

    def poll(icon_) -> None:
        icon_.visible = True
        while not stop.is_set():
            controller.refresh()
            stop.wait(POLL_SECONDS)

    try:
        icon.run(setup=lambda icon_: threading.Thread(target=poll, args=(icon_,), daemon=True, name="tray-poll").start())
    finally:
        stop.set()
        controller.close()
        if on_quit:
            on_quit()
