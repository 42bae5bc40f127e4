"""Which publisher ``ether.pub`` uses in this process: the hosted instance's, or the tapped session's."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

Publisher = Callable[[str, Any], None]
_publisher: Publisher | None = None


def set_publisher(publisher: Publisher | None) -> None:
    global _publisher
    _publisher = publisher


def publish(data: Any, topic: str) -> None:
    """Publish ``data`` to a user topic from wherever this process is in the session."""
    if _publisher is None:
        raise RuntimeError("ether.pub() needs a running session: call ether.tap(config) first")
    _publisher(topic, data)
