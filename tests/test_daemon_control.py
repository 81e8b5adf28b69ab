"""The control API's errors, end to end over a real socket: the user's mistake is a 400 that
names what is wrong, a state the agent cannot act in is a 409, a bug is a 500 with its traceback
in the agent's log (never "bad request"), and the client raises the server's own error kind."""

from __future__ import annotations

import asyncio
import logging

import pytest

from cratesense.daemon.control import ControlServer
from cratesense.daemon.control_client import request
from cratesense.errors import ControlError, JournalError, QueryError


async def _refuse(body: dict) -> dict:
    raise QueryError(f"limit must be at least 1, got {body.get('limit')}")


async def _journal_gone(_body: dict) -> dict:
    raise JournalError("the disk holding the journal is full; free some space and the agent resumes")


async def _bug(body: dict) -> dict:
    return {"first": body["tracks"][0]}  # a KeyError when "tracks" is missing: our bug, not the user's


async def _fine(body: dict) -> dict:
    return {"echo": body.get("word")}


@pytest.mark.asyncio
async def test_errors_keep_their_kind_and_a_bug_is_a_500_with_its_traceback(tmp_path, caplog):
    path = tmp_path / "run" / "control.sock"
    server = ControlServer(path, {("GET", "refuse"): _refuse, ("GET", "journal"): _journal_gone,
                                  ("GET", "bug"): _bug, ("GET", "fine"): _fine})
    await server.start()
    try:
        def ask(name: str, body: dict | None = None) -> dict:
            return request("GET", name, body, path=path, timeout=10)

        assert await asyncio.to_thread(ask, "fine", {"word": "AC/DC"}) == {"echo": "AC/DC"}
        with pytest.raises(QueryError, match="limit must be at least 1, got 0"):
            await asyncio.to_thread(ask, "refuse", {"limit": 0})
        with pytest.raises(JournalError, match="free some space"):
            await asyncio.to_thread(ask, "journal")
        with caplog.at_level(logging.ERROR, logger="cratesense.daemon.control"):
            with pytest.raises(ControlError) as bug:
                await asyncio.to_thread(ask, "bug", {"word": "x"})
        assert "internal error" in str(bug.value) and "bad request" not in str(bug.value)
        [record] = [r for r in caplog.records if r.name == "cratesense.daemon.control"]
        assert record.exc_info is not None and record.exc_info[0] is KeyError  # the traceback is logged
    finally:
        await server.stop()
