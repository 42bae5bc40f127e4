"""One clock for every host: a supervisor measures its clock's offset to the recorder's host, NTP-style
over MQTT, and the recorder records it as a ``host_clock`` event (docs/experiments.md#one-clock).

An exchange: the supervisor sends ``clock`` at t1 (its clock), the recorder notes t2 on receipt and
t3 on answering (its clock), the answer arrives at t4. offset = ((t2 - t1) + (t3 - t4)) / 2 is the
recorder's clock minus ours, wrong by at most half the round trip delay = (t4 - t1) - (t3 - t2).
Of ``SAMPLES`` exchanges the one with the shortest round trip is kept; it is measured when the
session opens and every ``PERIOD`` seconds after, so a drifting host clock is followed.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from ether.contract.messages import ClockReply, RecorderCommand, read_reply
from ether.contract.topics import Topics
from ether.transport.requests import Requester, RequestTimeout

log = logging.getLogger("ether.clock")

PERIOD = 30.0  # s between two estimates
SAMPLES = 5  # exchanges per estimate


class HostClock:
    """Estimates and reports this host's offset to the recorder's clock, periodically, on a thread."""

    def __init__(
        self,
        requester: Requester,
        topics: Topics,
        supervisor: str,
        host: str,
        sources: Callable[[], list[str]],
        period: float = PERIOD,
        clock: Callable[[], float] = time.time,
        timeout: float = 5.0,
    ) -> None:
        self.requester, self.topic = requester, topics.recorder_control()
        self.supervisor, self.host, self.sources = supervisor, host, sources
        self.period, self.clock, self.timeout = period, clock, timeout
        self.stopped = threading.Event()
        self.measured = threading.Event()  # set once an estimate is recorded

    def exchange(self) -> tuple[float, float] | None:
        """(offset, delay) of one exchange with the recorder; None if it did not answer as the contract says."""
        t1 = self.clock()
        reply = read_reply(self.requester.request(self.topic, RecorderCommand(command="clock"), self.timeout))
        t4 = self.clock()
        times = ClockReply.read(reply.result) if reply.ok else None
        if times is None:
            return None
        t2, t3 = times.received, times.sent
        return ((t2 - t1) + (t3 - t4)) / 2, max(0.0, (t4 - t1) - (t3 - t2))

    def estimate(self, samples: int = SAMPLES) -> tuple[float, float] | None:
        """The exchange with the shortest round trip of ``samples``, as (offset, delay)."""
        found = [e for e in (self.exchange() for _ in range(samples)) if e is not None]
        return min(found, key=lambda e: e[1]) if found else None

    def measure(self) -> tuple[float, float] | None:
        """Estimate now and have the recorder record it; the estimate, or None (no recorder answered)."""
        try:
            best = self.estimate()
            if best is None:
                return None
            report = RecorderCommand(
                command="clock_offset",
                offset=best[0],
                delay=best[1],
                supervisor=self.supervisor,
                host=self.host,
                sources=self.sources(),
            )
            done = read_reply(self.requester.request(self.topic, report, self.timeout))
        except RequestTimeout:
            log.debug("no recorder answered a clock exchange: no host clock offset this time")
            return None
        if not done.ok:
            return None
        self.measured.set()
        return best

    def start(self) -> None:
        threading.Thread(target=self._run, name="ether-host-clock", daemon=True).start()

    def _run(self) -> None:
        while not self.stopped.is_set():
            try:
                self.measure()
            except Exception:  # the session closed its connection under us, or a bug: never kill the session
                if self.stopped.is_set():
                    return
                log.exception("host clock: could not measure the offset to the recorder")
            self.stopped.wait(self.period)

    def stop(self) -> None:
        self.stopped.set()
