"""A keychain for tests: keyring's real API over a JSON file named by $TRAYPROXY_TEST_KEYRING.

Selected with ``PYTHON_KEYRING_BACKEND=keyring_backend.FileKeyring`` (and ``tests/`` on
PYTHONPATH) in subprocesses of the real CLI, or ``keyring.set_keyring(FileKeyring())`` in-process,
so no test reads or writes the developer's own keychain.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from keyring.backend import KeyringBackend
from keyring.errors import PasswordDeleteError


class FileKeyring(KeyringBackend):
    """Entries kept as {"service/account": secret} in one JSON file."""

    priority = 1  # type: ignore[assignment]  # keyring declares it as a class property

    @staticmethod
    def _path() -> Path:
        return Path(os.environ["TRAYPROXY_TEST_KEYRING"])

    def _entries(self) -> dict[str, str]:
        try:
            return dict(json.loads(self._path().read_text(encoding="utf-8")))
        except FileNotFoundError:
            return {}

    def get_password(self, service: str, username: str) -> str | None:
        return self._entries().get(f"{service}/{username}")

    def set_password(self, service: str, username: str, password: str) -> None:
        entries = self._entries()
        entries[f"{service}/{username}"] = password
        self._path().write_text(json.dumps(entries), encoding="utf-8")

    def delete_password(self, service: str, username: str) -> None:
        entries = self._entries()
        if entries.pop(f"{service}/{username}", None) is None:
            raise PasswordDeleteError(username)
        self._path().write_text(json.dumps(entries), encoding="utf-8")
