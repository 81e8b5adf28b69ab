"""The agent's identity: its install secret, its catalog credentials and the user's privacy
choices (contribute on/off, a deletion request), in a small file of their own (0600, replaced
atomically) beside the journal.

They live apart from the journal on purpose: a damaged journal is rebuilt from a rescan, and
with the same secret the rebuilt observations get the same ids, so the catalog sees re-sends
(idempotent), not a new contributor with duplicates of everything; and a user who turned
contribution off stays off.
"""

from __future__ import annotations

import json
import secrets
from pathlib import Path

from cratesense.errors import IdentityError
from cratesense.files import replace_atomically


class Identity:
    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            self._values = json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}
        except (OSError, ValueError) as exc:
            raise IdentityError(f"cannot read {path} ({exc}); move it aside to start as a new contributor") from exc
        if "install_secret" not in self._values:
            self.set("install_secret", secrets.token_hex(32))

    @property
    def secret(self) -> bytes:
        return bytes.fromhex(self._values["install_secret"])

    def get(self, key: str):
        return self._values.get(key)

    def set(self, key: str, value) -> None:
        if value is None:
            self._values.pop(key, None)
        else:
            self._values[key] = value
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        # synced, renamed, and the folder synced: a power cut right after registering must not
        # turn us into a new contributor
        replace_atomically(self.path, json.dumps(self._values).encode("utf-8"), mode=0o600)
