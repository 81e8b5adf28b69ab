"""The local web page: the library, the agent and the privacy controls in a browser.

Served by the agent on loopback only, and built not to be a local hole (Syncthing's GUI is the
model):

* every request needs the access token: from the URL once (``cratesense open`` gives it), then
  from an HttpOnly, SameSite=Strict cookie; the URL is cleaned of it by a redirect;
* the Host header must be the loopback address and port it serves (a DNS-rebinding page on
  another name reaches nothing);
* state changes are POST/PUT/DELETE with an Origin that is this page, never GETs;
* no file is served but the page's own assets (a fixed list, no path from the request ever
  touches the file system) and a library track's audio for the preview, named by its content key
  only and served only while it is the file the journal analyzed; exports are generated, not
  read from disk.

Its JSON API is a thin layer over the control API (``daemon/api.py``): the same code answers
the CLI, the tray and this page.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import os
import secrets
import time
from importlib import resources
from urllib.parse import urlencode

import msgspec
from aiohttp import web

from cratesense.daemon.api import ControlAPI
from cratesense.daemon.control import failed
from cratesense.errors import CrateSenseError

log = logging.getLogger(__name__)

COOKIE = "cratesense_token"
ASSETS = {"/": ("index.html", "text/html"), "/app.js": ("app.js", "text/javascript"),
          "/style.css": ("style.css", "text/css")}
_SAFE_METHODS = ("GET", "HEAD")
AUDIO_CHUNK = 256 * 1024  # bytes read and sent at a time by the preview
_SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
                               "frame-ancestors 'none'; base-uri 'none'; form-action 'self'",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


def _asset(name: str) -> bytes:
    return resources.files("cratesense.daemon").joinpath("web-assets", name).read_bytes()


class WebPage:
    """The page's server; ``start()`` binds 127.0.0.1:``port`` (0: any free port)."""

    def __init__(self, api: ControlAPI, token: str, port: int) -> None:
        self._api = api
        self._token = token
        self._port = port
        self._runner: web.AppRunner | None = None
        self.port: int | None = None
        self.error: str | None = None

    @property
    def url(self) -> str | None:
        """The address to open, with the token (for ``cratesense open``)."""
        if self.port is None:
            return None
        return f"http://127.0.0.1:{self.port}/?{urlencode({'token': self._token})}"

    async def start(self) -> None:
        app = web.Application(client_max_size=256 * 1024, middlewares=[self._guard])
        for path in ASSETS:
            app.router.add_get(path, self._serve_asset)
        routes = {
            ("GET", "status"): self._status,
            ("GET", "tracks"): self._api.dj_command("tracks"),
            ("GET", "next"): self._api.dj_command("next"),
            ("GET", "similar"): self._api.dj_command("similar"),
            ("GET", "prep"): self._api.dj_command("prep"),
            ("GET", "overview"): self._overview,
            ("GET", "failures"): self._failures,
            ("GET", "preview"): self._api.preview,
            ("POST", "pause"): self._api.pause,
            ("POST", "resume"): self._api.resume,
            ("POST", "rescan"): self._api.rescan,
            ("POST", "settings"): self._api.settings,
            ("POST", "forget"): self._api.forget,
        }
        for (method, name), handler in routes.items():
            app.router.add_route(method, f"/api/{name}", _json_route(handler))
        app.router.add_post("/api/playlist-export", self._playlist_export)
        app.router.add_get("/api/privacy-export", self._privacy_export)
        app.router.add_get("/api/audio", self._audio, allow_head=False)  # GET only
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", self._port)
        try:
            await site.start()
        except OSError as exc:
            self.error = f"the web page could not listen on 127.0.0.1:{self._port} ({exc.strerror or exc})"
            log.warning("%s; set web.port to a free port", self.error)
            await self._runner.cleanup()
            self._runner = None
            return
        self.port = self._runner.addresses[0][1]
        log.info("web page on http://127.0.0.1:%d/ (cratesense open)", self.port)

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    # --- the guard ------------------------------------------------------------------------

    def _hosts(self) -> set[str]:
        return {f"127.0.0.1:{self.port}", f"localhost:{self.port}", f"[::1]:{self.port}"}

    @web.middleware
    async def _guard(self, request: web.Request, handler):
        if request.host not in self._hosts():  # DNS rebinding: another name resolving to us
            return _refuse(403, "this page answers only on its loopback address")
        given = request.query.get("token")
        if given is not None:
            if not hmac.compare_digest(given.encode(), self._token.encode()):
                return _refuse(403, "the access token is wrong (cratesense open gives the right link)")
            response: web.StreamResponse = web.HTTPFound(request.path)  # the token leaves the address bar (and history)
            response.set_cookie(COOKIE, self._token, httponly=True, samesite="Strict", path="/")
            return response
        cookie = request.cookies.get(COOKIE, "")
        if not hmac.compare_digest(cookie.encode(), self._token.encode()):
            return _refuse(401, "open this page with `cratesense open` (it needs its access token)")
        if request.method not in _SAFE_METHODS:
            origin = request.headers.get("Origin")
            if origin not in {f"http://{host}" for host in self._hosts()}:
                return _refuse(403, "a change must come from this page itself (Origin)")
        try:
            response = await handler(request)
        except web.HTTPException as exc:  # 404 for anything not routed, 405 for a wrong method
            response = _refuse(exc.status, exc.reason)
        response.headers.update(_SECURITY_HEADERS)
        return response

    # --- the page -----------------------------------------------------------------------------

    async def _serve_asset(self, request: web.Request) -> web.Response:
        name, media_type = ASSETS[request.path]
        return web.Response(body=_asset(name), content_type=media_type, charset="utf-8")

    async def _status(self, _body: dict) -> dict:
        from cratesense.daemon.status import describe

        status = await self._api.status()
        return {**msgspec.to_builtins(status), "rows": describe(status), "web_url_ok": True}

    async def _overview(self, _body: dict) -> dict:
        return await self._api.overview()

    async def _failures(self, _body: dict) -> dict:
        return await self._api.failures()

    async def _playlist_export(self, request: web.Request) -> web.Response:
        """A playlist the page built, as a download: M3U8 or rekordbox XML (the CLI's code)."""
        try:
            body = await request.json()
            export = self._api.dj_command("library-export")
            answer = await export({"format": body.get("format"), "content_keys": body.get("tracks"), "name": body.get("name")})
        except (ValueError, CrateSenseError) as exc:
            return _refuse(400, str(exc))
        from cratesense.dj.exports import SUFFIXES

        name = "".join(c for c in (body.get("name") or "CrateSense") if c.isalnum() or c in " -_") or "CrateSense"
        return web.Response(body=answer["document"].encode("utf-8"), content_type=answer["media_type"],
                            headers={"Content-Disposition": f'attachment; filename="{name}{SUFFIXES[answer["format"]]}"'})

    async def _audio(self, request: web.Request) -> web.StreamResponse:
        """A library track's audio for the page's player, with Range requests (206 and the bytes
        asked for; 416 beyond the end). Only ``content_key`` names what to play, never a path,
        and only a file the journal analyzed, unchanged since, is served (``dj/playback.py``):
        anything else is 404. Streamed from the file opened and checked, a slice at a time."""
        from cratesense.dj.playback import Unsatisfiable, byte_range

        playable = await self._api.audio(dict(request.query))
        if playable is None:
            return _refuse(404, "no such track in the library")
        try:
            try:
                wanted = byte_range(request.headers.get("Range"), playable.size)
            except Unsatisfiable:
                refused = _refuse(416, "the range asked for starts beyond the end of the file")
                refused.headers["Content-Range"] = f"bytes */{playable.size}"
                return refused
            start, end = wanted or (0, playable.size - 1)
            response = web.StreamResponse(status=206 if wanted else 200, headers={
                **_SECURITY_HEADERS, "Content-Type": playable.media_type, "Accept-Ranges": "bytes",
                "Content-Disposition": "inline"})
            if wanted:
                response.headers["Content-Range"] = f"bytes {start}-{end}/{playable.size}"
            response.content_length = end - start + 1
            await response.prepare(request)
            loop = asyncio.get_running_loop()
            position = start
            try:
                while position <= end:
                    chunk = await loop.run_in_executor(None, os.pread, playable.fd, min(AUDIO_CHUNK, end + 1 - position),
                                                       position)
                    if not chunk:  # the file was cut short meanwhile: the player sees a short answer
                        break
                    await response.write(chunk)
                    position += len(chunk)
                await response.write_eof()
            except ConnectionError:  # the player moved on (a seek closes the last request)
                pass
            return response
        finally:
            playable.close()

    async def _privacy_export(self, request: web.Request) -> web.Response:
        """Everything the agent and the catalog hold about the user, as one JSON download."""
        document = await self._api.export({})
        stamp = time.strftime("%Y-%m-%d")
        return web.Response(body=json.dumps(document, indent=1, ensure_ascii=False).encode("utf-8"),
                            content_type="application/json",
                            headers={"Content-Disposition": f'attachment; filename="cratesense-export-{stamp}.json"'})


def new_token() -> str:
    return secrets.token_urlsafe(24)


def _refuse(status: int, message: str) -> web.Response:
    response = web.json_response({"error": message}, status=status)
    response.headers.update(_SECURITY_HEADERS)
    return response


def _json_route(handler):
    async def handle(request: web.Request) -> web.Response:
        body = dict(request.query)
        if request.method not in _SAFE_METHODS and request.can_read_body:
            try:
                posted = await request.json()
            except ValueError:
                return _refuse(400, "expected a JSON body")
            if not isinstance(posted, dict):
                return _refuse(400, "expected a JSON object")
            body.update(posted)
        try:
            return web.Response(body=msgspec.json.encode(await handler(body)), content_type="application/json")
        except Exception as exc:
            status, error = failed(exc, request.path)
            return _refuse(status, error["error"])

    return handle
