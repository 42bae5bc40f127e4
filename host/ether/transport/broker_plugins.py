"""The embedded broker's two amqtt plugins: who a connection is (:class:`EtherLogins`) and what it
may publish and subscribe to (:class:`EtherTopics`, as :mod:`ether.transport.permissions` says).
Imported only by the broker process."""

from __future__ import annotations

import hmac
import logging
from dataclasses import dataclass
from pathlib import Path

from amqtt.contexts import Action
from amqtt.plugins.base import BaseAuthPlugin, BaseTopicPlugin

from ether.transport.access import Access
from ether.transport.permissions import ANONYMOUS, Login, may_publish, may_subscribe
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
        session.ether_login = login  # what EtherTopics checks
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


class EtherTopics(BaseTopicPlugin):
    """Publish and subscribe as the login's role allows; a delivery is not checked again (its
    subscription was)."""

    @dataclass
    class Config:
        pass

    async def topic_filtering(self, *, session=None, topic=None, action=None) -> bool:
        if action == Action.RECEIVE:
            return True
        login = getattr(session, "ether_login", None)
        if login is None or topic is None:
            return False
        allowed = may_publish(login, topic) if action == Action.PUBLISH else may_subscribe(login, topic)
        if not allowed:
            log.warning("broker: %s may not %s %s", login.username or login.role, action.value, topic)
        return allowed
