"""What the benchmarks share: the brokers to run on (embedded amqtt, Mosquitto when installed),
a raw paho-mqtt client as the baseline, and percentiles."""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from ether.transport.broker import BrokerAddress, EmbeddedBroker


def percentile(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))] if values else float("nan")


def paho_client(address: BrokerAddress) -> mqtt.Client:
    """A connected raw paho client with TCP_NODELAY, as fast as paho goes: the baseline."""
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"raw-{uuid.uuid4().hex[:6]}")
    c.max_inflight_messages_set(1000)
    c.max_queued_messages_set(0)
    c.on_socket_open = lambda client, userdata, sock: sock.setsockopt(
        socket.IPPROTO_TCP, socket.TCP_NODELAY, 1
    )
    connected = threading.Event()
    c.on_connect = lambda *a: connected.set()
    c.connect(address.host, address.port)
    c.loop_start()
    assert connected.wait(10)
    return c


def subscribe(c: mqtt.Client, topic: str) -> None:
    acked = threading.Event()
    c.on_subscribe = lambda *a: acked.set()
    c.subscribe(topic, qos=1)
    assert acked.wait(10)


def close(*clients: mqtt.Client) -> None:
    for c in clients:
        c.disconnect()
        c.loop_stop()


@contextmanager
def mosquitto() -> Iterator[BrokerAddress]:
    """A Mosquitto on a free 127.0.0.1 port, configured as docs/operations.md recommends."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    conf = Path(tempfile.mkdtemp()) / "mosquitto.conf"
    # Mosquitto drops QoS 1 messages beyond 1000 queued per client by default, and leaves Nagle on
    # (~16 ms per hop for small messages): configure it as a lab broker should be.
    conf.write_text(
        f"listener {port} 127.0.0.1\nallow_anonymous true\nmax_queued_messages 0\nset_tcp_nodelay true\n"
    )
    process = subprocess.Popen(["mosquitto", "-c", str(conf)], stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while True:  # wait until it accepts connections
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                threading.Event().wait(0.05)
        yield BrokerAddress(port=port)
    finally:
        process.terminate()
        process.wait()


def brokers() -> Iterator[tuple[str, BrokerAddress]]:
    """(label, address) of each broker to measure on, one running at a time."""
    embedded = EmbeddedBroker()
    try:
        yield "amqtt", embedded.start()
    finally:
        embedded.stop()
    if shutil.which("mosquitto"):
        with mosquitto() as address:
            yield "mosquitto", address
    else:
        print("mosquitto not installed: skipped (apt-get install mosquitto)")
