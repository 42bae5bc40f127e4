"""How far behind the broker is (:class:`BrokerLag`): a small probe published to ourselves every second.

An overloaded broker queues what it receives and passes it on late; every message through it waits
behind that queue, so our probe does too. The lag is the last probe's round trip, or, when probes stop
coming back (a broker minutes behind), the age of the oldest one still out: it grows as the backlog does.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections.abc import Callable

from ether.transport.bus import Bus

log = logging.getLogger("ether")

PROBE_INTERVAL = 1.0  # seconds between probes
PROBES_KEPT = 600  # probes still out that are remembered (a broker 10 min behind at one a second)


class BrokerLag:
    """Probes ``bus``'s broker on ``topic`` (which only we use); ``on_tick(lag_s)`` after each probe."""

    def __init__(
        self, bus: Bus, topic: str, on_tick: Callable[[float], None], interval: float = PROBE_INTERVAL
    ) -> None:
        self.bus, self.topic, self.on_tick, self.interval = bus, topic, on_tick, interval
        self._out: dict[int, float] = {}  # probe number -> when it was sent (monotonic)
        self._round_trip = 0.0
        self._numbers = itertools.count()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._probe, name="ether-broker-lag", daemon=True)

    def start(self) -> None:
        self.bus.subscribe(self.topic, self._on_probe)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    @property
    def lag(self) -> float:
        """Seconds the broker is behind: the last round trip, or the age of the oldest probe still out."""
        with self._lock:
            oldest = min(self._out.values(), default=None)
            waited = time.monotonic() - oldest if oldest is not None else 0.0
            return max(self._round_trip, waited)

    def _probe(self) -> None:
        while not self._stop.wait(self.interval):
            if not self.bus.connected:  # not behind: away (its probes out are lost with the connection)
                with self._lock:
                    self._out.clear()
                continue
            number = next(self._numbers)
            with self._lock:
                self._out[number] = time.monotonic()
                if len(self._out) > PROBES_KEPT:
                    self._out.pop(min(self._out))
            self.bus.publish(self.topic, str(number).encode(), qos=0)  # QoS 0: no retries to add
            self.on_tick(self.lag)

    def _on_probe(self, topic: str, raw: bytes) -> None:
        try:
            number = int(raw)
        except ValueError:
            return
        now = time.monotonic()
        with self._lock:
            sent = self._out.pop(number, None)
            if sent is None:
                return
            self._round_trip = now - sent
            for older in [n for n in self._out if n < number]:  # lost on the way (QoS 0): not late
                del self._out[older]
