"""The benchmark pipeline: source -> relay -> sink, each an Ether instance in its own process."""

from __future__ import annotations

import json
import os
import sys
import threading
import time

import ether
from ether import ether_get, ether_pub, ether_save_all, ether_start, ether_sub


class Source:
    @ether_sub(topic="bench/go")
    def go(self, n: int, pace: float = 0.0) -> None:
        """Publish n messages, back to back (pace 0) or one every `pace` seconds (for latency), from
        a thread of its own, as an acquisition loop would: what a handler publishes itself leaves
        when it returns (docs/data.md), which would make the latency the loop's length."""
        threading.Thread(target=self._emit_all, args=(n, pace), daemon=True).start()

    def _emit_all(self, n: int, pace: float) -> None:
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
    """What an idle instance process costs: its memory and the modules it imported.

    RSS counts the pages it shares with the fork server and its sibling forks; PSS counts each shared
    page divided by the processes sharing it; USS only its own pages (what ending it frees)."""

    @ether_get
    def footprint(self) -> dict:
        with open(f"/proc/{os.getpid()}/smaps_rollup") as f:
            kb = {k: int(v.split()[0]) for k, v in (line.split(":", 1) for line in f if ":" in line[:20])}
        return {
            "rss_mb": kb["Rss"] / 1024,
            "pss_mb": kb["Pss"] / 1024,
            "uss_mb": (kb["Private_Clean"] + kb["Private_Dirty"]) / 1024,
            "modules": sorted(sys.modules),
        }


class Responder:
    """A service answering at once, for the request/reply benchmark."""

    @ether_get
    def echo(self, i: int) -> int:
        return i


def array_of(kind: str):
    """The arrays bench/arrays.py sends: 1e5 float64 (800 kB) or a 640x480 RGB frame (922 kB)."""
    import numpy as np

    if kind == "float64":
        return np.random.default_rng(0).random(100_000)
    return np.random.default_rng(0).integers(0, 255, (480, 640, 3), dtype=np.uint8)


class ArraySource:
    """Publishes n arrays of one kind back to back (made, and numpy imported, before the session is
    ready, as the raw source makes its bytes before it is: outside the measured time)."""

    def __init__(self) -> None:
        self.arrays = {kind: array_of(kind) for kind in ("float64", "frame")}

    @ether_sub(topic="bench/go_arrays")
    def go(self, n: int, kind: str) -> None:
        """From a thread of its own, as Source.go."""
        threading.Thread(target=self._emit_all, args=(n, self.arrays[kind]), daemon=True).start()

    def _emit_all(self, n: int, data) -> None:
        for i in range(n):
            self.emit(i, data)

    @ether_pub(topic="bench/arrays")
    def emit(self, i: int, data) -> dict:
        return {"i": i, "data": data}


class ArraySink:
    """Counts arrays; reports when it has n of them (numpy imported before: outside the measured time)."""

    def __init__(self, n: int):
        import numpy  # noqa: F401

        self.n, self.count = n, 0

    @ether_sub(topic="bench/arrays")
    def take(self, i: int, data) -> None:
        self.count += 1
        if self.count == self.n:
            ether.pub({"count": self.count, "t": time.time()}, "bench/done")


class Ephys:
    """A 32-channel int16 amplifier at 30 kHz, publishing 10 ms blocks as its clock says (catching
    up after a stall, as a device's buffer would), for ``seconds``; then reports how many it sent."""

    def __init__(self, seconds: float, channels: int = 32, rate: float = 30_000.0, block: int = 300):
        self.seconds, self.channels, self.rate, self.block = seconds, channels, rate, block

    @ether_start()
    def begin(self) -> None:
        threading.Thread(target=self.acquire, daemon=True).start()

    def acquire(self) -> None:
        import numpy as np

        rng = np.random.default_rng(0)
        noise = rng.integers(-3000, 3000, (self.block * 100, self.channels), dtype=np.int16)
        names = [f"ch{c}" for c in range(self.channels)]
        start, sent, ticker = time.time(), 0, threading.Event()
        total = int(self.seconds * self.rate / self.block)
        while sent < total:
            due = min(total, int((time.time() - start) * self.rate / self.block))
            while sent < due:
                i = sent % 100
                samples = noise[i * self.block : (i + 1) * self.block]
                t0 = start + sent * self.block / self.rate
                self.emit(ether.block(samples, self.rate, t0=t0, channels=names, units="uV"))
                sent += 1
            ticker.wait(self.block / self.rate / 2)
        ether.pub({"count": sent, "t": time.time()}, "bench/done")

    @ether_pub(topic="ephys")
    def emit(self, block: dict) -> dict:
        return block


class Flood:
    """A 1 kHz sensor (a periodic publisher): what ten of them do to a broker (bench/overload.py)."""

    def __init__(self):
        self.i = 0

    @ether_pub(topic="bench/flood", interval=0.001)
    def sample(self) -> dict:
        self.i += 1
        return {"i": self.i, "t": time.time()}
