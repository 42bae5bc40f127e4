"""A three-stage pipeline for the delivery chaos tests: a 200 Hz source, a processor, a collector."""

from __future__ import annotations

from ether import ether_pub, ether_sub


class Source:
    """Samples at 200 Hz, numbered from 1 (a new process counts from 1 again)."""

    def __init__(self) -> None:
        self.n = 0

    @ether_pub(topic="samples", interval=0.005)
    def sample(self) -> dict:
        self.n += 1
        return {"n": self.n}


class Processor:
    @ether_sub(topic="samples")
    @ether_pub(topic="results")
    def process(self, n: int) -> dict:
        return {"n": n, "squared": n * n}


class Collector:
    @ether_sub(topic="results")
    @ether_pub(topic="collected")
    def collect(self, n: int, squared: int) -> dict:
        return {"n": n}
