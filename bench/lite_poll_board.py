"""Board side of bench/lite_poll.py: times every poll() of a thermostat node (MicroPython).

usage: lite_poll_board.py HOST PORT SECONDS [minimqtt]
Prints "poll <phase> <n> <median us> <max us>" for the polls before it was online and after.
"""

import sys
from time import ticks_diff, ticks_ms, ticks_us  # MicroPython

from ether_lite import Node, actuator, sensor


class Thermostat:
    @sensor(period=0.05, unit="C")
    def temperature(self):
        return 21.5

    @actuator(on=bool)
    def heater(self, on):
        return on


pool = None
if len(sys.argv) > 4:
    try:
        import socketpool

        pool = socketpool.SocketPool(None)
    except ImportError:
        import socket as pool
node = Node("bench1", Thermostat(), sys.argv[1], int(sys.argv[2]), verbose=False, pool=pool)
times = {"connecting": [], "online": []}
end = None
while True:
    start = ticks_us()
    node.poll()
    took = ticks_diff(ticks_us(), start)
    times["online" if node.connected else "connecting"].append(took)
    if node.connected and end is None:
        end = ticks_ms() + int(sys.argv[3]) * 1000
    if end is not None and ticks_diff(ticks_ms(), end) >= 0:
        break
    node.client.wait(1) if node.connected else None
for phase in times:
    t = sorted(times[phase])
    if t:
        print("poll", phase, len(t), t[len(t) // 2], t[-1])
node.stop()
