"""Heap used by ether_lite after import + connect (MicroPython: gc.mem_alloc before and after).

"Connected" is the steady state: online, and the broker has acknowledged the schema and state (until
then the client holds them for a resend, a few hundred bytes that come and go).

usage: micropython heap.py HOST PORT    prints "heap-import <bytes>" and "heap-connected <bytes>"
"""

import gc
import sys

gc.collect()
start = gc.mem_alloc()

from ether_lite import Node, actuator, sensor  # noqa: E402

gc.collect()
print("heap-import", gc.mem_alloc() - start)


class Thermostat:
    @sensor(period=1.0, unit="C")
    def temperature(self):
        return 21.5

    @actuator(on=bool)
    def heater(self, on):
        return on


node = Node("heap1", Thermostat(), sys.argv[1], int(sys.argv[2]), verbose=False)
while not node.connected or node.client.unacked or node.client.tx:
    node.poll()
    node.client.wait(10)
gc.collect()
print("heap-connected", gc.mem_alloc() - start)
node.stop()
