"""The common clock of a recorded session: every sender's time put on the recorder's clock.

A board's offsets are its ``device_clock`` events (per boot: recorder's time minus the board's, from
its least delayed reading of each period, ``data/recorder/clocks.py``); a host's are its supervisor's
``host_clock`` events (NTP-style exchanges, ``runtime/hostclock.py``), which name the sources on that
host. Between two estimates the offset is interpolated linearly in the sender's time and beyond the
first or last it is extrapolated from the nearest two, so a steady drift is followed
(docs/experiments.md#one-clock).
"""

from __future__ import annotations

import bisect
import json
import sqlite3
from typing import Any


class CommonClock:
    """Offsets to the recorder's clock, per source, as the session store recorded them."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self.estimates: list[dict[str, Any]] = []  # kind, src, boot, t (recorder's), offset, delay
        devices: dict[tuple[str, str], list[tuple[float, float]]] = {}
        hosts: dict[str, list[tuple[float, float]]] = {}
        self.host_of: dict[str, str] = {}  # source -> the supervisor of its host (its last report)
        events = db.execute(
            "SELECT src, boot, kind, detail FROM events WHERE kind IN ('device_clock', 'host_clock') ORDER BY rowid"
        )
        for src, boot, kind, text in events:
            detail = json.loads(text)
            offset = detail.get("offset")
            if not isinstance(offset, (int, float)) or src is None:
                continue
            if kind == "device_clock":
                devices.setdefault((src, boot), []).append((detail["t_board"], offset))
                t, delay = detail["t_host"], None
            else:
                t, delay = detail["t_recorder"], detail.get("delay")
                hosts.setdefault(src, []).append((t - offset, offset))
                for source in detail.get("sources") or ():
                    self.host_of[source] = src
            kind_name = "device" if kind == "device_clock" else "host"
            self.estimates.append(
                {"kind": kind_name, "src": src, "boot": boot, "t": t, "offset": offset, "delay": delay}
            )
        self._devices = {k: sorted(v) for k, v in devices.items()}
        self._hosts = {k: sorted(v) for k, v in hosts.items()}

    def offset(self, src: str | None, boot: str | None, t_sent: float | None) -> float | None:
        """Recorder's clock minus the sender's at ``t_sent``; None when nothing measured it."""
        if src is None or t_sent is None:
            return None
        points = self._devices.get((src, boot or ""))
        if points is None and src in self.host_of:
            points = self._hosts.get(self.host_of[src])
        return _interpolate(points, t_sent) if points else None

    def common(self, src: str | None, boot: str | None, t_sent: float | None) -> float | None:
        """``t_sent`` on the recorder's clock, or None when its sender's offset was never measured."""
        offset = self.offset(src, boot, t_sent)
        return None if offset is None or t_sent is None else t_sent + offset


def _interpolate(points: list[tuple[float, float]], x: float) -> float:
    """The offset at sender time ``x``: linear between the estimates around it, extrapolated from the
    nearest two beyond them; the one estimate if there is only one."""
    if len(points) == 1:
        return points[0][1]
    i = min(max(bisect.bisect_left(points, (x,)), 1), len(points) - 1)
    (x0, y0), (x1, y1) = points[i - 1], points[i]
    return y0 if x1 == x0 else y0 + (y1 - y0) * (x - x0) / (x1 - x0)
