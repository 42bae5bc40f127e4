"""A simulated ADC board that reads blocks of samples: bytes and arrays in Ether's binary encoding.

usage: adc.py HOST PORT [TRANSPORT]   (TRANSPORT: "mqtt" (default) or "minimqtt")
"""

import sys
from array import array

from ether_lite import Node, sensor
from ether_lite.frames import Samples


class ADC:
    def __init__(self):
        self.n = 0

    @sensor(period=0.2)
    def block(self):
        self.n += 1
        samples = array("h", [i * 7 - 900 + self.n for i in range(256)])
        return {
            "n": self.n,
            "samples": Samples(samples, "<i2"),
            "raw": bytes(range(10)),
            "rate": 1000.0,
            "t0": 0.0,
            "pairs": Samples(array("f", [0.5, 1.5, 2.5, 3.5]), "<f4", (2, 2)),
        }


host, port = sys.argv[1], int(sys.argv[2])
pool = None
if len(sys.argv) > 3 and sys.argv[3] == "minimqtt":
    try:
        import socketpool

        pool = socketpool.SocketPool(None)
    except ImportError:
        import socket as pool
node = Node("adc1", ADC(), host, port, firmware="sim-adc", pool=pool)
print("board-ready")
node.run()
