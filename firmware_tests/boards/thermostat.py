"""A simulated thermostat board, the same script for MicroPython and CPython.

usage: thermostat.py HOST PORT [SESSION [BUFFER [TRANSPORT]]]
TRANSPORT: "mqtt" (default), "minimqtt", or "fd:N": MQTT over the tty open as file descriptor N, which
`ether bridge` serves from the other end (HOST and PORT are then unused).
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
transport = sys.argv[5] if len(sys.argv) > 5 else "mqtt"
pool = serial = None
if transport == "minimqtt":
    try:  # CircuitPython's socketpool (under MicroPython: a stand-in)
        import socketpool

        pool = socketpool.SocketPool(None)
    except ImportError:  # CPython: its socket module serves as the pool
        import socket as pool
elif transport.startswith("fd:"):
    serial = open(int(transport[3:]), "r+b", buffering=0)

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
    serial=serial,
)
print("board-ready")
node.run()
