"""The control API: how the CLI and the tray talk to a running agent.

An aiohttp server on a Unix socket in the user's runtime folder: the folder is 0700 and the
socket is created under a restrictive umask, so it is 0600 from birth (never chmod'ed after).
Where there are no Unix sockets (or with CRATESENSE_CONTROL=tcp) it listens on loopback TCP
instead and writes the port and a random token to ``control.json``, created 0600: only the
user can read the token, and every request must carry it.
The agent's instance lock guards it: a second agent cannot take the socket over. The client is
plain ``http.client`` over the socket, so a CLI command needs no event loop and never hangs for
long (every request has a timeout).
"""

from __future__ import annotations

import datetime
import hmac
import http.client
import json
import logging
import os
import secrets
import socket
from collections.abc import Awaitable, Callable
from pathlib import Path

import platformdirs
from aiohttp import web

from cratesense.errors import CrateSenseError

log = logging.getLogger(__name__)

APP_NAME = "cratesense"


class NotRunningError(CrateSenseError):
    kind = "not-running"


class ControlError(CrateSenseError):
    kind = "control"


def runtime_dir() -> Path:
    """$XDG_RUNTIME_DIR/cratesense when set (platformdirs would silently pick another folder if
    its mode is not 0700, and the agent and the CLI could then disagree), else the platform's."""
    xdg = os.environ.get("XDG_RUNTIME_DIR")
    if xdg and os.path.isabs(xdg):
        return Path(xdg) / APP_NAME
    return Path(platformdirs.user_runtime_dir(APP_NAME))


def socket_path(folder: Path | None = None) -> Path:
    return (folder or runtime_dir()) / "control.sock"


Handler = Callable[[dict], Awaitable[dict]]


def use_tcp() -> bool:
    return not hasattr(socket, "AF_UNIX") or os.environ.get("CRATESENSE_CONTROL") == "tcp"


def tcp_file(path: Path) -> Path:
    """Where the TCP fallback writes its port and token: beside the socket it replaces."""
    return path.with_name("control.json")


class ControlServer:
    """Serves ``routes`` ({(method, name): handler(body) -> answer}) on the control socket."""

    def __init__(self, path: Path, routes: dict[tuple[str, str], Handler]) -> None:
        self.path = path
        self._routes = routes
        self._runner: web.AppRunner | None = None
        self._token: str | None = None

    async def start(self) -> None:
        app = web.Application(client_max_size=64 * 1024, middlewares=[self._authorize])
        for (method, name), handler in self._routes.items():
            app.router.add_route(method, f"/v1/{name}", self._wrap(handler))
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(self.path.parent, 0o700)
        for stale in (self.path, tcp_file(self.path)):  # of a dead agent (we hold the instance lock)
            if stale.exists() or stale.is_symlink():
                stale.unlink()
        old_umask = os.umask(0o177)
        try:
            if use_tcp():
                site = web.TCPSite(self._runner, "127.0.0.1", 0)
                await site.start()
                self._token = secrets.token_urlsafe(32)
                port = site._server.sockets[0].getsockname()[1]
                fd = os.open(tcp_file(self.path), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                with os.fdopen(fd, "w") as file:
                    json.dump({"port": port, "token": self._token}, file)
            else:
                await web.UnixSite(self._runner, str(self.path)).start()
        finally:
            os.umask(old_umask)

    @web.middleware
    async def _authorize(self, request: web.Request, handler):
        if self._token is not None:
            given = request.headers.get("Authorization", "").removeprefix("Bearer ")
            if not hmac.compare_digest(given.encode(), self._token.encode()):
                return web.json_response({"error": "the control token is missing or wrong"}, status=401)
        return await handler(request)

    async def stop(self) -> None:
        if self._runner:
            await self._runner.cleanup()
        for leftover in (self.path, tcp_file(self.path)):  # cleanup() leaves the socket file behind
            try:
                leftover.unlink()
            except FileNotFoundError:
                pass

    @staticmethod
    def _wrap(handler: Handler):
        async def handle(request: web.Request) -> web.Response:
            try:
                body = await request.json() if request.can_read_body else {}
                if not isinstance(body, dict):
                    raise ValueError("expected a JSON object")
            except ValueError as exc:
                return web.json_response({"error": f"bad request: {exc}"}, status=400)
            try:
                return web.json_response(await handler(body))
            except CrateSenseError as exc:
                return web.json_response({"error": str(exc)}, status=409)
            except (KeyError, TypeError, ValueError) as exc:
                return web.json_response({"error": f"bad request: {exc}"}, status=400)

        return handle


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: Path, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self._socket_path = str(path)

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(self.timeout)
        self.sock.connect(self._socket_path)


def request(method: str, name: str, body: dict | None = None, *, path: Path | None = None, timeout: float = 10.0) -> dict:
    """One call to the running agent; ``NotRunningError`` when there is none."""
    path = path or socket_path()
    headers = {"Content-Type": "application/json"}
    if not path.exists() and tcp_file(path).exists():  # the agent listens on loopback TCP
        try:
            endpoint = json.loads(tcp_file(path).read_text())
        except (OSError, ValueError) as exc:
            raise ControlError(f"cannot read {tcp_file(path)}: {exc}") from exc
        connection = http.client.HTTPConnection("127.0.0.1", endpoint["port"], timeout=timeout)
        headers["Authorization"] = f"Bearer {endpoint['token']}"
    else:
        connection = _UnixConnection(path, timeout)
    try:
        connection.request(method, f"/v1/{name}", body=json.dumps(body or {}), headers=headers)
        response = connection.getresponse()
        answer = json.loads(response.read() or b"{}")
    except (FileNotFoundError, ConnectionRefusedError):
        raise NotRunningError("the CrateSense agent is not running (start it with: cratesense run)") from None
    except (OSError, http.client.HTTPException, ValueError) as exc:
        raise ControlError(f"the agent did not answer ({exc})") from exc
    finally:
        connection.close()
    if response.status >= 400:
        raise ControlError(answer.get("error", f"the agent answered {response.status}"))
    return answer


def seconds_until(target: datetime.time) -> float:
    """Seconds from now to the next local ``target`` time (for "pause until ...": CLI and tray)."""
    now = datetime.datetime.now()
    when = datetime.datetime.combine(now.date(), target)
    if when <= now:
        when += datetime.timedelta(days=1)
    return (when - now).total_seconds()


def write_export(answer: dict, folder: Path) -> list[Path]:
    """The two documents of an export as JSON files in ``folder``, readable by the user only
    (the journal's holds file paths)."""
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for name in ("journal", "catalog"):
        path = folder / f"cratesense-{name}.json"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as file:
            json.dump(answer[name], file, indent=1, ensure_ascii=False)
        written.append(path)
    return written
