"""What the benchmarks share: the brokers to run on (embedded amqtt, Mosquitto when installed, or a
given URL), the raw paho-mqtt baseline clients (in-process, or one process each), and percentiles."""

from __future__ import annotations

import json
import os
import queue
import shutil
import socket
import subprocess
import sys
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

HERE = Path(__file__).resolve().parent
STARTED: dict[int, int] = {}  # port -> pid of each broker started here, whose CPU the pipeline reports


def cpu_seconds(*pids: int) -> float:
    """CPU time (user + system) the processes have used so far: a measure of work that, unlike
    messages/s, holds up when other work shares the machine."""
    total = 0.0
    for pid in pids:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def percentile(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))] if values else float("nan")


def paho_client(address: BrokerAddress) -> mqtt.Client:
    """A connected raw paho client in this process, with TCP_NODELAY and no in-flight cap."""
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"raw-{uuid.uuid4().hex[:6]}")
    c.max_inflight_messages_set(0)
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


class RawProcess:
    """One raw paho client in its own process (``bench/raw_paho.py``, or another baseline ``script``
    that speaks the same lines: ``bench/ezmsg_peer.py``), driven by lines."""

    def __init__(self, address: BrokerAddress, role: str, *options: str, script: str = "raw_paho.py") -> None:
        self.role = role
        self.process = subprocess.Popen(
            [
                sys.executable,
                str(HERE / script),
                role,
                "--host",
                address.host,
                "--port",
                str(address.port),
                *options,
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        self.lines: queue.Queue[dict] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.process.stdout:
            self.lines.put(json.loads(line))
        self.lines.put({"exited": self.process.wait()})

    def expect(self, key: str, timeout: float = 120.0):
        """The value of the next reported line, which must carry ``key``."""
        try:
            line = self.lines.get(timeout=timeout)
        except queue.Empty:
            raise RuntimeError(f"raw {self.role}: no '{key}' within {timeout:g} s") from None
        if key not in line:
            raise RuntimeError(f"raw {self.role}: expected '{key}', got {line}")
        return line[key]

    def send(self) -> None:
        self.process.stdin.write("\n")
        self.process.stdin.flush()

    def stop(self) -> None:
        """Closing stdin ends a client that finished; one that did not (messages lost) is killed."""
        self.process.stdin.close()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def mosquitto(port: int = 0) -> Iterator[BrokerAddress]:
    """A Mosquitto on 127.0.0.1 (a free port unless given), configured as docs/operations.md recommends."""
    port = port or free_port()
    conf = Path(tempfile.mkdtemp()) / "mosquitto.conf"
    # Mosquitto drops QoS 1 messages beyond 1000 queued per client by default, and leaves Nagle on
    # (~16 ms per hop for small messages): configure it as a lab broker should be.
    conf.write_text(
        f"listener {port} 127.0.0.1\nallow_anonymous true\nmax_queued_messages 0\nset_tcp_nodelay true\n"
    )
    process = subprocess.Popen(["mosquitto", "-c", str(conf)], stderr=subprocess.DEVNULL)
    STARTED[port] = process.pid
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


def brokers(names: list[str] | None = None, port: int = 0) -> Iterator[tuple[str, BrokerAddress]]:
    """(label, address) of each broker to measure on, one running at a time.

    ``names``: 'amqtt' (embedded), 'mosquitto' (started here when installed) or a broker URL
    (measured as it is); by default amqtt and Mosquitto. ``port``: where the started ones listen
    (0: a free port, so a bench never clashes with a running session).
    """
    for name in names or ["amqtt", "mosquitto"]:
        if name == "amqtt":
            embedded = EmbeddedBroker(port=port)
            try:
                address = embedded.start()
                STARTED[address.port] = embedded.pid
                yield "amqtt", address
            finally:
                embedded.stop()
        elif name == "mosquitto":
            if not shutil.which("mosquitto"):
                print("mosquitto not installed: skipped (apt-get install mosquitto)")
                continue
            with mosquitto(port) as address:
                yield "mosquitto", address
        else:
            yield name, BrokerAddress.parse(name)
