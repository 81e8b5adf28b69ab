"""The control API's server: how a running agent answers the CLI, the tray and the web page.

An aiohttp server on a Unix socket in the user's runtime folder: the folder is 0700 and the
socket is created under a restrictive umask, so it is 0600 from birth (never chmod'ed after).
Where there are no Unix sockets (or with CRATESENSE_CONTROL=tcp) it listens on loopback TCP
instead and writes the port and a random token to ``control.json``, created 0600: only the
user can read the token, and every request must carry it. The agent's instance lock guards
it: a second agent cannot take the socket over. The routes themselves are ``daemon/api.py``'s;
the client is ``daemon/control_client.py``.
"""

from __future__ import annotations

import hmac
import json
import logging
import os
import secrets
import socket
from collections.abc import Awaitable, Callable
from pathlib import Path

import msgspec
from aiohttp import web

from cratesense.daemon.control_client import tcp_file
from cratesense.errors import CrateSenseError

log = logging.getLogger(__name__)

# A handler gets the JSON body (and the query string's values) and answers with a dict or a
# msgspec Struct; a CrateSenseError becomes its ``http_status`` with its message and kind, and
# anything else is a bug of ours: a 500, logged with its traceback (``failed``).
Handler = Callable[[dict], Awaitable[object]]


def use_tcp() -> bool:
    return not hasattr(socket, "AF_UNIX") or os.environ.get("CRATESENSE_CONTROL") == "tcp"


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
            app.router.add_route(method, f"/v1/{name}", _wrap(handler))
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
                port = self._runner.addresses[0][1]
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


def answer(value: object) -> web.Response:
    """A handler's answer as JSON (msgspec encodes Structs and plain data alike)."""
    return web.Response(body=msgspec.json.encode(value), content_type="application/json")


def failed(exc: Exception, route: str) -> tuple[int, dict]:
    """The status and body that say what went wrong in ``route`` (for the control API and the
    web page alike): the user's mistake or a state of the agent as itself, a bug as a 500."""
    if isinstance(exc, CrateSenseError):
        return exc.http_status, {"error": str(exc), "kind": exc.kind}
    log.exception("the control API's %s failed", route)
    return 500, {"error": f"internal error in {route} ({type(exc).__name__}); the agent's log has the details",
                 "kind": "internal"}


def _wrap(handler: Handler):
    async def handle(request: web.Request) -> web.Response:
        try:
            body = await request.json() if request.can_read_body else {}
            if not isinstance(body, dict):
                raise ValueError("expected a JSON object")
        except ValueError as exc:
            return web.json_response({"error": f"bad request: {exc}", "kind": "query"}, status=400)
        body = {**request.query, **body}
        try:
            return answer(await handler(body))
        except Exception as exc:
            status, error = failed(exc, request.path)
            return web.json_response(error, status=status)

    return handle
