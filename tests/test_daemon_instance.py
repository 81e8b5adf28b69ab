"""Single instance: real processes contending for the lock."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest

from cratesense.daemon.instance import AlreadyRunningError, InstanceLock

_HOLDER = """
import sys, time
from cratesense.daemon.instance import InstanceLock
lock = InstanceLock(sys.argv[1]).acquire()
print("held", flush=True)
time.sleep(60)
"""


def _start_holder(path):
    holder = subprocess.Popen([sys.executable, "-c", _HOLDER, str(path)], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    return holder


def test_second_agent_is_refused_with_the_holders_pid(tmp_path):
    path = tmp_path / "data" / "agent.lock"
    holder = _start_holder(path)
    try:
        with pytest.raises(AlreadyRunningError, match=f"already running \\(pid {holder.pid}\\)"):
            InstanceLock(path).acquire()
    finally:
        holder.kill()
        holder.wait()
    assert oct(path.stat().st_mode & 0o777) == "0o600"


def test_lock_of_a_killed_agent_is_not_stale(tmp_path):
    path = tmp_path / "agent.lock"
    holder = _start_holder(path)
    os.kill(holder.pid, signal.SIGKILL)
    holder.wait()
    assert path.exists()  # the file stays, the lock does not
    with InstanceLock(path):
        assert path.read_text().strip() == str(os.getpid())


def test_released_lock_can_be_taken_again(tmp_path):
    path = tmp_path / "agent.lock"
    with InstanceLock(path):
        pass
    with InstanceLock(path):
        pass
