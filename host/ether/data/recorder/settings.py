"""The recorder settings a session runs with, from the ``recorder:`` and ``streams:`` sections (docs/data.md).

```yaml
recorder: {enabled: true, path: ./ether_data}   # the default; ETHER_DATA overrides the default path
streams: {camera_preview: latest}               # every other data topic is durable
```
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ether.contract.topics import matches

DURABLE, LATEST = "durable", "latest"


@dataclass
class RecorderSettings:
    """Where and whether a session is recorded, and which streams may lose samples (``latest``)."""

    enabled: bool = True
    path: str = ""  # '' = $ETHER_DATA or ./ether_data
    drain_timeout: float = 8.0  # how long each publisher waits at its end for unsaved messages
    streams: dict[str, str] = field(default_factory=dict)  # topic filter -> durable | latest
    run_dir: str = ""  # this run's folder, set when the session starts

    @property
    def root(self) -> Path:
        return Path(self.path or os.environ.get("ETHER_DATA") or "ether_data").resolve()

    def policy(self, user_topic: str) -> str:
        for topic_filter, policy in self.streams.items():
            if matches(topic_filter, user_topic):
                return policy
        return DURABLE

    def for_instance(self) -> dict[str, Any]:
        """What an instance process needs to publish: the streams, and its outbox folder if recording."""
        return {
            "enabled": self.enabled and bool(self.run_dir),
            "run_dir": self.run_dir,
            "streams": self.streams,
            "drain_timeout": self.drain_timeout,
        }

    @classmethod
    def of_instance(cls, info: dict[str, Any]) -> RecorderSettings:
        """The settings an instance process got in its launch spec (recording off if none)."""
        if not info:
            return cls(enabled=False)
        return cls(
            enabled=info["enabled"],
            run_dir=info["run_dir"],
            streams=dict(info["streams"]),
            drain_timeout=info["drain_timeout"],
        )

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)
