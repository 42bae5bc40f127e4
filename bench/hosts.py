"""Benchmark: one hop between two "hosts" -- a publisher on host B's broker, a subscriber on host A's.

Engines: one shared broker (Mosquitto, the embedded amqtt, one RabbitMQ node), two Mosquittos joined
by a bridge, with Mosquitto's defaults and with the low-latency settings of docs/operations.md, and
two clustered RabbitMQ nodes (B's publisher on node 1, A's subscriber on node 0). Both clients are
Ether's own (``transport.bus``), QoS 1. Latency: one message at a time, publish to arrival (p50/p99);
throughput: N messages sent at once, first send to last arrival. Each engine is measured in turn in
one run, ``--runs`` times, medians printed. Usage: ``python bench/hosts.py [-n 500] [--runs 3]``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

from brokers import free_port, percentile

from ether.transport.broker import BrokerAddress, EmbeddedBroker
from ether.transport.bus import Bus

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))  # the tests' RabbitMQ nodes
import rabbitmq_nodes  # noqa: E402

RATE = 200  # Hz of the paced stream
# a bridge from B to A: ENGINE (B's publisher, A's subscriber: the bridge pushes) or ENGINE:pull (A's
# publisher, B's subscriber: the bridge's subscription on A pulls)
DEFAULT_ENGINES = [
    "mosquitto",
    "amqtt",
    "bridge-default",
    "bridge-default:pull",
    "bridge-nodelay",
    "bridge-nodelay:pull",
    "rabbitmq",
    "rabbitmq-cluster",
]
LOW_LATENCY_BRIDGE = "set_tcp_nodelay true"  # both brokers: every socket, the bridge's own too (2.0)


@contextmanager
def mosquitto(*lines: str) -> Iterator[BrokerAddress]:
    """A Mosquitto on 127.0.0.1 with these extra configuration lines; yields once it runs."""
    port = free_port()
    conf = Path(tempfile.mkdtemp()) / "mosquitto.conf"
    conf.write_text(
        "\n".join([f"listener {port} 127.0.0.1", "allow_anonymous true", "max_queued_messages 0", *lines, ""])
    )
    process = subprocess.Popen(["mosquitto", "-c", str(conf)], stderr=subprocess.PIPE, text=True)
    assert process.stderr is not None
    for line in process.stderr:
        if line.rstrip().endswith(" running"):
            break
    threading.Thread(target=process.stderr.read, daemon=True).start()
    try:
        yield BrokerAddress(port=port)
    finally:
        process.terminate()
        process.wait()


def bridge_lines(remote: BrokerAddress) -> list[str]:
    """A bridge from this Mosquitto to ``remote``, carrying every topic both ways at QoS 1."""
    return [
        f"connection to-{remote.port}",
        f"address {remote.host}:{remote.port}",
        "topic bench/# both 1",
        "cleansession false",
        "try_private true",
        "bridge_protocol_version mqttv311",
    ]


@contextmanager
def engine(name: str) -> Iterator[tuple[BrokerAddress, BrokerAddress]]:
    """(host A's broker, host B's broker) of one engine."""
    with ExitStack() as stack:
        if name == "amqtt":
            broker = EmbeddedBroker()
            address = broker.start()
            stack.callback(broker.stop)
            yield address, address
        elif name.startswith("rabbitmq"):
            folder = Path(stack.enter_context(tempfile.TemporaryDirectory()))  # removed after the nodes
            cluster = rabbitmq_nodes.RabbitCluster(folder, 2 if name == "rabbitmq-cluster" else 1)
            stack.callback(cluster.stop)
            cluster.start()
            yield cluster.nodes[0].address, cluster.nodes[-1].address
        elif name == "mosquitto":
            address = stack.enter_context(mosquitto("set_tcp_nodelay true"))
            yield address, address
        else:  # bridge-default | bridge-nodelay
            extra = [LOW_LATENCY_BRIDGE] if name == "bridge-nodelay" else []
            a = stack.enter_context(mosquitto(*extra))
            b = stack.enter_context(mosquitto(*extra, *bridge_lines(a)))
            yield a, b


class Hop:
    """A subscriber on A and a publisher on B; arrival times by sequence number."""

    def __init__(self, a: BrokerAddress, b: BrokerAddress) -> None:
        self.arrived: dict[int, float] = {}
        self.changed = threading.Condition()
        self.sub = Bus(a, client_id=f"bench-a-{uuid.uuid4().hex[:6]}")
        self.sub.connect()
        self.sub.subscribe("bench/hop", self._on_message)
        self.pub = Bus(b, client_id=f"bench-b-{uuid.uuid4().hex[:6]}")
        self.pub.connect()
        self._bridged(a is b)

    def _bridged(self, same: bool) -> None:
        """Wait until a message crosses (the bridge is up and subscribed)."""
        probe = 10**9
        while True:
            self.pub.publish("bench/hop", struct.pack("!Q", probe) + b"x" * 56)
            if self.wait(probe, 0.5 if not same else 10):
                return
            probe += 1

    def _on_message(self, topic: str, payload: bytes) -> None:
        now = time.perf_counter()
        with self.changed:
            self.arrived[struct.unpack("!Q", payload[:8])[0]] = now
            self.changed.notify_all()

    def wait(self, seq: int, timeout: float = 30.0) -> bool:
        with self.changed:
            return self.changed.wait_for(lambda: seq in self.arrived, timeout)

    def send(self, seq: int) -> float:
        t0 = time.perf_counter()
        self.pub.publish("bench/hop", struct.pack("!Q", seq) + b"x" * 56)  # a 64-byte reading
        return t0

    def close(self) -> None:
        self.sub.close()
        self.pub.close()


def measure(name: str, n: int) -> dict[str, float]:
    engine_name, _, direction = name.partition(":")
    with engine(engine_name) as (a, b):
        hop = Hop(b, a) if direction == "pull" else Hop(a, b)
        try:
            trips = []
            for seq in range(n):
                t0 = hop.send(seq)
                assert hop.wait(seq), f"{name}: message {seq} never arrived"
                trips.append(hop.arrived[seq] - t0)
            paced, period, start = [], 1 / RATE, time.perf_counter()
            for i, seq in enumerate(range(10**5, 10**5 + n)):  # a 200 Hz stream, as a lab source sends
                delay = start + i * period - time.perf_counter()
                if delay > 0:
                    time.sleep(delay)  # pacing the stream, not synchronisation
                paced.append((seq, hop.send(seq)))
            assert hop.wait(10**5 + n - 1), f"{name}: the stream did not arrive"
            stream = [hop.arrived[seq] - t for seq, t in paced]
            base = 10**6
            t0 = time.perf_counter()
            for seq in range(base, base + n * 10):
                hop.send(seq)
            assert hop.wait(base + n * 10 - 1, 120), f"{name}: the burst did not arrive"
            assert all(s in hop.arrived for s in range(base, base + n * 10)), f"{name}: lost messages"
            rate = n * 10 / (hop.arrived[base + n * 10 - 1] - t0)
        finally:
            hop.close()
    return {
        "p50": percentile(trips, 0.5) * 1e3,
        "p99": percentile(trips, 0.99) * 1e3,
        "s50": percentile(stream, 0.5) * 1e3,
        "s99": percentile(stream, 0.99) * 1e3,
        "rate": rate,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("-n", type=int, default=500, help="latency samples; the burst is 10x this")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("engines", nargs="*", default=DEFAULT_ENGINES)
    args = parser.parse_args()
    engines = [
        e
        for e in args.engines
        if e == "amqtt"
        or (rabbitmq_nodes.installed() if e.startswith("rabbitmq") else shutil.which("mosquitto"))
    ]
    results: dict[str, list[dict[str, float]]] = {e: [] for e in engines}
    for _ in range(args.runs):
        for name in engines:  # side by side in each run
            results[name].append(measure(name, args.n))
    print(f"load average {os.getloadavg()[0]:.1f} (noisy: other work on this machine)")
    print(f"one hop B -> A, 64-byte QoS 1 messages, median of {args.runs} runs")
    print("one at a time (p50/p99), in a 200 Hz stream (p50/p99), a burst (msg/s)")
    print(f"{'engine':<20} {'p50 ms':>8} {'p99 ms':>8} {'200Hz p50':>10} {'200Hz p99':>10} {'msg/s':>8}")
    for name, runs in results.items():
        p50, p99, s50, s99, rate = (
            statistics.median(r[k] for r in runs) for k in ("p50", "p99", "s50", "s99", "rate")
        )
        print(f"{name:<20} {p50:8.2f} {p99:8.2f} {s50:10.2f} {s99:10.2f} {rate:8.0f}")


if __name__ == "__main__":
    main()
