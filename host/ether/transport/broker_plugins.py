"""The embedded broker's amqtt plugin that tells who a connection is (:class:`EtherLogins`); what it
may then publish and subscribe to is checked by the broker (``broker.EtherBroker``). Imported only by
the broker process."""

from __future__ import annotations

import hmac
import logging
from dataclasses import dataclass
from pathlib import Path

from amqtt.plugins.base import BaseAuthPlugin

from ether.transport.access import Access
from ether.transport.permissions import ANONYMOUS, Login
from ether.transport.signing import password

log = logging.getLogger("ether.broker")


class EtherLogins(BaseAuthPlugin):
    """Derived logins (the broker key's), boards' logins (the password file), anonymous on loopback."""

    @dataclass
    class Config:
        secret: str = ""
        password_file: str = ""
        anonymous: bool = True

    async def authenticate(self, *, session) -> bool:
        login = self.login(session.username, session.password)
        session.ether_login = login  # what the broker checks each publish and subscribe against
        if login is None:
            log.warning("broker: refused the login %r (client %s)", session.username, session.client_id)
        return login is not None

    def login(self, username: str | None, given: str | None) -> Login | None:
        if not username:
            return ANONYMOUS if self.config.anonymous else None
        derived = Login.parse(username)
        if derived is not None:
            if not self.config.secret:
                return None
            expected = password(bytes.fromhex(self.config.secret), username)
            return derived if hmac.compare_digest(expected, given or "") else None
        if self.config.password_file and given:
            from pwdlib import PasswordHash
            from pwdlib.hashers.argon2 import Argon2Hasher

            known = Access(Path(self.config.password_file).parent).users().get(username)
            if known and PasswordHash((Argon2Hasher(),)).verify(given, known):
                return Login("device", name=username)
        return None
