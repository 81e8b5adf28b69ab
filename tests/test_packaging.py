"""Service files and `cratesense service`: checked the way the platforms check them, and a real
install-and-forget run from a fresh virtualenv."""

from __future__ import annotations

import configparser
import os
import plistlib
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from agentproc import AgentProcess, write_config
from audiogen import encode, fingerprintable_track
from cratesense.daemon.service import plan, template

ROOT = Path(__file__).resolve().parent.parent
PYTHON = "/opt/venvs/cratesense/bin/python"


def rendered(relative: str) -> str:
    return template(relative, PYTHON, Path("/home/dj/Library/Logs/cratesense"))


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze missing (apt-get install systemd)")
def test_systemd_unit_verifies_without_a_single_warning(tmp_path):
    unit = tmp_path / "cratesense.service"  # verify checks that ExecStart exists: this interpreter
    data = tmp_path / "data" / "cratesense"
    unit.write_text(template("systemd/cratesense.service", sys.executable, tmp_path, data_dir=data))
    runtime = tmp_path / "runtime"
    runtime.mkdir(mode=0o700)
    result = subprocess.run(["systemd-analyze", "--user", "verify", str(unit)], capture_output=True, text=True,
                            env={**os.environ, "XDG_RUNTIME_DIR": str(runtime)})
    assert result.returncode == 0 and result.stderr == "", result.stderr  # it exits 0 on unknown keys
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str
    parser.read_string(unit.read_text())
    service = parser["Service"]
    assert service["ExecStart"] == f"{sys.executable} -m cratesense run" and service["Type"] == "notify"
    assert service["Restart"] == "on-failure" and service["IOSchedulingClass"] == "idle"
    assert service["ProtectHome"] == "read-only" and f"-{data} " in service["ReadWritePaths"]


@pytest.mark.parametrize("name", ["org.cratesense.agent", "org.cratesense.tray"])
def test_launchd_plists_have_the_required_keys_and_types(name):
    plist = plistlib.loads(rendered(f"launchd/{name}.plist").encode())
    assert plist["Label"] == name and plist["RunAtLoad"] is True
    assert plist["ProgramArguments"][:3] == [PYTHON, "-m", "cratesense"]
    if name == "org.cratesense.agent":
        assert plist["KeepAlive"] == {"SuccessfulExit": False}  # restarted on a crash, not after a clean exit
        assert plist["ProcessType"] == "Background" and plist["LowPriorityIO"] is True
        assert isinstance(plist["Nice"], int) and plist["Nice"] > 0
        assert plist["StandardErrorPath"] == "/home/dj/Library/Logs/cratesense/agent.log"


def test_tray_autostart_entry():
    entry = configparser.ConfigParser(interpolation=None)
    entry.optionxform = str
    entry.read_string(rendered("xdg/cratesense-tray.desktop"))
    desktop = entry["Desktop Entry"]
    assert desktop["Type"] == "Application" and desktop["Exec"] == f"{PYTHON} -m cratesense tray"


def test_plans_for_linux_and_macos():
    home = Path("/home/dj")
    data = home / ".local" / "share" / "cratesense"
    install = [step.describe() for step in plan("install", platform="linux", python=PYTHON, home=home, uid=1000,
                                                data_dir=data)]
    assert install == [
        "mkdir  /home/dj/.local/share/cratesense",
        "write  /home/dj/.config/systemd/user/cratesense.service",
        "run    systemctl --user daemon-reload",
        "run    systemctl --user enable --now cratesense.service",
        "run    systemctl --user restart cratesense.service",
        "write  /home/dj/.config/autostart/cratesense-tray.desktop",
    ]
    uninstall = [s.describe() for s in plan("uninstall", platform="linux", python=PYTHON, home=home, uid=1000,
                                            data_dir=data)]
    assert uninstall[0] == "run    systemctl --user disable --now cratesense.service"
    assert "remove /home/dj/.config/autostart/cratesense-tray.desktop" in uninstall
    mac = [s.describe() for s in plan("install", platform="darwin", python=PYTHON, home=Path("/Users/dj"), uid=501,
                                      data_dir=Path("/Users/dj/Library/Application Support/cratesense"))]
    assert "run    launchctl bootstrap gui/501 /Users/dj/Library/LaunchAgents/org.cratesense.agent.plist" in mac
    assert "run    launchctl bootstrap gui/501 /Users/dj/Library/LaunchAgents/org.cratesense.tray.plist" in mac


def test_dry_run_prints_the_files_with_this_interpreter(tmp_path):
    env = {**os.environ, "HOME": str(tmp_path)}
    result = subprocess.run([sys.executable, "-m", "cratesense", "service", "install", "--dry-run"],
                            env=env, capture_output=True, text=True, check=True)
    assert f"write  {tmp_path}/.config/systemd/user/cratesense.service" in result.stdout
    assert f"| ExecStart={sys.executable} -m cratesense run" in result.stdout
    assert not (tmp_path / ".config").exists()  # nothing was done


def test_the_unit_writes_where_the_cli_reads_with_xdg_data_home_set(tmp_path):
    """With XDG_DATA_HOME set, the hardened unit's one writable folder is that data folder (it
    was ~/.local/share/cratesense, so the service got a read-only data folder), and the service
    is told the same variables, so it reads the same config and journal as the CLI."""
    data_home, config_home = tmp_path / "xdg-data", tmp_path / "xdg-config"
    env = {**os.environ, "HOME": str(tmp_path), "XDG_DATA_HOME": str(data_home), "XDG_CONFIG_HOME": str(config_home)}
    result = subprocess.run([sys.executable, "-m", "cratesense", "service", "install", "--dry-run"],
                            env=env, capture_output=True, text=True, check=True)
    unit = "\n".join(line.removeprefix("       | ") for line in result.stdout.splitlines() if line.startswith("       | "))
    assert f"mkdir  {data_home}/cratesense" in result.stdout
    assert f"ReadWritePaths=-{data_home}/cratesense -%t/cratesense" in unit
    assert f'Environment="XDG_DATA_HOME={data_home}"' in unit and f'Environment="XDG_CONFIG_HOME={config_home}"' in unit
    assert ".local/share" not in unit


def test_service_status_and_install_where_there_is_no_user_session(tmp_path):
    """Nothing installed: status says so (exit 3, not silence). No systemd user manager (this
    container, ssh without lingering): install says what that means and what to do, and leaves
    nothing behind."""
    env = {key: value for key, value in os.environ.items() if key not in ("DBUS_SESSION_BUS_ADDRESS",)}
    env.update(HOME=str(tmp_path), XDG_RUNTIME_DIR=str(tmp_path / "no-runtime"))
    status = subprocess.run([sys.executable, "-m", "cratesense", "service", "status"], env=env,
                            capture_output=True, text=True, timeout=60)
    assert status.returncode == 3 and "not installed" in status.stdout
    if shutil.which("systemctl") is None:
        pytest.skip("systemctl missing: no user-session check to exercise")
    install = subprocess.run([sys.executable, "-m", "cratesense", "service", "install"], env=env,
                             capture_output=True, text=True, timeout=120)
    assert install.returncode == 2 and "Traceback" not in install.stderr, install.stderr
    [line] = install.stderr.strip().splitlines()
    assert "no systemd user session" in line and "loginctl enable-linger" in line and "nothing was installed" in line
    assert not (tmp_path / ".config" / "systemd" / "user" / "cratesense.service").exists()
    assert not (tmp_path / ".config" / "autostart").exists()


def test_pip_install_prints_no_setuptools_warning(tmp_path):
    """The service templates are package data, not look-alike packages: a build prints no
    "absent from packages" warning (it did for cratesense.packaging.launchd)."""
    result = subprocess.run([sys.executable, "-m", "pip", "wheel", "-v", "--no-deps", "-w",
                             str(tmp_path), str(ROOT)], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "absent from" not in result.stdout + result.stderr and "SetuptoolsDeprecationWarning" not in result.stderr
    import zipfile

    [wheel] = tmp_path.glob("cratesense-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "cratesense/service-files/systemd/cratesense.service" in names
    assert "cratesense/service-files/launchd/org.cratesense.agent.plist" in names
    for model_file in ("musicnn-mtt.onnx", "musicnn-msd.onnx", "musicnn.json", "LICENSE-musicnn", "embedding.npz",
                       "calibration.json"):
        assert f"cratesense/analysis/sound-model/{model_file}" in names
    assert not any(name.startswith("packaging/") for name in names)


def test_the_agent_tells_systemd_when_it_is_ready_and_stopping(tmp_path):
    music = tmp_path / "music"
    music.mkdir()
    write_config(tmp_path, music)
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(str(tmp_path / "notify.sock"))
    notify.settimeout(60)
    agent = AgentProcess(tmp_path)
    agent.env["NOTIFY_SOCKET"] = str(tmp_path / "notify.sock")
    try:
        agent.start(wait=False)
        assert notify.recv(100) == b"READY=1"
        assert agent.status()["pid"] == agent.process.pid  # ready means the control socket answers
        agent.stop()
        assert notify.recv(100) == b"STOPPING=1"
    finally:
        notify.close()
        agent.stop(signal.SIGKILL)


def test_install_and_forget_from_a_fresh_virtualenv(tmp_path):
    """pip install . into a new virtualenv, start the agent exactly as the unit's ExecStart does,
    drop recordings into the music folder: they reach the embedded catalog with no other command."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = str(venv / "bin" / "python")
    install = subprocess.run([python, "-m", "pip", "install", "-q", str(ROOT)], capture_output=True, text=True)
    assert install.returncode == 0, install.stderr[-2000:]
    unit = template("systemd/cratesense.service", python, tmp_path, data_dir=tmp_path / "data")
    exec_start = next(line for line in unit.splitlines() if line.startswith("ExecStart=")).split("=", 1)[1].split()
    assert exec_start[0] == python

    home = tmp_path / "home"
    music = home / "Music"
    music.mkdir(parents=True)
    runtime = tmp_path / "run"
    runtime.mkdir(mode=0o700)
    env = {"PATH": "/usr/bin:/bin", "HOME": str(home), "XDG_RUNTIME_DIR": str(runtime), "LANG": "C.UTF-8"}
    (home / ".config" / "cratesense").mkdir(parents=True)
    (home / ".config" / "cratesense" / "config.toml").write_text(
        f'[library]\nfolders = ["{music}"]\nquiet_seconds = 0.5\n[sync]\nquiet_seconds = 1\n')
    log = open(tmp_path / "agent.log", "wb")
    agent = subprocess.Popen(exec_start, env=env, stdout=log, stderr=log, cwd="/")
    try:
        deadline = time.monotonic() + 60  # the agent is up (its socket answers) before the music arrives
        while subprocess.run([python, "-m", "cratesense", "status"], env=env, capture_output=True).returncode != 0:
            assert time.monotonic() < deadline and agent.poll() is None, (tmp_path / "agent.log").read_text()
            time.sleep(0.2)
        for index in range(3):  # the music arrives after the agent started
            encode(fingerprintable_track(index), 44100, music / f"track{index}.flac")
        catalog = home / ".local" / "share" / "cratesense" / "catalog.sqlite"
        deadline = time.monotonic() + 120
        status = None
        while time.monotonic() < deadline:
            result = subprocess.run([python, "-m", "cratesense", "status", "--json"], env=env, capture_output=True, text=True)
            if result.returncode == 0:
                import json

                status = json.loads(result.stdout)
                if status["tracks"] == 3 and status["waiting_to_sync"] == 0 and status["last_sync_at"]:
                    break
            time.sleep(0.5)
        assert status and status["tracks"] == 3 and status["waiting_to_sync"] == 0, (tmp_path / "agent.log").read_text()
        import sqlite3

        with sqlite3.connect(catalog) as db:
            assert db.execute("SELECT COUNT(*) FROM observations").fetchone()[0] == 3
        human = subprocess.run([python, "-m", "cratesense", "status"], env=env, capture_output=True, text=True)
        assert re.search(r"^tracks known +3 ", human.stdout, re.M) and "embedded" in human.stdout
    finally:
        agent.send_signal(signal.SIGTERM)
        agent.wait(timeout=15)
        log.close()
    assert agent.returncode == 0


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze missing (apt-get install systemd)")
def test_the_catalog_unit_verifies_and_its_command_serves(tmp_path):
    """packaging/systemd/cratesense-catalog.service: `systemd-analyze verify` says nothing at all
    (with this interpreter in ExecStart), and its command line, with the unit's defaults
    substituted as systemd would, serves the catalog and its health endpoint, and stops on SIGTERM."""
    import json
    import urllib.request

    source = (ROOT / "packaging" / "systemd" / "cratesense-catalog.service").read_text()
    unit = tmp_path / "cratesense-catalog.service"
    unit.write_text(source.replace("/opt/cratesense/bin/python", sys.executable))
    result = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True)
    assert result.returncode == 0 and result.stderr == "", result.stderr
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str
    parser.read_string(unit.read_text())
    service = parser["Service"]
    assert service["DynamicUser"] == "yes" and service["StateDirectory"] == "cratesense-catalog"
    assert service["KillMode"] == "mixed" and service["Restart"] == "on-failure"
    assert int(service["TimeoutStopSec"].rstrip("s")) > 10  # the supervisor gives workers 10 s
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    command = (service["ExecStart"].replace("${CATALOG_DB}", str(tmp_path / "catalog.sqlite"))
               .replace("$CATALOG_OPTIONS", "").replace("--port 8750", f"--port {port}").split())
    server = subprocess.Popen(command, stderr=subprocess.PIPE, text=True, cwd="/")
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5) as response:
                    health = json.loads(response.read())
                break
            except OSError:
                assert server.poll() is None and time.monotonic() < deadline
                time.sleep(0.1)
        assert health["status"] == "ok" and health["backlog"] == {"waiting": 0, "oldest_seconds": 0.0}
    finally:
        server.send_signal(signal.SIGTERM)
        server.communicate(timeout=30)
    assert server.returncode == 0
