"""The session client of this process: the hosted instance's, or the one ``ether.tap()`` opened.

``ether.pub`` and ``ether.get``/``save``/``request`` work the same from a script and from inside an
instance because both kinds of process register themselves here.
"""

from __future__ import annotations

from typing import Any, Protocol

from ether.runtime.services import ServiceClient


class Client(Protocol):
    @property
    def services(self) -> ServiceClient: ...

    def publish(self, topic: str, data: Any) -> None: ...


_client: Client | None = None


def set_client(client: Client | None) -> None:
    global _client
    _client = client


def current() -> Client:
    if _client is None:
        raise RuntimeError("no Ether session in this process: call ether.tap(config) first")
    return _client
