"""A live view of one topic in a notebook cell: its latest value and a plot of its recent values.

``ether.live("temperature", field="value")`` subscribes on its own connection to the tapped
session's broker and shows itself (HTML: the latest message, a sparkline of the last ``keep`` numbers,
redrawn at most every ``every`` seconds). Outside IPython it is the same object without the display:
``.latest``, ``.values``, ``.count``. ``view.stop()`` ends it (docs/experiments.md#notebooks).
"""

from __future__ import annotations

import html
import json
import threading
import time
import uuid
from collections import deque
from typing import Any

from ether.contract.wire import WireError, decode


class LiveView:
    def __init__(self, topic: str, field: str | None = None, keep: int = 200, every: float = 0.5) -> None:
        import ether
        from ether.transport.bus import Bus

        session = ether._current()
        self.topic, self.field, self.every = topic, field, every
        self.latest: Any = None
        self.latest_at: float | None = None
        self.count = 0
        self.values: deque[float] = deque(maxlen=keep)
        self._changed = threading.Condition()
        self._stopped = threading.Event()
        self._handle = _display(self)
        self._bus = Bus(session.address, client_id=f"ether-live-{uuid.uuid4().hex[:8]}")
        self._bus.connect()
        self._bus.subscribe(session.topics.data(topic), self._on_message)
        if self._handle is not None:
            threading.Thread(target=self._redraw, name="ether-live", daemon=True).start()

    def _on_message(self, topic: str, raw: bytes) -> None:
        try:
            payload, _ = decode(raw)
        except WireError:
            payload = bytes(raw)
        number = _number(payload, self.field)
        with self._changed:
            self.latest, self.latest_at, self.count = payload, time.time(), self.count + 1
            if number is not None:
                self.values.append(number)
            self._changed.notify_all()

    def wait(self, count: int, timeout: float = 10.0) -> bool:
        """Whether ``count`` messages have arrived since the view began, waiting up to ``timeout`` s."""
        with self._changed:
            return self._changed.wait_for(lambda: self.count >= count, timeout)

    def _redraw(self) -> None:
        self._shown = 0
        while not self._stopped.is_set():
            with self._changed:
                self._changed.wait_for(lambda: self.count != self._shown or self._stopped.is_set())
                self._shown = self.count
            if self._handle is not None:
                self._handle.update(self)
            self._stopped.wait(self.every)  # at most one redraw per `every` seconds

    def stop(self) -> None:
        """Stop following the topic; the cell keeps a last drawing of everything that came."""
        self._stopped.set()
        self._bus.close()
        with self._changed:
            self._changed.notify_all()
        if self._handle is not None:
            self._handle.update(self)

    def _repr_html_(self) -> str:
        with self._changed:
            latest, at, count, values = self.latest, self.latest_at, self.count, list(self.values)
        when = time.strftime("%H:%M:%S", time.localtime(at)) if at else "-"
        text = html.escape(_short(latest)) if count else "waiting for the first message"
        state = " (stopped)" if self._stopped.is_set() else ""
        return (
            f"<div><b>{html.escape(self.topic)}</b>{state}: {count} messages, latest at {when}<br>"
            f"<code>{text}</code><br>{_sparkline(values)}</div>"
        )

    def __repr__(self) -> str:
        return f"<live view of {self.topic!r}: {self.count} messages, latest {_short(self.latest)}>"


def live(topic: str, field: str | None = None, keep: int = 200, every: float = 0.5) -> LiveView:
    """Follow ``topic`` of the tapped session in this notebook cell; ``field``: the number to plot
    (default: the first number of each message)."""
    return LiveView(topic, field, keep, every)


def _display(view: LiveView) -> Any:
    """An IPython display handle showing ``view``, or None outside a notebook."""
    try:
        from IPython import get_ipython
        from IPython.display import display
    except ImportError:
        return None
    if get_ipython() is None:
        return None
    return display(view, display_id=True)


def _number(payload: Any, field: str | None) -> float | None:
    value = payload.get(field) if isinstance(payload, dict) and field else payload
    if isinstance(value, dict) and field is None:
        value = next((v for v in value.values() if _is_number(v)), None)
    return float(value) if value is not None and _is_number(value) else None


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value == value


def _short(payload: Any, limit: int = 200) -> str:
    try:
        text = json.dumps(payload, default=repr)
    except (TypeError, ValueError):
        text = repr(payload)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _sparkline(values: list[float], width: int = 300, height: int = 60) -> str:
    """An inline SVG plot of the values (oldest left), with the range they span."""
    if len(values) < 2:
        return ""
    low, high = min(values), max(values)
    span = (high - low) or 1.0
    step = width / (len(values) - 1)
    points = " ".join(
        f"{i * step:.1f},{height - (v - low) / span * height:.1f}" for i, v in enumerate(values)
    )
    return (
        f'<svg width="{width}" height="{height}" style="border:1px solid #ccc">'
        f'<polyline fill="none" stroke="steelblue" stroke-width="1.5" points="{points}"/></svg>'
        f"<br><small>{len(values)} values, {low:g} .. {high:g}</small>"
    )
