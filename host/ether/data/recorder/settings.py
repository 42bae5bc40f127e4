"""The ``recorder:`` and ``streams:`` sections of a session file (docs/data.md).

```yaml
recorder: {enabled: true, path: ./ether_data}   # the default; ETHER_DATA overrides the default path
streams: {camera_preview: latest}               # every other data topic is durable
```
"""

from __future__ import annotations

import difflib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ether.contract.topics import matches

DURABLE, LATEST = "durable", "latest"
RECORDER_KEYS = ("enabled", "path", "drain_timeout")


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


def parse(doc: Any, data: dict[str, Any], directory: str) -> RecorderSettings:
    """Read ``recorder:`` and ``streams:``; ``doc.error(message, *key_path)`` locates mistakes."""
    settings = RecorderSettings()
    raw = data.get("recorder")
    if raw is False:
        raw = {"enabled": False}
    raw = raw or {}
    if not isinstance(raw, dict):
        raise doc.error("expected a mapping like {enabled: true, path: ./ether_data}", "recorder")
    for key in raw:
        if key not in RECORDER_KEYS:
            close = difflib.get_close_matches(str(key), RECORDER_KEYS, n=1)
            hint = f"did you mean '{close[0]}'?" if close else f"allowed: {', '.join(RECORDER_KEYS)}"
            raise doc.error(f"unknown key '{key}' ({hint})", "recorder", key)
    settings.enabled = raw.get("enabled", True)
    if not isinstance(settings.enabled, bool):
        raise doc.error("must be true or false", "recorder", "enabled")
    if "path" in raw:
        path = Path(str(raw["path"])).expanduser()
        settings.path = str(path if path.is_absolute() else Path(directory) / path)
    settings.drain_timeout = raw.get("drain_timeout", settings.drain_timeout)
    if not isinstance(settings.drain_timeout, (int, float)) or settings.drain_timeout < 0:
        raise doc.error("must be a number of seconds >= 0", "recorder", "drain_timeout")
    streams = data.get("streams") or {}
    if not isinstance(streams, dict):
        raise doc.error("expected a mapping of topic: durable | latest", "streams")
    for topic, policy in streams.items():
        if policy not in (DURABLE, LATEST):
            raise doc.error(f"must be '{DURABLE}' or '{LATEST}', got {policy!r}", "streams", topic)
        settings.streams[str(topic)] = policy
    return settings
