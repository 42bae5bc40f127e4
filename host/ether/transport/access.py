"""Who may connect to the embedded broker when it listens beyond this machine.

On 127.0.0.1 (the default) only local programs can reach the broker, so no login is asked. On any
other address it requires a username and password: each session gets its own generated login, and
boards or other hosts get theirs with ``ether access add NAME``. Everything is kept in one folder
readable by its owner only (``~/.ether/access``, or ``$ETHER_HOME/access``):

  passwords        the broker's password file: ``name:argon2-hash`` per line (no plain passwords)
  <session>.url    the session's own login as a broker URL, for ``--broker`` on other hosts
"""

from __future__ import annotations

import os
import secrets
import socket
from pathlib import Path

from ether.transport.broker import BrokerAddress

SESSION_USER_PREFIX = "session-"


def access_folder() -> Path:
    home = Path(os.environ.get("ETHER_HOME") or Path.home() / ".ether")
    folder = home / "access"
    folder.mkdir(parents=True, exist_ok=True)
    folder.chmod(0o700)
    return folder


class Access:
    """The password file of the embedded broker and the logins in it."""

    def __init__(self, folder: Path | None = None) -> None:
        self.folder = folder or access_folder()
        self.password_file = self.folder / "passwords"

    def users(self) -> dict[str, str]:
        """name -> password hash."""
        if not self.password_file.exists():
            return {}
        lines = self.password_file.read_text().splitlines()
        return dict(line.split(":", 1) for line in lines if ":" in line and not line.startswith("#"))

    def add(self, name: str) -> str:
        """Create (or renew) the login ``name``; returns its new password, which is not stored."""
        if not name or ":" in name or any(c.isspace() for c in name):
            raise ValueError(f"login name {name!r}: use letters, digits, '-' or '_' (no ':' or spaces)")
        from pwdlib import PasswordHash
        from pwdlib.hashers.argon2 import Argon2Hasher

        password = secrets.token_urlsafe(18)
        users = self.users() | {name: PasswordHash((Argon2Hasher(),)).hash(password)}
        self._write(users)
        return password

    def remove(self, name: str) -> bool:
        users = self.users()
        if users.pop(name, None) is None:
            return False
        self._write(users)
        return True

    def session_login(self, session: str) -> tuple[str, str]:
        """A fresh login (name, password) for this run of ``session``; every process of it uses it."""
        name = f"{SESSION_USER_PREFIX}{session}"
        return name, self.add(name)

    def save_session_url(self, session: str, address: BrokerAddress) -> Path:
        """``<session>.url``: how another host joins, e.g. ``ether run --broker $(cat ...)``."""
        path = self.folder / f"{session}.url"
        login = f"{address.username}:{address.password}"
        write_private(path, f"mqtt://{login}@{socket.gethostname()}:{address.port}\n")
        return path

    def _write(self, users: dict[str, str]) -> None:
        write_private(self.password_file, "".join(f"{n}:{h}\n" for n, h in sorted(users.items())))


def write_private(path: Path, text: str) -> None:
    """Write a file only its owner can read, without a moment where others could."""
    path.touch(mode=0o600)
    path.chmod(0o600)
    path.write_text(text)
