"""Benchmark: Ether's request/reply (``ether.get``) against a raw paho request/response, side by side.

For each broker (embedded amqtt, and Mosquitto when installed) it measures, in one run:
  raw paho   a requester and a responder client: request with a correlation id, reply to a reply topic
  ether      ``ether.get("Responder.echo", ...)`` from a script to an instance in its own process
with 1 caller (round trip p50/p99) and 8 concurrent callers (requests/s), and prints the ratio.
Usage: ``python bench/requests.py [-n 2000]``.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from brokers import RawProcess, brokers, close, paho_client, percentile, subscribe  # noqa: E402

from ether.runtime.session import new_session  # noqa: E402
from ether.transport.broker import BrokerAddress  # noqa: E402

CALLERS = 8


def drive(call: Callable[[int], object], n: int, callers: int) -> tuple[float, list[float]]:
    """n calls spread over `callers` threads; returns (requests/s, round trips in s)."""
    trips: list[float] = []
    lock = threading.Lock()

    def caller(k: int) -> None:
        mine = []
        for i in range(k, n, callers):
            t0 = time.perf_counter()
            assert call(i) == i
            mine.append(time.perf_counter() - t0)
        with lock:
            trips.extend(mine)

    threads = [threading.Thread(target=caller, args=(k,)) for k in range(callers)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return n / (time.perf_counter() - start), trips


class RawRequester:
    """The baseline: what a careful user writes with paho alone; the responder in its own process,
    as Ether's instance is."""

    def __init__(self, address: BrokerAddress) -> None:
        self.responder = RawProcess(address, "responder")
        self.responder.expect("ready")
        self.requester = paho_client(address)
        self.reply_topic = f"raw/reply/{uuid.uuid4().hex[:6]}"
        self.waiting: dict[str, list] = {}
        self.lock = threading.Lock()

        def on_reply(client, userdata, msg):
            body = json.loads(msg.payload)
            with self.lock:
                slot = self.waiting.pop(body["corr"])
            slot.append(body["result"])
            slot[0].set()

        self.requester.on_message = on_reply
        subscribe(self.requester, self.reply_topic)

    def call(self, i: int) -> int:
        corr, slot = uuid.uuid4().hex, [threading.Event()]
        with self.lock:
            self.waiting[corr] = slot
        request = {"i": i, "reply_to": self.reply_topic, "corr": corr}
        self.requester.publish("raw/request", json.dumps(request), qos=1)
        assert slot[0].wait(10), "raw: no reply"
        return slot[1]

    def close(self) -> None:
        close(self.requester)
        self.responder.stop()


def measure(label: str, address: BrokerAddress, n: int) -> list[str]:
    raw = RawRequester(address)
    raw_rate, _ = drive(raw.call, n, CALLERS)
    _, raw_trips = drive(raw.call, n // 4, 1)
    raw.close()

    session = new_session(
        {"session": "bench", "instances": {"responder": {"class_path": "bench_classes.Responder"}}},
        broker_url=address.url,
    )
    session.open()
    try:

        def ether_call(i: int) -> object:
            return session.services.call("Responder.echo", {"i": i}, None, 10)

        ether_rate, _ = drive(ether_call, n, CALLERS)
        _, ether_trips = drive(ether_call, n // 4, 1)
    finally:
        session.close()
    ms = 1000.0
    p50, p99 = (percentile(raw_trips, 0.5), percentile(raw_trips, 0.99))
    e50, e99 = (percentile(ether_trips, 0.5), percentile(ether_trips, 0.99))
    return [
        f"{label:<10} {'raw paho':<9} {raw_rate:>9.0f} {p50 * ms:>8.2f} {p99 * ms:>8.2f}",
        f"{label:<10} {'ether':<9} {ether_rate:>9.0f} {e50 * ms:>8.2f} {e99 * ms:>8.2f}",
        f"{label:<10} {'ratio':<9} {ether_rate / raw_rate:>8.2f}x {e50 / p50:>7.2f}x {e99 / p99:>7.2f}x",
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=2000, help="requests for the throughput run")
    parser.add_argument("--broker", action="append", help="amqtt, mosquitto or a broker URL (repeatable)")
    parser.add_argument(
        "--port", type=int, default=0, help="port of the brokers started here (0: a free one)"
    )
    args = parser.parse_args()
    print(
        f"request/reply, QoS 1: {args.n} requests from {CALLERS} concurrent callers (requests/s);"
        f" round trip from {args.n // 4} requests of one caller"
    )
    print(f"{'broker':<10} {'client':<9} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8}")
    for label, address in brokers(args.broker, args.port):
        for row in measure(label, address, args.n):
            print(row, flush=True)
    print("original Ether (ZeroMQ) published no figures for request/reply")


if __name__ == "__main__":
    main()
