"""ether_lite: a microcontroller board as a peer in an Ether lab
(CircuitPython, MicroPython, CPython).

    from ether_lite import Node, sensor, actuator

    class Thermostat:
        @sensor(period=1.0, unit="C")
        def temperature(self):
            return 21.5

        @actuator(on=bool)
        def heater(self, on):
            ...

    Node("thermo1", Thermostat(), "192.168.1.10").run()
"""

__version__ = "0.1.0"
__repo__ = "ether-lab"  # the project (its pip name); no public repository

from .methods import actuator, sensor  # noqa: E402
from .node import Node  # noqa: E402
