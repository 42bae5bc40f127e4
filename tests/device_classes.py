"""A board (ether_lite) and host classes for tests/test_devices.py; the instance processes import them.

`python device_classes.py HOST PORT DEVICE SESSION` runs the board on its own, as a separate board would.
"""

from __future__ import annotations

import sys
import time

from ether_lite import Node, actuator, sensor

from ether import ether_pub, ether_sub


class Bench:
    """A bench board: a temperature, a battery (a bare value), and actuators that answer or fail."""

    def __init__(self, celsius: float = 21.0):
        self.celsius = celsius
        self.heating = False

    @sensor(period=0.1, unit="C")
    def temperature(self):
        return {"temperature": self.celsius, "heater": self.heating}

    @sensor
    def battery(self):
        return 3.7

    @actuator(on=bool)
    def set_heater(self, on):
        self.heating = on
        return on

    @actuator
    def fan(self, level: int, label: str = "auto") -> str:
        return f"{label}:{level}"

    @actuator(x=float)
    def broken(self, x):
        raise ValueError(f"broken on purpose (x={x})")

    @actuator(seconds=float)
    def slow(self, seconds):
        time.sleep(seconds)  # a slow device, on purpose: the host's call times out first
        return "late"


class ReadingTaker:
    """A typed host subscriber of the board's readings; what it publishes shows what it was given."""

    @ether_sub(topic="bench1.temperature")
    @ether_pub(topic="taken")
    def take(self, temperature: float, heater: bool) -> dict:
        return {
            "temperature": temperature,
            "heater": heater,
            "types": [type(temperature).__name__, type(heater).__name__],
        }

    @ether_sub(topic="bench1.battery")
    @ether_pub(topic="battery_taken")
    def battery(self, root: float) -> dict:
        return {"volts": root}


if __name__ == "__main__":
    host, port, device, session = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
    Node(device, Bench(), host, port, session=session, firmware="bench-test", keepalive=5).run()
