"""The client side of the control API: how the CLI and the tray talk to a running agent.

Plain ``http.client`` over the agent's Unix socket (or loopback TCP with the token from
``control.json``, see ``daemon/control.py``): no event loop and no aiohttp to import, so a CLI
command starts fast, and every request has a timeout, so it never hangs for long.
"""

from __future__ import annotations

import datetime
import http.client
import json
import os
import socket
from pathlib import Path

from cratesense.daemon.paths import socket_path
from cratesense.errors import ControlError, NotRunningError, from_kind


def tcp_file(path: Path) -> Path:
    """Where the TCP fallback writes its port and token: beside the socket it replaces."""
    return path.with_name("control.json")


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: Path, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self._socket_path = str(path)

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(self.timeout)
        self.sock.connect(self._socket_path)


def request_raw(method: str, name: str, body: dict | None = None, *, path: Path | None = None,
                timeout: float = 10.0, query: str = "") -> bytes:
    """One call to the running agent, its answer's bytes; ``NotRunningError`` when there is none."""
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
        connection.request(method, f"/v1/{name}" + (f"?{query}" if query else ""), body=json.dumps(body or {}),
                           headers=headers)
        response = connection.getresponse()
        data = response.read()
    except (FileNotFoundError, ConnectionRefusedError):
        raise NotRunningError("the CrateSense agent is not running (start it with: cratesense run)") from None
    except (OSError, http.client.HTTPException) as exc:
        raise ControlError(f"the agent did not answer ({exc})") from exc
    finally:
        connection.close()
    if response.status >= 400:
        try:
            error = json.loads(data)
            message, kind = error.get("error"), error.get("kind")
        except (ValueError, AttributeError):
            message, kind = None, None
        raise from_kind(kind, message or f"the agent answered {response.status}")  # the server's own kind
    return data


def request(method: str, name: str, body: dict | None = None, *, path: Path | None = None,
            timeout: float = 10.0, query: str = "") -> dict:
    """One call to the running agent, its JSON answer."""
    data = request_raw(method, name, body, path=path, timeout=timeout, query=query)
    try:
        return json.loads(data or b"{}")
    except ValueError as exc:
        raise ControlError(f"the agent's answer is not JSON ({exc})") from exc


def status(*, path: Path | None = None, timeout: float = 10.0):
    """The running agent's typed ``Status``."""
    from cratesense.daemon.status import decode

    return decode(request_raw("GET", "status", path=path, timeout=timeout))


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
