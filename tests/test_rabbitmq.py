"""RabbitMQ's MQTT plugin (Debian's 3.10) under Ether: two clustered nodes on 127.0.0.1.

It carries QoS 1 messages between the nodes, but it cannot carry an Ether session, and `ether run`
says why: '.' is a level separator to it and retained messages reach only exact subscriptions (and
stay on the node they were sent to); no shared subscriptions; a Last Will dies with its node
(docs/operations.md#rabbitmq).
"""

from __future__ import annotations

import subprocess
import sys
import threading
import uuid

import pytest

from ether import exits
from ether.contract.wire import DEFAULT_MAX_PAYLOAD
from ether.transport.bus import Bus, Will
from rabbitmq_nodes import RabbitCluster, installed
from support import PIPELINE, REPO

pytestmark = pytest.mark.skipif(not installed(), reason="rabbitmq-server is not installed")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    nodes = RabbitCluster(tmp_path_factory.mktemp("rabbitmq"))
    try:
        nodes.start()
        yield nodes
    finally:
        nodes.stop()


class Heard:
    """What one of Ether's own connections (transport.bus) receives, in order."""

    def __init__(self, address, *filters: str, will: Will | None = None) -> None:
        self.messages: list[tuple[str, bytes]] = []
        self.changed = threading.Condition()
        self.bus = Bus(address, client_id=f"rabbit-test-{uuid.uuid4().hex[:8]}", will=will)
        self.bus.connect()
        for topic_filter in filters:
            self.bus.subscribe(topic_filter, self._on_message)

    def _on_message(self, topic: str, raw: bytes) -> None:
        with self.changed:
            self.messages.append((topic, raw))
            self.changed.notify_all()

    def heard(self, payload: bytes, timeout: float) -> bool:
        with self.changed:
            return self.changed.wait_for(lambda: any(p == payload for _, p in self.messages), timeout)

    def until(self, payload: bytes, timeout: float = 15.0) -> list[tuple[str, bytes]]:
        """Everything received up to and including ``payload`` (which must come)."""
        assert self.heard(payload, timeout), f"{payload!r} never came"
        with self.changed:
            return self.messages[: [p for _, p in self.messages].index(payload) + 1]


def holding_a_will(address, topic: str) -> subprocess.Popen:
    """A process connected with a Last Will on ``topic``, once it says so (kill it: the will is due)."""
    code = (
        "import sys; from ether.transport.broker import BrokerAddress; from ether.transport.bus import Bus, Will;"
        " Bus(BrokerAddress.parse(sys.argv[1]), 'rabbit-will', Will(sys.argv[2], b'gone', False)).connect();"
        " print('connected', flush=True); sys.stdin.read()"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code, address.url, topic],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None and proc.stdout.readline() == "connected\n"
    return proc


def test_ether_run_refuses_rabbitmq_and_says_why(cluster):
    """The pipeline example would run, but a ClassName.method topic would not: Ether refuses."""
    node = cluster.nodes[0]
    done = subprocess.run(
        [sys.executable, "-m", "ether", "run", str(PIPELINE), "--headless", "--broker", node.address.url],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
    )
    said = done.stderr.splitlines()[-1]
    assert done.returncode == exits.FAILED, done.stderr[-3000:]
    assert said.startswith(f"ether: the MQTT broker at {node.address.url} cannot carry an Ether session")
    assert "treats '.' in a topic as a level separator" in said
    assert "arrived on .../dotted/level" in said
    assert "does not send retained messages to a wildcard subscription" in said


def test_one_node_delivers_qos1_and_wills_but_not_shares(cluster):
    """QoS 1, Ether's largest default payload and a Last Will work on one node; 'a.b' arrives on 'a/b';
    '$share/g/t' is granted and gets nothing (a message to it would come before the ones sent after
    it: one queue per client)."""
    address = cluster.nodes[0].address
    filters = ("rabbit/plain", "$share/g/rabbit/shared", "rabbit/will", "rabbit/dotted/+", "rabbit/big")
    listener = Heard(address, *filters)
    sender = Heard(address)
    try:
        assert sender.bus.publish_and_wait("rabbit/shared", b"shared")
        assert sender.bus.publish_and_wait("rabbit/dotted.x", b"dotted")
        assert sender.bus.publish_and_wait("rabbit/big", b"x" * DEFAULT_MAX_PAYLOAD, timeout=30)
        assert sender.bus.publish_and_wait("rabbit/plain", b"plain")
        got = [(topic, len(raw)) for topic, raw in listener.until(b"plain", 30)]
        assert got == [("rabbit/dotted/x", 6), ("rabbit/big", DEFAULT_MAX_PAYLOAD), ("rabbit/plain", 5)]
        holder = holding_a_will(address, "rabbit/will")
        holder.kill()
        holder.wait(10)
        assert listener.until(b"gone")[-1] == ("rabbit/will", b"gone")
    finally:
        listener.bus.close()
        sender.bus.close()


def test_across_the_cluster_messages_cross_but_retained_ones_and_wills_do_not(cluster):
    """A message sent on node 1 reaches node 0; a retained one stays on node 1; kill -9 node 1: its
    clients' Last Wills are gone with it, and node 0 goes on."""
    a, b = cluster.nodes
    subscriber = Heard(a.address, "cross/#")
    sender = Heard(b.address, will=Will("cross/will", b"dead"))
    late = None
    try:
        assert sender.bus.publish_and_wait("cross/kept", b"retained", retain=True)
        assert sender.bus.publish_and_wait("cross/live", b"live")
        assert subscriber.until(b"live")[-2:] == [("cross/kept", b"retained"), ("cross/live", b"live")]
        late = Heard(a.address, "cross/kept", "cross/marker")  # an exact subscription, on node 0
        assert late.bus.publish_and_wait("cross/marker", b"marker")
        assert late.until(b"marker") == [("cross/marker", b"marker")], "the retained message crossed"
        b.kill()
        for n in range(30):  # node 0 goes on; its clients may be dropped for a moment as node 1 dies
            late.bus.publish("cross/marker", f"after {n}".encode())
            if subscriber.heard(f"after {n}".encode(), 1.0):
                break
        assert b"dead" not in [p for _, p in subscriber.until(f"after {n}".encode())]
    finally:
        for client in (subscriber, sender, late):
            if client is not None:
                client.bus.close()
