"""`cratesense service install|uninstall|status`: the agent as a login service.

Linux: a systemd user unit (``systemctl --user``) and an XDG autostart entry for the tray.
macOS: LaunchAgents for the agent and the tray (``launchctl bootstrap gui/$UID``). The files are
the templates in ``packaging/`` with this installation's interpreter filled in, so a pipx or
virtualenv install runs its own copy. ``plan`` is pure: it says what would be done, and
``--dry-run`` prints exactly that.
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from cratesense.errors import CrateSenseError

UNIT = "cratesense.service"
AGENT_LABEL = "org.cratesense.agent"
TRAY_LABEL = "org.cratesense.tray"


class ServiceError(CrateSenseError):
    kind = "service"


@dataclass(frozen=True)
class Step:
    """One thing to do: write ``content`` to ``path``, remove ``path``, or run ``command``."""

    action: str  # "write", "remove", "mkdir" or "run"
    path: Path | None = None
    content: str = ""
    command: tuple[str, ...] = ()
    may_fail: bool = False

    def describe(self) -> str:
        if self.action == "run":
            return "run    " + " ".join(self.command)
        return f"{self.action:<6} {self.path}"


def template(relative: str, python: str, log_dir: Path) -> str:
    text = resources.files("cratesense.packaging").joinpath(relative).read_text(encoding="utf-8")
    return text.replace("@PYTHON@", python).replace("@LOGDIR@", str(log_dir))


def plan(action: str, *, platform: str, python: str, home: Path, uid: int, tray: bool = True) -> list[Step]:
    if platform.startswith("linux"):
        return _plan_systemd(action, python, home, tray)
    if platform == "darwin":
        return _plan_launchd(action, python, home, uid, tray)
    raise ServiceError(f"no service support for {platform}; run `cratesense run` from your login items")


def _plan_systemd(action: str, python: str, home: Path, tray: bool) -> list[Step]:
    unit = home / ".config" / "systemd" / "user" / UNIT
    autostart = home / ".config" / "autostart" / "cratesense-tray.desktop"
    systemctl = ("systemctl", "--user")
    if action == "install":
        steps = [
            Step("mkdir", home / ".local" / "share" / "cratesense"),  # ReadWritePaths= needs it
            Step("write", unit, template("systemd/cratesense.service", python, home)),
            Step("run", command=(*systemctl, "daemon-reload")),
            Step("run", command=(*systemctl, "enable", "--now", UNIT)),
            Step("run", command=(*systemctl, "restart", UNIT)),  # an upgrade runs the new code
        ]
        if tray:
            steps.append(Step("write", autostart, template("xdg/cratesense-tray.desktop", python, home)))
        return steps
    if action == "uninstall":
        return [
            Step("run", command=(*systemctl, "disable", "--now", UNIT), may_fail=True),
            Step("remove", unit),
            Step("remove", autostart),
            Step("run", command=(*systemctl, "daemon-reload"), may_fail=True),
        ]
    if action == "status":
        return [Step("run", command=(*systemctl, "status", "--no-pager", UNIT), may_fail=True)]
    raise ServiceError(f"unknown service action {action!r}")


def _plan_launchd(action: str, python: str, home: Path, uid: int, tray: bool) -> list[Step]:
    agents = home / "Library" / "LaunchAgents"
    log_dir = home / "Library" / "Logs" / "cratesense"
    labels = [AGENT_LABEL] + ([TRAY_LABEL] if tray else [])
    domain = f"gui/{uid}"
    if action == "install":
        steps = [Step("mkdir", log_dir)]
        for label in labels:
            plist = agents / f"{label}.plist"
            steps += [
                Step("run", command=("launchctl", "bootout", f"{domain}/{label}"), may_fail=True),  # an upgrade
                Step("write", plist, template(f"launchd/{label}.plist", python, log_dir)),
                Step("run", command=("launchctl", "bootstrap", domain, str(plist))),
            ]
        return steps
    if action == "uninstall":
        steps = []
        for label in (AGENT_LABEL, TRAY_LABEL):
            steps += [
                Step("run", command=("launchctl", "bootout", f"{domain}/{label}"), may_fail=True),
                Step("remove", agents / f"{label}.plist"),
            ]
        return steps
    if action == "status":
        return [Step("run", command=("launchctl", "print", f"{domain}/{AGENT_LABEL}"), may_fail=True)]
    raise ServiceError(f"unknown service action {action!r}")


def carry_out(steps: list[Step]) -> None:
    for step in steps:
        if step.action == "mkdir":
            step.path.mkdir(parents=True, exist_ok=True, mode=0o700)
        elif step.action == "write":
            step.path.parent.mkdir(parents=True, exist_ok=True)
            step.path.write_text(step.content, encoding="utf-8")
        elif step.action == "remove":
            step.path.unlink(missing_ok=True)
        else:
            try:
                result = subprocess.run(step.command, capture_output=True, text=True, timeout=60)
            except FileNotFoundError:
                raise ServiceError(f"{step.command[0]} is not available here") from None
            if result.stdout:
                print(result.stdout, end="")
            if result.returncode != 0 and not step.may_fail:
                raise ServiceError(f"`{' '.join(step.command)}` failed: {result.stderr.strip() or result.returncode}")


def current_plan(action: str, tray: bool = True) -> list[Step]:
    return plan(action, platform=sys.platform, python=sys.executable, home=Path.home(), uid=os.getuid(), tray=tray)
