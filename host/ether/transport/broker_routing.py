"""The embedded broker's routing, mixed into its broker class: the subscriptions a topic reaches are
found once per topic and kept until a subscription filter comes or goes. amqtt matched every filter of
the broker against every message (and formatted a debug line for each one that did not match).
Imported only by the broker process."""

from __future__ import annotations

import asyncio
from typing import Any

from amqtt.mqtt.constants import QOS_1, QOS_2

MAX_TOPICS = 10_000  # topics whose filters are kept; past it, the table starts again (hostile topics)


class Routing:
    """Replaces amqtt 0.12.1's ``Broker._run_broadcast`` (same deliveries, same order). Every delivery
    is allowed: a subscriber's filter was checked when it subscribed (``EtherBroker._topic_filtering``)."""

    _subscriptions: dict[str, list[tuple[Any, int]]]
    _broadcast_queue: asyncio.Queue

    def __init__(self, *args, **kwargs) -> None:
        self._routes: dict[str, tuple[str, ...]] = {}  # topic -> the filters it matches
        super().__init__(*args, **kwargs)

    def _filters_of(self, topic: str) -> tuple[str, ...]:
        """The subscription filters ``topic`` matches, in the order amqtt tries them."""
        filters = self._routes.get(topic)
        if filters is None:
            if len(self._routes) >= MAX_TOPICS:
                self._routes.clear()
            matches = self._matches  # type: ignore[attr-defined]
            filters = self._routes[topic] = tuple(f for f in self._subscriptions if matches(topic, f))
        return filters

    def _routes_changed(self) -> None:
        self._routes.clear()

    async def add_subscription(self, subscription, session) -> int:
        try:
            return await super().add_subscription(subscription, session)  # type: ignore[misc]
        finally:
            self._routes_changed()

    async def _del_all_subscriptions(self, session) -> None:
        try:
            await super()._del_all_subscriptions(session)  # type: ignore[misc]
        finally:
            self._routes_changed()

    async def _run_broadcast(self, running_tasks) -> None:
        broadcast = await self._broadcast_queue.get()
        topic, data = broadcast["topic"], broadcast["data"]
        for topic_filter in self._filters_of(topic):
            for target, subscribed_qos in self._subscriptions.get(topic_filter, ()):
                qos = broadcast.get("qos", subscribed_qos)
                if target.transitions.state != "connected":
                    # [MQTT-3.1.2.4] kept for a persistent session (not an anonymous one), at QoS 1 and 2
                    if not target.clean_session and qos in (QOS_1, QOS_2) and not target.is_anonymous:
                        await self._retain_broadcast_message(broadcast, qos, target)  # type: ignore[attr-defined]
                    continue
                handler = self._get_handler(target)  # type: ignore[attr-defined]
                if handler:
                    running_tasks.append(
                        asyncio.ensure_future(handler.mqtt_publish(topic, data, qos, retain=False))
                    )
