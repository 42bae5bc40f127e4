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

import sys

__version__ = "0.1.0"
__repo__ = "ether-lab"  # the project (its pip name); no public repository


def _rare(what, *args):
    """ether_lite.rare.<what>(*args). A board then forgets that module
    (unless a caller further up is using it), so it holds the code a node
    runs rarely only while it runs; CPython (threads, memory to spare)
    keeps it."""
    name = __name__ + ".rare"
    keep = name in sys.modules or sys.implementation.name == "cpython"
    from . import rare

    try:
        return getattr(rare, what)(*args)
    finally:
        if not keep:
            del sys.modules[name]
            delattr(sys.modules[__name__], "rare")


from .methods import actuator, sensor  # noqa: E402
from .node import Node  # noqa: E402
