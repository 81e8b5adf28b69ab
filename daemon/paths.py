"""Where the agent keeps things: the one owner of every per-user folder.

The config file, the data folder (journal, identity, embedded catalog), and the runtime folder
(control socket) are computed here and nowhere else: the agent, the CLI, the tray and the
service installer (which writes the data folder into the unit) must all agree, so a folder
computed twice is a folder that can differ (with ``XDG_DATA_HOME`` set, the hardened service
once got a read-only data folder).
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

APP_NAME = "cratesense"


def config_path() -> Path:
    import platformdirs

    return Path(platformdirs.user_config_dir(APP_NAME)) / "config.toml"


def data_dir() -> Path:
    import platformdirs

    return Path(platformdirs.user_data_dir(APP_NAME))


def journal_path(data: Path | None = None) -> Path:
    return (data or data_dir()) / "journal.sqlite"


def runtime_dir() -> Path:
    """``$XDG_RUNTIME_DIR/cratesense`` when set; else a private folder of ours in the temp
    folder (Linux), or the platform's. Not platformdirs on Linux: it silently picks another
    folder when $XDG_RUNTIME_DIR is not 0700 (so an agent and a CLI could disagree), and warns
    on every CLI call when it is unset."""
    xdg = os.environ.get("XDG_RUNTIME_DIR")
    if xdg and os.path.isabs(xdg):
        return Path(xdg) / APP_NAME
    if sys.platform.startswith("linux"):
        return Path(tempfile.gettempdir()) / f"{APP_NAME}-{os.getuid()}"
    import platformdirs

    return Path(platformdirs.user_runtime_dir(APP_NAME))


def socket_path(folder: Path | None = None) -> Path:
    return (folder or runtime_dir()) / "control.sock"
