"""The simulated board: a room with a thermometer and a heater, written with ether_lite as for a real board.

On a real board `temperature` would read a sensor and `set_heater` would switch a relay (see
docs/devices.md, "Wiring a real CircuitPython board in five steps"). Here the room is physics, sped up
so the loop closes in seconds: the heater warms it, the cold outside cools it.
"""

import time

from ether_lite import actuator, sensor


class Room:
    def __init__(self, start=16.0, outside=10.0, heater_power=3.0, loss=0.05):
        self.celsius = float(start)
        self.outside = float(outside)
        self.heater_power = float(heater_power)  # degrees per second while the heater is on
        self.loss = float(loss)  # per second, times the difference to the outside
        self.heating = False
        self.then = time.monotonic()

    def _advance(self):
        now = time.monotonic()
        dt, self.then = now - self.then, now
        gain = self.heater_power if self.heating else 0.0
        self.celsius += dt * (gain - self.loss * (self.celsius - self.outside))

    @sensor(period=0.2, unit="C")
    def temperature(self):
        self._advance()
        return {"temperature": round(self.celsius, 3), "heater": self.heating}

    @actuator(on=bool)
    def set_heater(self, on):
        self._advance()
        self.heating = on
        return on
