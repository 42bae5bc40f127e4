"""Logins: every Ether client's, derived from its broker's key, and the boards' own.

A session that starts a broker (embedded or managed Mosquitto) creates the broker's key: a secret
from which every client's login (``permissions.Login``) and every source's signing key are derived
(``signing``). Its instances, recorder and supervisor each get their own login through their launch
spec; ``ether`` commands and the monitor of the same user find the key by the broker's port. On
127.0.0.1 a client without a login is still let in, with the anonymous role; on any other address the
broker requires a login, and boards get theirs with ``ether access add NAME``. Everything is kept in
one folder readable by its owner only (``~/.ether/access``, or ``$ETHER_HOME/access``):

  passwords          the boards' logins: ``name:argon2-hash`` per line (no plain passwords)
  broker-<port>.key  the key of the broker on that port, while the process that made it lives
  <session>.url      a supervisor login of the session as a broker URL, for ``--broker`` on other hosts
"""

from __future__ import annotations

import json
import os
import secrets
import socket
from dataclasses import dataclass, replace
from pathlib import Path

from ether.processes import alive
from ether.transport.broker import BrokerAddress, needs_credentials
from ether.transport.permissions import Login
from ether.transport.signing import new_secret, password, source_key


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
        if not name or ":" in name or "/" in name or any(c.isspace() for c in name):
            raise ValueError(f"login name {name!r}: use letters, digits, '-' or '_' (no ':', '/' or spaces)")
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

    def save_session_url(self, session: str, address: BrokerAddress) -> Path:
        """``<session>.url``: how another host joins, e.g. ``ether run --broker $(cat ...)``."""
        path = self.folder / f"{session}.url"
        write_private(path, replace(address, host=socket.gethostname()).login_url + "\n")
        return path

    def _write(self, users: dict[str, str]) -> None:
        write_private(self.password_file, "".join(f"{n}:{h}\n" for n, h in sorted(users.items())))


def write_private(path: Path, text: str) -> None:
    """Write a file only its owner can read, without a moment where others could."""
    path.touch(mode=0o600)
    path.chmod(0o600)
    path.write_text(text)


@dataclass(frozen=True)
class BrokerKey:
    """The secret of one broker, kept in ``broker-<port>.key`` while the process ``pid`` lives.
    ``logins``: the broker knows the derived logins (it is ours); on a broker run by someone else
    the key only signs, and clients log in as the broker URL says."""

    secret: bytes
    port: int
    logins: bool
    pid: int
    host: str = socket.gethostname()

    @staticmethod
    def path(port: int) -> Path:
        return access_folder() / f"broker-{port}.key"

    @classmethod
    def create(cls, port: int, logins: bool, pid: int, secret: bytes | None = None) -> BrokerKey:
        key = cls(secret or new_secret(), port, logins, pid)
        data = {"secret": key.secret.hex(), "logins": logins, "pid": pid, "host": key.host}
        write_private(cls.path(port), json.dumps(data) + "\n")
        return key

    @classmethod
    def find(cls, address: BrokerAddress) -> BrokerKey | None:
        """The key of the broker at ``address``, if it is on this host and its maker still runs, or
        on the host that a copied key names; None if there is none (or it cannot be read)."""
        port = address.port
        try:
            data = json.loads(cls.path(port).read_text())
            secret, logins, pid, host = (
                bytes.fromhex(data["secret"]),
                data["logins"],
                data["pid"],
                data["host"],
            )
            key = cls(secret, port, bool(logins), int(pid), str(host))
        except (OSError, ValueError, KeyError, TypeError):
            return None
        if key.host == socket.gethostname():
            return key if not needs_credentials(address.host) and alive(key.pid) else None
        return key if address.host == key.host else None

    def remove(self) -> None:
        """Delete the key file, if this process made it."""
        if self.pid == os.getpid() and BrokerKey.find(BrokerAddress(port=self.port)) == self:
            self.path(self.port).unlink(missing_ok=True)

    def address(self, address: BrokerAddress, login: Login) -> BrokerAddress:
        """Where ``login`` connects: ``address`` with its own derived password (if the broker is ours
        and no login was given)."""
        if not self.logins or address.username:
            return address
        return replace(address, username=login.username, password=password(self.secret, login.username))

    def signing_key(self, session: str, source: str) -> bytes:
        return source_key(self.secret, session, source)


def client_address(address: BrokerAddress, session: str, name: str) -> BrokerAddress:
    """An ``ether`` command's or the monitor's connection: an operator login of ``session`` when this
    user's key of that broker is here, else ``address`` as given (anonymous on loopback)."""
    key = BrokerKey.find(address)
    return key.address(address, Login("operator", session, name)) if key else address
