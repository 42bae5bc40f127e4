"""Classes the seal tests run as instances (imported by the instance processes)."""

from __future__ import annotations

import time

import ether
from ether import ether_save_all, ether_sub


class LastWord:
    """Publishes one last message at save_all, once the test opens ``gate`` (a FIFO) for writing: the
    moment its session ends is the test's to choose, with no clock involved."""

    def __init__(self, gate: str) -> None:
        self.gate = gate

    @ether_save_all
    def say_last(self) -> None:
        with open(self.gate) as gate:  # blocks until the test opens the other end
            gate.read()
        ether.pub({"last": True}, "last_word")


class SlowSink:
    """Handles each tick in 0.5 s: far slower than a Ticker sends, so a short drain leaves many unhandled."""

    @ether_sub(topic="tick")
    def take(self, n: int) -> None:
        time.sleep(0.5)  # the work itself, not a synchronisation
