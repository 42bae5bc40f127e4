"""The benchmark pipeline: source -> relay -> sink, each an Ether instance in its own process."""

from __future__ import annotations

import json
import os
import sys
import threading
import time

import ether
from ether import ether_get, ether_pub, ether_save_all, ether_sub


class Source:
    @ether_sub(topic="bench/go")
    def go(self, n: int, pace: float = 0.0) -> None:
        """Publish n messages, back to back (pace 0) or one every `pace` seconds (for latency)."""
        ticker = threading.Event()
        for i in range(n):
            self.emit(i)
            if pace:
                ticker.wait(pace)

    @ether_pub(topic="bench/data")
    def emit(self, i: int) -> dict:
        return {"i": i, "t": time.time()}


class Relay:
    """One hop: records how long each message took from the source's publish to this handler."""

    def __init__(self, stats: str):
        self.stats, self.latencies = stats, []

    @ether_sub(topic="bench/data")
    @ether_pub(topic="bench/result")
    def relay(self, i: int, t: float) -> dict:
        self.latencies.append(time.time() - t)
        return {"i": i, "t": t}

    @ether_save_all
    def save(self) -> None:
        with open(self.stats, "w") as f:
            json.dump({"latencies": self.latencies}, f)


class Sink:
    def __init__(self, n: int):
        self.n, self.count = n, 0

    @ether_sub(topic="bench/result")
    def take(self, i: int, t: float) -> None:
        self.count += 1
        if self.count == self.n:
            ether.pub({"count": self.count, "t": time.time()}, "bench/done")


class Listener:
    """One of the fan-out subscribers: counts the source's messages directly."""

    def __init__(self, n: int):
        self.n, self.count = n, 0

    @ether_sub(topic="bench/data")
    def take(self, i: int, t: float) -> None:
        self.count += 1
        if self.count == self.n:
            ether.pub({"count": self.count, "t": time.time()}, "bench/done")


class Probe:
    """What an idle instance process costs: its resident memory and the modules it imported."""

    @ether_get
    def footprint(self) -> dict:
        with open(f"/proc/{os.getpid()}/status") as f:
            rss_kb = next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))
        return {"rss_mb": rss_kb / 1024, "modules": sorted(sys.modules)}


class Responder:
    """A service answering at once, for the request/reply benchmark."""

    @ether_get
    def echo(self, i: int) -> int:
        return i
