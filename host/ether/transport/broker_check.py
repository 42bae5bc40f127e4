"""What Ether needs of a broker it did not start, checked once when a session connects to it.

Ether's topics keep a ``.`` inside a level (``ClassName.method``, services, ``ether.structure``) and
its statuses are retained messages found through wildcard subscriptions (``instance/+/status``). A
broker that treats ``.`` as a level separator, or keeps retained messages from wildcard subscribers
(both: RabbitMQ 3.10's MQTT plugin), would lose or rename messages without a word: it is refused.
"""

from __future__ import annotations

import threading

from ether.transport.broker import BrokerError
from ether.transport.bus import Bus

CHECK_TIMEOUT = 10.0  # seconds for the broker to deliver both probes (an overloaded amqtt is seconds behind)


def check_broker(bus: Bus, root: str, timeout: float = CHECK_TIMEOUT) -> None:
    """Raise BrokerError unless a retained message under ``root`` (a topic only we use) reaches our
    wildcard subscription, and a message on ``root/dotted.level`` arrives on that very topic."""
    retained, dotted = f"{root}/retained", f"{root}/dotted.level"
    arrived: dict[bytes, str] = {}  # payload -> the topic it arrived on
    changed = threading.Condition()

    def on_message(topic: str, raw: bytes) -> None:
        with changed:
            arrived.setdefault(raw, topic)
            changed.notify_all()

    where = f"the MQTT broker at {bus.address.url}"
    if not bus.publish_and_wait(retained, b"retained", retain=True, timeout=timeout):
        raise BrokerError(f"{where} did not acknowledge a retained message within {timeout:g} s")
    try:
        bus.subscribe(f"{root}/#", on_message, timeout)
        bus.publish(dotted, b"dotted")
        with changed:
            changed.wait_for(lambda: b"dotted" in arrived and b"retained" in arrived, timeout)
    finally:
        bus.publish(retained, b"", retain=True)  # clears it
    if b"dotted" not in arrived:
        raise BrokerError(
            f"{where} did not deliver a message to its own sender within {timeout:g} s (or its ACL does"
            f" not let this login publish and read {root}/#)"
        )
    problems = []
    if arrived[b"dotted"] != dotted:
        tail = "/".join(arrived[b"dotted"].split("/")[-2:])
        problems.append(
            "it treats '.' in a topic as a level separator (a message sent to .../dotted.level arrived"
            f" on .../{tail}): Ether's topics (ClassName.method, services, runs and trials) would be"
            " renamed or lost"
        )
    if b"retained" not in arrived:
        problems.append(
            "it does not send retained messages to a wildcard subscription: Ether finds the statuses"
            " of instances and devices that way"
        )
    if problems:
        raise BrokerError(
            f"{where} cannot carry an Ether session: {'; and '.join(problems)} (RabbitMQ 3.10's MQTT"
            " plugin does both). Use Mosquitto or another broker (docs/operations.md#several-machines)"
        )
