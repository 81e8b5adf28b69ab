"""`cratesense service install|uninstall|status`: the agent as a login service.

Linux: a systemd user unit (``systemctl --user``) and an XDG autostart entry for the tray.
macOS: LaunchAgents for the agent and the tray (``launchctl bootstrap gui/$UID``). The files are
the templates in the checkout's top-level ``packaging/`` (installed as ``cratesense/service-files``)
with this installation's interpreter, the agent's data folder (computed once, in
``daemon/paths.py``) and the folders it must write filled in, so a pipx or virtualenv install
runs its own copy and the hardened service writes exactly where the CLI reads. ``plan`` is pure:
it says what would be done, and ``--dry-run`` prints exactly that.
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from cratesense.errors import ServiceError

UNIT = "cratesense.service"
AGENT_LABEL = "org.cratesense.agent"
TRAY_LABEL = "org.cratesense.tray"
# the folders the agent's own variables point at: the service must see the same ones
_CARRIED_VARIABLES = ("XDG_CONFIG_HOME", "XDG_DATA_HOME")
_NO_USER_BUS = (
    "there is no systemd user session here ({detail}); the service needs one. Log in to a desktop "
    "session, or keep a user manager running without a login with `loginctl enable-linger {user}`, "
    "then install again (nothing was installed)"
)


@dataclass(frozen=True)
class Step:
    """One thing to do: write ``content`` to ``path``, remove ``path``, or run ``command``."""

    action: str  # "write", "remove", "mkdir" or "run"
    path: Path | None = None
    content: str = ""
    command: tuple[str, ...] = ()
    may_fail: bool = False

    @property
    def target(self) -> Path:
        """The path a write, remove or mkdir acts on."""
        if self.path is None:
            raise ServiceError(f"a {self.action} step without a path")
        return self.path

    def describe(self) -> str:
        if self.action == "run":
            return "run    " + " ".join(self.command)
        return f"{self.action:<6} {self.path}"


@dataclass(frozen=True)
class Installation:
    """What the service files are filled in with."""

    python: str
    data_dir: Path
    log_dir: Path
    environment: dict[str, str] = field(default_factory=dict)  # variables the service must share
    writable: tuple[Path, ...] = ()  # besides the data folder (music folders, when tags are written)


def template(relative: str, python: str, log_dir: Path, *, data_dir: Path | None = None,
             environment: dict[str, str] | None = None, writable: tuple[Path, ...] = ()) -> str:
    text = resources.files("cratesense").joinpath("service-files", relative).read_text(encoding="utf-8")
    data_dir = data_dir or log_dir
    environment_lines = "".join(f'Environment="{name}={value}"\n' for name, value in sorted((environment or {}).items()))
    folders = " ".join(f"-{folder}" for folder in (data_dir, *writable))
    return (text.replace("@PYTHON@", python).replace("@LOGDIR@", str(log_dir))
            .replace("@ENVIRONMENT@", environment_lines).replace("-@DATADIR@", folders))


def plan(action: str, *, platform: str, python: str, home: Path, uid: int, data_dir: Path, tray: bool = True,
         environment: dict[str, str] | None = None, writable: tuple[Path, ...] = ()) -> list[Step]:
    if platform.startswith("linux"):
        return _plan_systemd(action, Installation(python, data_dir, data_dir, environment or {}, writable), home, tray)
    if platform == "darwin":
        return _plan_launchd(action, python, home, uid, tray)
    raise ServiceError(f"no service support for {platform}; run `cratesense run` from your login items")


def _plan_systemd(action: str, setup: Installation, home: Path, tray: bool) -> list[Step]:
    unit = home / ".config" / "systemd" / "user" / UNIT
    autostart = home / ".config" / "autostart" / "cratesense-tray.desktop"
    systemctl = ("systemctl", "--user")
    if action == "install":
        unit_text = template("systemd/cratesense.service", setup.python, setup.log_dir, data_dir=setup.data_dir,
                             environment=setup.environment, writable=setup.writable)
        steps = [
            Step("mkdir", setup.data_dir),  # ReadWritePaths= needs it
            Step("write", unit, unit_text),
            Step("run", command=(*systemctl, "daemon-reload")),
            Step("run", command=(*systemctl, "enable", "--now", UNIT)),
            Step("run", command=(*systemctl, "restart", UNIT)),  # an upgrade runs the new code
        ]
        if tray:
            steps.append(Step("write", autostart, template("xdg/cratesense-tray.desktop", setup.python, setup.log_dir)))
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


def written_files(steps: list[Step]) -> list[Path]:
    """The files ``steps`` write (for an install: what ``status`` looks for)."""
    return [step.target for step in steps if step.action == "write"]


def carry_out(steps: list[Step]) -> None:
    """Do ``steps`` in order. An install that fails half-way is undone (the files it wrote are
    removed), and one that cannot work here (no systemd user session) writes nothing at all."""
    if any(step.command[:2] == ("systemctl", "--user") and step.action == "run" for step in steps) and any(
        step.action == "write" for step in steps
    ):
        _require_user_manager()
    written: list[Path] = []
    try:
        for step in steps:
            if step.action == "mkdir":
                step.target.mkdir(parents=True, exist_ok=True, mode=0o700)
            elif step.action == "write":
                step.target.parent.mkdir(parents=True, exist_ok=True)
                step.target.write_text(step.content, encoding="utf-8")
                written.append(step.target)
            elif step.action == "remove":
                step.target.unlink(missing_ok=True)
            else:
                _run(step)
    except ServiceError:
        for path in written:
            path.unlink(missing_ok=True)
        if written:
            subprocess.run(("systemctl", "--user", "daemon-reload"), capture_output=True, timeout=60)
        raise


def _run(step: Step) -> None:
    try:
        result = subprocess.run(step.command, capture_output=True, text=True, timeout=60)
    except FileNotFoundError:
        raise ServiceError(f"{step.command[0]} is not available here") from None
    if result.stdout:
        print(result.stdout, end="")
    if result.returncode != 0 and not step.may_fail:
        raise ServiceError(f"`{' '.join(step.command)}` failed: {result.stderr.strip() or result.returncode}")


def _require_user_manager() -> None:
    """A user unit needs a running systemd user manager and its D-Bus (a container, or ssh
    without lingering, has neither: systemctl then says "Failed to connect to bus")."""
    import getpass

    try:
        result = subprocess.run(("systemctl", "--user", "show-environment"), capture_output=True, text=True,
                                timeout=30)
    except FileNotFoundError:
        raise ServiceError("systemctl is not available here: this system does not run systemd") from None
    if result.returncode != 0:
        detail = (result.stderr.strip().splitlines() or [f"exit status {result.returncode}"])[-1]
        raise ServiceError(_NO_USER_BUS.format(detail=detail, user=getpass.getuser()))


def current_installation(writable: tuple[Path, ...] = ()) -> dict:
    """This installation's interpreter, data folder and the variables the service must share."""
    from cratesense.daemon.paths import data_dir

    return {
        "python": sys.executable,
        "home": Path.home(),
        "uid": os.getuid(),
        "data_dir": data_dir(),
        "environment": {name: os.environ[name] for name in _CARRIED_VARIABLES if os.environ.get(name)},
        "writable": writable,
    }


def current_plan(action: str, tray: bool = True, writable: tuple[Path, ...] = ()) -> list[Step]:
    return plan(action, platform=sys.platform, tray=tray, **current_installation(writable))


def is_installed() -> bool:
    """Whether the agent's service file is there (``status`` says so when nothing was installed)."""
    return any(path.exists() for path in written_files(current_plan("install"))[:1])
