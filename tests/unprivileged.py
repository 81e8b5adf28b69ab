"""Running a command without the power to ignore file permissions, so they really apply.

CI runs as root, and root reads and writes everything: there, commands run as root *without*
CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH (util-linux's ``setpriv``, in every Debian), which is
what makes root bypass permission bits; everything else stays as it is (the same files, the
same interpreter). As a normal user, commands run unchanged."""

from __future__ import annotations

import os

_BYPASS = "-dac_override,-dac_read_search"


def without_bypass(command: list[str]) -> list[str]:
    if os.geteuid() != 0:
        return command
    return ["setpriv", f"--inh-caps={_BYPASS}", f"--bounding-set={_BYPASS}", "--", *command]
