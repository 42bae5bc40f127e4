"""The pipeline measurements, raw paho and Ether with the same process layout (one process per client).

  pipeline  source -> relay -> sink (two hops, QoS 1): messages/s through it, the CPU its
            processes spent per message (the recorder's too) and, apart, the broker's (one started
            here), and the one-hop latency of paced messages (source's send to the relay's handler)
  fan-out   one source -> k subscribers: messages/s until every subscriber has all of them

Ether runs as ``Source``/``Relay``/``Sink``/``Listener`` instances (``bench_classes.py``), without and
with the recorder. ``bench/run.py`` runs these side by side; this module only measures.
"""

from __future__ import annotations

import json
import os
import tempfile
import threading
import time
import uuid
from pathlib import Path

from brokers import HERE, STARTED, RawProcess, cpu_seconds

from ether.contract.wire import decode
from ether.runtime.session import new_session
from ether.transport.broker import BrokerAddress
from ether.transport.bus import Bus

# messages/s, one-hop latencies in s, CPU s per message of the clients, and of the broker (None: not ours)
Measured = tuple[float, list[float], float, float | None]


class BrokerCpu:
    """The CPU a broker started by this bench (``brokers.STARTED``) spends from here on; None for another."""

    def __init__(self, port: int) -> None:
        self.pid = STARTED.get(port)
        self.start = cpu_seconds(self.pid) if self.pid else 0.0

    def per(self, n: int) -> float | None:
        return (cpu_seconds(self.pid) - self.start) / n if self.pid else None


def raw_pipeline(address: BrokerAddress, n: int, pace: float) -> Measured:
    """Three paho processes; the CPU is theirs, the broker's apart."""
    sink = RawProcess(address, "sink", "-n", str(n))
    relay = RawProcess(address, "relay", "-n", str(n))
    source = RawProcess(address, "source", "-n", str(n), "--pace", str(pace))
    clients = (sink, relay, source)
    pids = [c.process.pid for c in clients]
    try:
        for c in clients:
            c.expect("ready")
        cpu, broker = cpu_seconds(*pids), BrokerCpu(address.port)
        start = time.time()
        source.send()
        last = sink.expect("last", 300)
        cpu, broker_cpu = cpu_seconds(*pids) - cpu, broker.per(n)
        latencies = relay.expect("latencies")
    finally:
        for c in clients:
            c.stop()
    return n / (last - start), latencies, cpu / n, broker_cpu


def raw_fanout(address: BrokerAddress, n: int, k: int) -> float:
    """One paho source process and k paho subscriber processes; returns messages/s."""
    sinks = [RawProcess(address, "sink", "-n", str(n), "--topic", "raw/data") for _ in range(k)]
    source = RawProcess(address, "source", "-n", str(n))
    try:
        for c in (*sinks, source):
            c.expect("ready")
        start = time.time()
        source.send()
        last = max(s.expect("last", 300) for s in sinks)
    finally:
        for c in (*sinks, source):
            c.stop()
    return n / (last - start)


UNSIGNED = "-unsigned"  # a client name's suffix: its session's processes sign nothing (bench/unsigned)


def ether_session(url: str, instances: dict, recorded: bool, folder: Path, signed: bool = True):
    """An open session on ``url``; unsigned: its child processes start with ``bench/unsigned`` first
    on their path, which switches signing off (to measure what it costs)."""
    config = {"recorder": {"enabled": recorded, "path": str(folder / "data")}, "instances": instances}
    path = os.environ.get("PYTHONPATH", "")
    if not signed:
        os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(HERE / "unsigned"), path) if p)
    try:
        session = new_session(config, broker_url=url)
        session.open(timeout=120)
    finally:
        os.environ["PYTHONPATH"] = path
    return session


def ether_go(session, n: int, pace: float, finishers: int, topic: str = "bench/go", **fields) -> float:
    """Publish ``topic`` (bench/go) and return the time the last of `finishers` reported bench/done."""
    done, last, lock = threading.Event(), [], threading.Lock()

    def on_done(topic, raw):
        payload, _ = decode(raw)
        with lock:
            last.append(payload["t"])
            if len(last) == finishers:
                done.set()

    watcher = Bus(session.address, client_id=f"bench-{uuid.uuid4().hex[:6]}")
    watcher.connect()
    watcher.subscribe("bench/done", on_done)
    start = time.time()
    session.publish(topic, {"n": n, "pace": pace, **fields})
    try:
        if not done.wait(300):
            raise RuntimeError(f"ether: only {len(last)} of {finishers} subscribers got all {n} messages")
    finally:
        watcher.close()
    return max(last) - start


def ether_pipeline(url: str, n: int, pace: float, recorded: bool, signed: bool = True) -> Measured:
    """Source -> Relay -> Sink instances; the CPU is theirs and the recorder's, the broker's apart."""
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        stats = folder / "relay.json"
        instances = {
            "source": {"class_path": "bench_classes.Source"},
            "relay": {"class_path": "bench_classes.Relay", "kwargs": {"stats": str(stats)}},
            "sink": {"class_path": "bench_classes.Sink", "kwargs": {"n": n}},
        }
        session = ether_session(url, instances, recorded, folder, signed)
        pids = [session.supervisor.instances[name].pid for name in instances]
        if recorded:
            pids.append(session.recording.process.pid)
        try:
            cpu, broker = cpu_seconds(*pids), BrokerCpu(session.address.port)
            elapsed = ether_go(session, n, pace, 1)
            cpu, broker_cpu = cpu_seconds(*pids) - cpu, broker.per(n)
        finally:
            session.close()
        return n / elapsed, json.loads(stats.read_text())["latencies"], cpu / n, broker_cpu


def ether_fanout(url: str, n: int, k: int, recorded: bool, signed: bool = True) -> float:
    """One Source and k Listener instances; returns messages/s."""
    instances = {"source": {"class_path": "bench_classes.Source"}} | {
        f"listener{j}": {"class_path": "bench_classes.Listener", "kwargs": {"n": n}} for j in range(k)
    }
    with tempfile.TemporaryDirectory() as tmp:
        session = ether_session(url, instances, recorded, Path(tmp), signed)
        try:
            return n / ether_go(session, n, 0.0, k)
        finally:
            session.close()


def chain(client: str, address: BrokerAddress, n: int, pace: float) -> Measured:
    """The pipeline for one client: 'raw', 'ether' or 'ether+recorder' (either with '-unsigned')."""
    if client == "raw":
        return raw_pipeline(address, n, pace)
    name = client.removesuffix(UNSIGNED)
    return ether_pipeline(address.url, n, pace, name == "ether+recorder", name == client)


def fanout(client: str, address: BrokerAddress, n: int, k: int) -> float:
    """The fan-out for one client: 'raw', 'ether' or 'ether+recorder' (either with '-unsigned')."""
    if client == "raw":
        return raw_fanout(address, n, k)
    name = client.removesuffix(UNSIGNED)
    return ether_fanout(address.url, n, k, name == "ether+recorder", name == client)
