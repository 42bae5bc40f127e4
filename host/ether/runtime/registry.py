"""The live registry: every instance's retained status, as any process in the session can see it."""

from __future__ import annotations

import threading
from typing import Any

from ether.contract.messages import InstanceStatus
from ether.contract.topics import Topics
from ether.contract.wire import decode_object
from ether.transport.bus import Bus

LIVE_STATES = ("starting", "ready", "restarting", "paused")


class LiveRegistry:
    """Follows ``ether/<session>/instance/+/status``; answers who is alive and who serves what."""

    def __init__(self, bus: Bus, topics: Topics) -> None:
        self.statuses: dict[str, dict[str, Any]] = {}
        self.changed = threading.Condition()
        self._turn: dict[str, int] = {}
        bus.subscribe(topics.instance_status_all(), self._on_status)

    def _on_status(self, topic: str, raw: bytes) -> None:
        status = decode_object(raw)
        if status is not None and InstanceStatus.read(status) is not None:  # a status of the contract
            with self.changed:
                self.statuses[status["instance"]] = status
                self.changed.notify_all()

    def active(self) -> dict[str, dict[str, Any]]:
        with self.changed:
            return {n: dict(s) for n, s in self.statuses.items() if s.get("state") in LIVE_STATES}

    def servers(self, service: str) -> list[str]:
        """Ready instances that serve ``ClassName.method``."""
        with self.changed:
            return sorted(
                n
                for n, s in self.statuses.items()
                if s.get("state") == "ready" and service in s.get("services", ())
            )

    def pick(self, service: str) -> str | None:
        """Round-robin over the instances serving ``service``, so they share the load."""
        servers = self.servers(service)
        if not servers:
            return None
        with self.changed:
            turn = self._turn.get(service, 0)
            self._turn[service] = turn + 1
        return servers[turn % len(servers)]
