"""A throwaway PostgreSQL server for the test suite (and benchmarks): its own cluster in a
temporary folder, on a Unix socket only, stopped and removed at the end.

``initdb`` refuses to run as root, so as root the cluster belongs to the ``postgres`` user
(Debian's package creates it) and the server commands run through ``runuser``; as anyone else
they run as that user. About 1.5 s to start here.
"""

from __future__ import annotations

import glob
import itertools
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path


def binaries() -> Path | None:
    """The newest installed server's bin folder (Debian: /usr/lib/postgresql/N/bin), or None."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4]))
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


class PostgresServer:
    """``start()``, then ``new_database()`` per test (a URL), ``stop()`` at the end."""

    USER = "cratesense"

    def __init__(self, *, fsync: bool = False, settings: dict[str, str] | None = None,
                 primary: PostgresServer | None = None) -> None:
        self.bin = binaries()
        if self.bin is None:
            raise RuntimeError("PostgreSQL is not installed (scripts/setup.sh test installs it: apt-get install postgresql)")
        self.folder = Path(tempfile.mkdtemp(prefix="cs-pg-"))  # short: a socket path has a length limit
        self.data, self.socket_dir, self.log = self.folder / "data", self.folder / "run", self.folder / "server.log"
        self.socket_dir.mkdir()
        self.port = _free_port()
        # fsync off only to spare the test machine's disk: commits are still synchronous, and
        # no test here crashes the database server itself
        self.settings = {"fsync": "on" if fsync else "off", "max_connections": "300", **(settings or {})}
        self._names = itertools.count(1)
        self.primary = primary  # a standby's primary (start() copies it with pg_basebackup instead of initdb)
        self._as = []
        if os.geteuid() == 0:
            owner = pwd.getpwnam("postgres")
            os.chown(self.folder, owner.pw_uid, owner.pw_gid)
            os.chown(self.socket_dir, owner.pw_uid, owner.pw_gid)
            self._as = ["runuser", "-u", "postgres", "--"]

    def _run(self, *command: str) -> None:
        result = subprocess.run([*self._as, *command], capture_output=True, text=True)
        if result.returncode != 0:
            log = self.log.read_text() if self.log.exists() else ""
            raise RuntimeError(f"{command[0]} failed ({result.returncode}): {result.stderr.strip()}\n{log[-2000:]}")

    def start(self) -> PostgresServer:
        if self.primary is None:
            self._run(str(self.bin / "initdb"), "-D", str(self.data), "-U", self.USER, "--auth=trust", "-E", "UTF8",
                      "--locale=C.UTF-8", "-N")
        else:  # a streaming standby: a base backup of the primary, -R writes standby.signal and primary_conninfo
            self._run(str(self.bin / "pg_basebackup"), "-D", str(self.data), "-R", "-X", "stream", "-c", "fast",
                      "-h", str(self.primary.socket_dir), "-p", str(self.primary.port), "-U", self.USER)
        self.pg_ctl("start")
        return self

    def standby(self) -> PostgresServer:
        """A streaming standby of this server (built-in replication: pg_basebackup -R, a
        standby.signal, its own port and socket), started; it serves reads of every database."""
        return PostgresServer(settings=dict(self.settings), primary=self).start()

    def pg_ctl(self, *arguments: str) -> None:
        """Run pg_ctl on this server (e.g. "stop", "-m", "fast"; or "start" with its options)."""
        if arguments and arguments[0] == "start":
            options = f"-k {self.socket_dir} -p {self.port} -c listen_addresses=''" + "".join(
                f" -c {name}={value}" for name, value in self.settings.items())
            self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-l", str(self.log), "-w", "-o", options, "start")
        else:  # restart keeps the options it started with; -l: never the server's output on our pipe
            self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-l", str(self.log), "-w", *arguments)

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://{self.USER}@/{database}?host={self.socket_dir}&port={self.port}"

    def url_of(self, other: str) -> str:
        """This server's URL for the database another URL names (a standby holds its primary's)."""
        return self.url(other.split("@/", 1)[1].split("?", 1)[0])

    def new_database(self, prefix: str = "t") -> str:
        """A fresh, empty database: its URL."""
        import psycopg

        name = f"{prefix}{next(self._names)}_{os.getpid()}"
        with psycopg.connect(self.url(), autocommit=True) as connection:
            connection.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def stop(self) -> None:
        try:
            if (self.data / "postmaster.pid").exists():
                self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "-w", "stop")
        finally:
            shutil.rmtree(self.folder, ignore_errors=True)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]
