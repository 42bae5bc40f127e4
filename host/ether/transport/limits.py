"""The embedded broker's payload limit, as Mosquitto's ``message_size_limit`` (docs/topics.md#limits).

A PUBLISH whose payload is larger than ``max_payload`` is read past without being kept, acknowledged
(so its sender does not send it again for ever), never delivered nor retained, and an error event on
``ether/<session>/errors`` names its topic, the sending client and the size. Runs in the broker
process only: :func:`install` patches amqtt's reading of a PUBLISH payload for the whole process.
"""

from __future__ import annotations

import logging

from ether.contract.messages import ErrorEvent
from ether.contract.topics import DEFAULT_SESSION, SYSTEM_ROOT, Topics
from ether.contract.wire import Stamper, encode

log = logging.getLogger("ether.broker")
CHUNK = 1 << 16  # an oversized payload is skipped this many bytes at a time


class Oversized(bytes):
    """The data of a PUBLISH that was not kept: empty (amqtt handles it as usual) and its ``size``."""

    size = 0


def install(max_payload: int) -> None:
    """Make every PUBLISH payload above ``max_payload`` bytes an empty :class:`Oversized` one."""
    from amqtt.codecs_amqtt import read_or_raise
    from amqtt.mqtt.publish import PublishPayload

    read_payload = PublishPayload.from_stream.__func__

    async def from_stream(cls, reader, fixed_header, variable_header):
        size = fixed_header.remaining_length - variable_header.bytes_length
        if size <= max_payload:
            return await read_payload(cls, reader, fixed_header, variable_header)
        left = size
        while left:
            left -= len(await read_or_raise(reader, min(left, CHUNK)))
        data = Oversized()
        data.size = size
        return cls(data)

    PublishPayload.from_stream = classmethod(from_stream)


class PayloadLimit:
    """Mixed into the broker class: an oversized message is reported instead of delivered."""

    ether_session: str | None = None  # the session of an embedded broker; ``ether broker`` serves any
    stamper = Stamper("broker")

    async def _handle_message_delivery(self, client_session, handler, wait_deliver) -> bool:
        message = wait_deliver.result()
        if message is not None and isinstance(message.data, Oversized):
            await self._report_oversized(client_session.client_id, message.topic, message.data.size)
            return True
        return await super()._handle_message_delivery(client_session, handler, wait_deliver)  # type: ignore[misc]

    async def _report_oversized(self, client_id: str, topic: str, size: int) -> None:
        reason = f"a message of {size} bytes from client {client_id!r} exceeds max_payload; not delivered"
        log.warning("broker: topic %r: %s", topic, reason)
        event = ErrorEvent(instance="broker", topic=topic, reason=reason, sender=client_id, size=size)
        errors = Topics(self._session_of(topic)).errors()
        await self._broadcast_message(None, errors, encode(event.payload(), self.stamper.control()))  # type: ignore[attr-defined]

    def _session_of(self, topic: str) -> str:
        """The session whose error topic hears of a refused message: the one a system topic names,
        else the embedded broker's own (``default`` for ``ether broker``)."""
        levels = topic.split("/")
        if levels[0] == SYSTEM_ROOT and len(levels) > 2:
            return levels[1]
        return self.ether_session or DEFAULT_SESSION
