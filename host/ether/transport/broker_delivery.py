"""The embedded broker's delivery of one message to one client at QoS 1, in place of amqtt 0.12.1's
``ProtocolHandler.mqtt_publish`` for that case: the same packets and the same 5 s wait for the PUBACK,
with a timer instead of ``asyncio.wait_for`` (a second future and its callbacks per delivery), and the
PUBACK's waiter in place before the PUBLISH goes out (amqtt registered it after, so a PUBACK that came
while the PUBLISH was being written was "unknown" and the delivery failed 5 s later). Imported only by
the broker process, which :func:`install` s it. A delivery that fails (no PUBACK in time, the client
gone) is said in one log line, not amqtt's traceback; Ether's outboxes and catch-up make good what
the client missed.
"""

from __future__ import annotations

import asyncio
import logging

from amqtt.errors import AMQTTError
from amqtt.mqtt.constants import QOS_1
from amqtt.mqtt.protocol.handler import ProtocolHandler
from amqtt.session import OutgoingApplicationMessage

log = logging.getLogger("ether.broker")
PUBACK_TIMEOUT = 5.0  # amqtt's: a delivery whose PUBACK does not come in this time fails


def install(handler_class: type[ProtocolHandler]) -> None:
    """Deliver at QoS 1 with :func:`publish_qos1` (every other case as amqtt does)."""
    amqtt_publish = handler_class.mqtt_publish

    async def mqtt_publish(self, topic, data, qos, retain, ack_timeout=None):
        if qos != QOS_1 or ack_timeout is not None:
            return await amqtt_publish(self, topic, data, qos, retain, ack_timeout)
        try:
            return await publish_qos1(self, topic, data, retain)
        except TimeoutError:  # said by _expire; amqtt would log a traceback at ERROR for each
            return None
        except (ConnectionError, RuntimeError) as exc:  # the client went away meanwhile
            if isinstance(exc, RuntimeError) and "closed" not in str(exc):  # uvloop: "... is closed"
                raise
            log.info("broker: a delivery on %s to a closed connection was dropped (%s)", topic, exc)
            return None

    handler_class.mqtt_publish = mqtt_publish


async def publish_qos1(handler, topic: str, data: bytes, retain: bool) -> OutgoingApplicationMessage:
    session = handler.session
    if session is None:
        raise AMQTTError("Session is not initialized.")
    packet_id = session.next_packet_id
    if packet_id in session.inflight_out:
        raise AMQTTError(f"A message with the same packet ID '{packet_id}' is already in flight")
    message = OutgoingApplicationMessage(packet_id, topic, QOS_1, data, retain)
    session.inflight_out[packet_id] = message
    loop = asyncio.get_running_loop()
    waiter: asyncio.Future = loop.create_future()
    handler._puback_waiters[packet_id] = waiter
    timer = loop.call_later(PUBACK_TIMEOUT, _expire, waiter, packet_id)
    try:
        message.publish_packet = message.build_publish_packet()
        await handler._send_packet(message.publish_packet)
        message.puback_packet = await waiter
    finally:
        timer.cancel()
        handler._puback_waiters.pop(packet_id, None)
        session.inflight_out.pop(packet_id, None)
    return message


def _expire(waiter: asyncio.Future, packet_id: int) -> None:
    if not waiter.done():
        reason = f"Timeout waiting for PUBACK for packet ID {packet_id}"
        log.warning("broker: %s", reason)
        waiter.set_exception(TimeoutError(reason))
