"""Benchmark: is the recorder ever the bottleneck? Printed side by side, in one run, on one broker:

  broker delivery   a plain subscriber's receive rate of a stream of N data messages
  recorder ingest   the same stream, until the recorder acknowledged the last one (on disk)
  store write       rows/s of the session store alone (batched commits, no broker)
  publish           messages/s a publisher can stamp (+ keep in its outbox) and get to the broker
                    (until the broker confirmed the last one)

Run: python bench/recorder.py [--n 20000]
"""

from __future__ import annotations

import argparse
import tempfile
import threading
import time
from pathlib import Path

from ether.contract.topics import Topics
from ether.contract.wire import Stamper, decode, encode
from ether.data.outbox import DataPublisher
from ether.data.recorder.process import RecorderProcess
from ether.data.recorder.settings import RecorderSettings
from ether.data.recorder.store import Row, Store
from ether.transport.broker import BrokerAddress, EmbeddedBroker
from ether.transport.bus import Bus
from ether.transport.requests import Requester


class Counter:
    def __init__(self, n: int) -> None:
        self.n, self.count, self.done, self.last = n, 0, threading.Event(), 0.0

    def on_message(self, topic: str, raw: bytes) -> None:
        self.count += 1
        if self.count >= self.n:
            self.last = time.perf_counter()
            self.done.set()


class AckWatch:
    def __init__(self, boot: str, n: int) -> None:
        self.boot, self.n, self.done, self.last = boot, n, threading.Event(), 0.0

    def on_ack(self, topic: str, raw: bytes) -> None:
        acks, _ = decode(raw)
        if acks.get(self.boot, 0) >= self.n:
            self.last = time.perf_counter()
            self.done.set()


def stream(address, topics: Topics, n: int, folder: Path) -> tuple[float, float, float]:
    """One stream of n messages, received by a plain subscriber and by the recorder at once; then the
    publish rate through an outbox while this recorder acknowledges."""
    recorder = RecorderProcess(topics, str(folder / "run"))
    recorder.launch()
    control = Bus(address, "bench-control")
    control.connect()
    recorder.attach(address, control, Requester(control, topics, Stamper("bench")))
    recorder.wait_ready(30)

    stamper = Stamper("bench-source")
    counter, acks = Counter(n), AckWatch(stamper.boot, n)
    sub = Bus(address, "bench-subscriber")
    sub.connect()
    sub.subscribe("bench/data", counter.on_message)
    control.subscribe(topics.recorder_ack(stamper.source), acks.on_ack)
    pub = Bus(address, "bench-publisher")
    pub.connect()
    bodies = [encode({"i": i, "value": i * 0.5}, stamper.stamp()) for i in range(n)]
    start = time.perf_counter()
    for body in bodies:
        pub.publish("bench/data", body)
    assert counter.done.wait(120) and acks.done.wait(120), "the stream did not arrive"
    kept = outbox_rate(address, topics, n, folder, durable=True)
    recorder.stop(30)
    for bus in (pub, sub, control):
        bus.close()
    return n / (counter.last - start), n / (acks.last - start), kept


def store_rate(n: int, folder: Path) -> float:
    store = Store(folder / "store-only")
    rows = [
        Row("bench/data", f'{{"i": {i}}}', f"b.{i}", "bench", "b", i, [], time.time(), time.time())
        for i in range(1, n + 1)
    ]
    start = time.perf_counter()
    for k in range(0, n, 5000):
        with store.transaction():
            store.insert(rows[k : k + 5000])
    rate = n / (time.perf_counter() - start)
    store.close()
    return rate


def outbox_rate(address, topics: Topics, n: int, folder: Path, durable: bool, latest: bool = False) -> float:
    bus = Bus(address, f"bench-outbox-{durable}-{latest}")
    bus.connect()
    settings = RecorderSettings(enabled=durable, run_dir=str(folder / f"outbox-{durable}"))
    if latest:
        settings.streams = {"bench/outbox": "latest"}
    publisher = DataPublisher(bus, topics, Stamper(f"bench-outbox-{durable}"), settings)
    start = time.perf_counter()
    for i in range(n):
        publisher.publish("bench/outbox", {"i": i})
    if not publisher.flush(300):  # until written, sent and the last one confirmed by the broker
        raise RuntimeError("the publisher did not get its messages to the broker within 300 s")
    rate = n / (time.perf_counter() - start)
    publisher.close()
    bus.close()
    return rate


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--n", type=int, default=20000)
    parser.add_argument("--broker", help="an external broker (e.g. mqtt://127.0.0.1:1883 for Mosquitto)")
    args = parser.parse_args()
    broker = None if args.broker else EmbeddedBroker()
    address = BrokerAddress.parse(args.broker) if args.broker else broker.start()
    topics = Topics("default")
    try:
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp)
            delivery, ingest, kept = stream(address, topics, args.n, folder)
            write = store_rate(max(args.n, 100000), folder)
            latest = outbox_rate(address, topics, args.n, folder, durable=False, latest=True)
            plain = outbox_rate(address, topics, args.n, folder, durable=False)
    finally:
        if broker:
            broker.stop()
    print(f"{args.n} messages on {'the embedded amqtt broker' if broker else 'the broker'} at {address.url}")
    print(f"  {'broker delivery (plain subscriber)':<40} {delivery:>10,.0f} msg/s")
    print(
        f"  {'recorder ingest (acknowledged on disk)':<40} {ingest:>10,.0f} msg/s   ({ingest / delivery:.2f}x delivery)"
    )
    print(f"  {'store write (batched, no broker)':<40} {write:>10,.0f} rows/s")
    print(f"  {'publish, latest stream (QoS 0)':<40} {latest:>10,.0f} msg/s")
    print(f"  {'publish, QoS 1, not recorded':<40} {plain:>10,.0f} msg/s")
    print(f"  {'publish with outbox (durable)':<40} {kept:>10,.0f} msg/s")


if __name__ == "__main__":
    main()
