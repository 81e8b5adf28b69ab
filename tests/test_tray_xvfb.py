"""The real tray under Xvfb: Debian's `trayer` as the tray host, pystray's gtk backend in a D-Bus
session, the menu opened and clicked with xdotool, the agent seen to pause. A screenshot of the
open menu is saved to test-artifacts/ (or $CRATESENSE_ARTIFACTS)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from agentproc import AgentProcess, write_config

TOOLS = ("Xvfb", "trayer", "xdotool", "import", "dbus-run-session")
missing = [tool for tool in TOOLS if shutil.which(tool) is None]
try:
    import gi  # noqa: F401  (PyGObject, for pystray's gtk backend)
except ImportError:
    missing.append("PyGObject")

pytestmark = pytest.mark.skipif(
    bool(missing),
    reason=f"missing {', '.join(missing)} (scripts/setup.sh test installs xvfb trayer xdotool imagemagick dbus "
    "and PyGObject<3.51)",
)
ARTIFACTS = Path(os.environ.get("CRATESENSE_ARTIFACTS", Path(__file__).resolve().parent.parent / "test-artifacts"))


def _free_display() -> int:
    for number in range(90, 200):
        if not Path(f"/tmp/.X11-unix/X{number}").exists() and not Path(f"/tmp/.X{number}-lock").exists():
            return number
    raise RuntimeError("no free X display number")


def _x(display: str, *args: str) -> str:
    return subprocess.run(args, env={**os.environ, "DISPLAY": display}, capture_output=True, text=True, timeout=30).stdout


def test_pause_from_the_real_tray_menu(tmp_path):
    display = f":{_free_display()}"
    music = tmp_path / "music"
    music.mkdir()
    write_config(tmp_path, music)
    agent = AgentProcess(tmp_path)
    processes = []
    try:
        processes.append(subprocess.Popen(["Xvfb", display, "-screen", "0", "640x480x24"],
                                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        for _ in range(50):
            if Path(f"/tmp/.X11-unix/X{display[1:]}").exists():
                break
            time.sleep(0.1)
        x_env = {**os.environ, "DISPLAY": display}
        processes.append(subprocess.Popen(
            ["trayer", "--edge", "top", "--align", "right", "--widthtype", "request", "--height", "32",
             "--transparent", "false", "--tint", "0xdddddd"], env=x_env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        agent.start()
        tray_env = {**agent.env, "DISPLAY": display, "PYSTRAY_BACKEND": "gtk"}
        tray_log = open(tmp_path / "tray.log", "wb")
        processes.append(subprocess.Popen(["dbus-run-session", "--", sys.executable, "-m", "cratesense", "--debug", "tray"],
                                          env=tray_env, stdout=tray_log, stderr=tray_log))

        x = y = None
        for _ in range(100):  # the icon is docked once trayer's panel has grown to hold it
            for window in _x(display, "xdotool", "search", "--class", "trayer").split():
                shape = _x(display, "xdotool", "getwindowgeometry", "--shell", window)
                values = dict(line.split("=", 1) for line in shape.split() if "=" in line)
                if int(values.get("HEIGHT", 0)) >= 20 and int(values.get("WIDTH", 0)) >= 20:
                    x = int(values["X"]) + int(values["WIDTH"]) - 16  # the icon sits at the right end
                    y = int(values["Y"]) + int(values["HEIGHT"]) // 2
            if x is not None:
                break
            time.sleep(0.2)
        assert x is not None, f"the icon never docked:\n{(tmp_path / 'tray.log').read_text()[-2000:]}"
        for _ in range(300):  # the first status poll has labelled the menu with the agent's state
            if "the tray shows: Up to date" in (tmp_path / "tray.log").read_text(errors="replace"):
                break
            time.sleep(0.1)
        else:
            raise AssertionError(f"the tray never showed the agent's state:\n{(tmp_path / 'tray.log').read_text()[-2000:]}")

        visible = set(_x(display, "xdotool", "search", "--onlyvisible", "--name", "").split())
        _x(display, "xdotool", "mousemove", str(x), str(y), "click", "3")  # right-click: the menu
        for _ in range(100):  # the menu is a new window on the screen
            if set(_x(display, "xdotool", "search", "--onlyvisible", "--name", "").split()) - visible:
                break
            time.sleep(0.1)
        else:
            raise AssertionError("the right-click opened no menu")
        time.sleep(0.5)  # drawn, not only mapped: a screenshot of it follows
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        screenshot = ARTIFACTS / "tray-menu.png"
        _x(display, "import", "-window", "root", str(screenshot))
        assert screenshot.exists() and screenshot.stat().st_size > 1000
        for _ in range(2):  # the second enabled item: "Paused" (the first opens the web page)
            _x(display, "xdotool", "key", "Down")
            time.sleep(0.3)
        _x(display, "xdotool", "key", "Return")
        status = agent.wait_for(lambda s: s["paused"], timeout=20, what="the tray's Pause to reach the agent")
        assert status["state"] == "paused"
    finally:
        for process in reversed(processes):
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                process.kill()
        agent.stop(signal.SIGKILL)
