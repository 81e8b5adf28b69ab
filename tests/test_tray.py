"""The tray: icons drawn per state, and the menu logic against a real agent (pystray's dummy
backend: menu items are evaluated and triggered exactly as a real tray host would)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

os.environ.setdefault("PYSTRAY_BACKEND", "dummy")  # before pystray is imported anywhere

import pytest
from PIL import Image, ImageChops

from agentproc import AgentProcess, write_config
from cratesense.tray.app import TrayController, load_pystray
from cratesense.tray.icons import STATES, draw_icon, state_of


@pytest.mark.parametrize("size", [16, 22, 32, 64])
def test_each_state_has_its_own_icon_legible_on_light_and_dark_panels(size):
    icons = {state: draw_icon(state, size) for state in STATES}
    for state, icon in icons.items():
        assert icon.size == (size, size) and icon.mode == "RGBA"
        for panel in ((255, 255, 255, 255), (30, 30, 30, 255)):
            background = Image.new("RGBA", icon.size, panel)
            shown = Image.alpha_composite(background, icon).convert("L")
            differs = ImageChops.difference(shown, background.convert("L")).point(lambda v: 255 if v > 40 else 0)
            assert differs.histogram()[255] > 0.35 * size * size, (state, panel)
    for a in STATES:
        for b in STATES:
            if a < b:
                diff = ImageChops.difference(icons[a].convert("RGB"), icons[b].convert("RGB")).convert("L")
                assert diff.getextrema()[1] > 60, (a, b)


def test_icon_follows_the_agent_state():
    assert state_of(None) == "offline"
    assert state_of({"state": "paused"}) == "paused" and state_of({"state": "analyzing"}) == "working"
    assert state_of({"state": "watching"}) == "idle" and state_of({"state": "error"}) == "error"


def items_by_text(menu) -> dict:
    return {item.text: item for item in menu if item.text}


def wait_until(condition, timeout=20):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.1)
    raise AssertionError("timed out")


def test_menu_actions_reach_the_agent(tmp_path):
    music = tmp_path / "music"
    music.mkdir()
    write_config(tmp_path, music)
    agent = AgentProcess(tmp_path).start()
    pystray = load_pystray()
    controller = TrayController(agent.socket, start_agent=lambda: agent.start(wait=False),
                                export_folder=tmp_path / "exports")
    icon = pystray.Icon("test", draw_icon("idle"), "CrateSense", controller.menu(pystray))
    try:
        agent.wait_for(lambda s: s["state"] == "watching")  # the first sync at start is over
        controller.refresh()
        visible = [item for item in icon.menu if item.visible]
        assert visible[0].text.startswith("Up to date · 0 tracks") and not visible[0].enabled
        items = items_by_text(visible)
        assert "Start the agent" not in items
        assert items["Paused"].checked is False and items["Contribute to shared catalog"].checked is True

        items["Paused"](icon)
        wait_until(lambda: agent.status()["paused"])
        controller.refresh()
        assert items["Paused"].checked is True and controller.icon_state == "paused"
        items["Paused"](icon)
        wait_until(lambda: not agent.status()["paused"])

        items["Pause for 1 hour"](icon)
        wait_until(lambda: agent.status()["paused_until"] is not None)
        assert 3500 < agent.status()["paused_until"] - time.time() <= 3600

        items["Pause until tomorrow"](icon)  # 06:00 next
        wait_until(lambda: 0 < agent.status()["paused_until"] - time.time() <= 86400
                   and time.localtime(agent.status()["paused_until"]).tm_hour == 6)
        items["Paused"](icon)
        wait_until(lambda: not agent.status()["paused"])

        items["Contribute to shared catalog"](icon)
        wait_until(lambda: agent.status()["contribute"] is False)

        items["Open export…"](icon)
        wait_until(lambda: list((tmp_path / "exports").glob("*/cratesense-catalog.json")))

        confirm = items_by_text(items["Delete my contributions…"].submenu)
        assert not confirm["This deletes everything you contributed"].enabled
        confirm["Yes, delete and stop contributing"](icon)
        wait_until(lambda: (agent.status().get("deletion") or {}).get("confirmed_at"))

        agent.stop()  # the agent goes away: the tray says so and offers to start it
        controller.refresh()
        visible = items_by_text(item for item in icon.menu if item.visible)
        assert "CrateSense agent is not running" in visible and "Paused" not in visible
        assert controller.icon_state == "offline"
        visible["Start the agent"](icon)
        wait_until(lambda: controller.refresh() or controller.running, timeout=30)
    finally:
        controller.close()
        agent.stop(signal.SIGKILL)


def test_tray_without_a_display_fails_in_one_line(tmp_path):
    env = {key: value for key, value in os.environ.items() if key not in ("DISPLAY", "WAYLAND_DISPLAY", "PYSTRAY_BACKEND")}
    env["XDG_RUNTIME_DIR"] = str(tmp_path)
    result = subprocess.run([sys.executable, "-m", "cratesense", "tray"], env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.count("\n") == 1 and "no tray is available here" in result.stderr


def test_run_with_tray_and_no_display_runs_the_agent_alone(tmp_path):
    music = tmp_path / "music"
    music.mkdir()
    write_config(tmp_path, music)
    agent = AgentProcess(tmp_path)
    agent.env = {key: value for key, value in agent.env.items() if key not in ("DISPLAY", "PYSTRAY_BACKEND")}
    try:
        agent.start("--tray")
        agent.wait_for(lambda s: s["state"] == "watching")
        took = agent.stop()
        assert agent.process.returncode == 0 and took < 5
        log = agent.log.read_text()
        assert log.count("no tray is available here") == 1 and "Traceback" not in log
    finally:
        agent.stop(signal.SIGKILL)
