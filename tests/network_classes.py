"""Instances for the network tests: a collector on a broker-shared subscription."""

from __future__ import annotations

from ether import ether_pub, ether_sub


class SharedCollector:
    @ether_sub(topic="$share/collectors/results")
    @ether_pub(topic="collected")
    def collect(self, n: int, squared: int) -> dict:
        return {"n": n}
