"""A simulated thermostat board, the same script for MicroPython and CPython.

usage: thermostat.py HOST PORT [SESSION [BUFFER [TRANSPORT]]]   (TRANSPORT: "mqtt" or "minimqtt")
Prints "board-ready" once the node exists, then the node's own log lines ("... connected to ...").
"""

import sys

from ether_lite import Node, actuator, sensor


class Thermostat:
    def __init__(self):
        self.celsius = 20.0
        self.heating = False

    @sensor(period=0.2, unit="C")
    def temperature(self):
        self.celsius += 0.1 if self.heating else -0.1
        return {"temperature": self.celsius, "heater": self.heating}

    @sensor
    def firmware_note(self):
        return "simulated"

    @actuator(on=bool)
    def heater(self, on):
        self.heating = on
        return on

    @actuator(level=int, label=str, gain=float)
    def fan(self, level, label, gain):
        return "%s:%d:%.1f" % (label, level, gain)

    @actuator(x=float)
    def broken(self, x):
        raise ValueError("broken on purpose (x=%s)" % x)


host, port = sys.argv[1], int(sys.argv[2])
session = sys.argv[3] if len(sys.argv) > 3 else "default"
buffer = int(sys.argv[4]) if len(sys.argv) > 4 else 32
pool = None
if len(sys.argv) > 5 and sys.argv[5] == "minimqtt":
    import socket as pool  # CPython's socket module serves as adafruit_minimqtt's socket pool

node = Node(
    "thermo1",
    Thermostat(),
    host,
    port,
    session=session,
    buffer=buffer,
    firmware="sim-1",
    keepalive=5,
    pool=pool,
)
print("board-ready")
node.run()
