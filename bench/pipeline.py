"""Benchmark: Ether's generator -> processor -> collector pipeline against raw paho-mqtt, side by side.

For each broker (the embedded amqtt one, and Mosquitto when installed) it measures, in one run:
  raw paho   publisher -> relay client -> subscriber (the same two hops, no framework)
  ether      Source -> Relay -> Sink instances (validation, metadata, one process each)
and prints messages/s through the pipeline, one-hop latency p50/p99, and the ratio ether / raw.
It also times ``tap()`` of the 4-instance example. Usage: ``python bench/pipeline.py [-n 5000]``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from brokers import brokers, close, paho_client, percentile, subscribe  # noqa: E402

from ether.contract.wire import decode  # noqa: E402
from ether.runtime.session import new_session  # noqa: E402
from ether.transport.broker import BrokerAddress  # noqa: E402
from ether.transport.bus import Bus  # noqa: E402

ORIGINAL_README = "original Ether (ZeroMQ) published no figures for this pipeline"


def raw_run(address: BrokerAddress, n: int, pace: float) -> tuple[float, list[float]]:
    """paho publisher -> paho relay -> paho subscriber; returns (messages/s, one-hop latencies)."""
    pub, relay, sink = paho_client(address), paho_client(address), paho_client(address)
    hop: list[float] = []
    done = threading.Event()
    received = [0, 0.0]

    def on_relay(client, userdata, msg):
        body = json.loads(msg.payload)
        hop.append(time.time() - body["t"])
        relay.publish("raw/result", json.dumps(body), qos=1)

    def on_sink(client, userdata, msg):
        received[0] += 1
        received[1] = time.time()
        if received[0] == n:
            done.set()

    relay.on_message, sink.on_message = on_relay, on_sink
    subscribe(relay, "raw/data")
    subscribe(sink, "raw/result")
    start = time.time()
    ticker = threading.Event()
    for i in range(n):
        pub.publish("raw/data", json.dumps({"i": i, "t": time.time()}), qos=1)
        if pace:
            ticker.wait(pace)
    assert done.wait(120), f"raw: only {received[0]} of {n} arrived"
    close(pub, relay, sink)
    return n / (received[1] - start), hop


# -- ether -----------------------------------------------------------------------------------


def ether_run(broker_url: str, n: int, pace: float, recorded: bool) -> tuple[float, list[float]]:
    stats = Path(tempfile.mkdtemp()) / "relay.json"
    config = {
        "recorder": {"enabled": recorded},
        "instances": {
            "source": {"class_path": "bench_classes.Source"},
            "relay": {"class_path": "bench_classes.Relay", "kwargs": {"stats": str(stats)}},
            "sink": {"class_path": "bench_classes.Sink", "kwargs": {"n": n}},
        },
    }
    session = new_session(config, broker_url=broker_url)
    session.open()
    done = threading.Event()
    last = [0.0]

    def on_done(topic, raw):
        payload, _ = decode(raw)
        if payload["count"] == n:
            last[0] = payload["t"]
            done.set()

    watcher = Bus(session.address, client_id=f"bench-{uuid.uuid4().hex[:6]}")
    watcher.connect()
    watcher.subscribe("bench/done", on_done)
    start = time.time()
    session.publish("bench/go", {"n": n, "pace": pace})
    assert done.wait(300), "ether: the pipeline did not finish"
    watcher.close()
    session.close()
    return n / (last[0] - start), json.loads(stats.read_text())["latencies"]


def tap_time(runs: int = 3) -> list[float]:
    example = HERE.parent / "examples" / "pipeline" / "config.yaml"
    times = []
    for _ in range(runs):
        session = new_session(example)
        t0 = time.perf_counter()
        session.open()
        times.append(time.perf_counter() - t0)
        session.close()
    return times


# -- report ------------------------------------------------------------------------------------


def measure(label: str, url: str, address: BrokerAddress, n: int, pings: int) -> list[str]:
    """Rows for raw paho, then Ether without and with the recorder (which doubles the broker's work:
    every message also goes to the recorder, and acknowledgements come back)."""
    ms = 1000.0
    raw_rate, _ = raw_run(address, n, 0)
    _, raw_hop = raw_run(address, pings, 0.002)
    raw50, raw99 = percentile(raw_hop, 0.5), percentile(raw_hop, 0.99)
    rows = [f"{label:<10} {'raw paho':<16} {raw_rate:>9.0f} {raw50 * ms:>8.2f} {raw99 * ms:>8.2f}"]
    for client, recorded in (("ether", False), ("ether+recorder", True)):
        rate, _ = ether_run(url, n, 0, recorded)
        _, hop = ether_run(url, pings, 0.002, recorded)
        p50, p99 = percentile(hop, 0.5), percentile(hop, 0.99)
        rows += [
            f"{label:<10} {client:<16} {rate:>9.0f} {p50 * ms:>8.2f} {p99 * ms:>8.2f}",
            f"{label:<10} {'  ratio to raw':<16} {rate / raw_rate:>8.2f}x {p50 / raw50:>7.2f}x {p99 / raw99:>7.2f}x",
        ]
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=5000, help="messages for the throughput run")
    parser.add_argument("--pings", type=int, default=500, help="paced messages for the latency run")
    args = parser.parse_args()

    print(
        f"pipeline source -> relay -> sink, QoS 1, {args.n} messages; latency from {args.pings} paced messages"
    )
    print(f"{'broker':<10} {'client':<16} {'msgs/s':>9} {'p50 ms':>8} {'p99 ms':>8}")
    for label, address in brokers():
        for row in measure(label, address.url, address, args.n, args.pings):
            print(row, flush=True)

    times = tap_time()
    print(
        f"tap() of the 4-instance example: median {statistics.median(times):.2f} s (runs: "
        + ", ".join(f"{t:.2f}" for t in times)
        + "; target <= 1 s)"
    )
    print(ORIGINAL_README)


if __name__ == "__main__":
    main()
