"""The embedded broker: loopback only, fast stop, and amqtt's retained-message leak fixed."""

import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import uuid

import pytest

from ether.contract.topics import TopicError
from ether.transport.broker import BrokerAddress, BrokerError, EmbeddedBroker
from ether.transport.bus import Bus
from support import mqtt_field, raw_connect


@pytest.fixture
def broker():
    b = EmbeddedBroker()
    address = b.start()
    yield address
    b.stop()


def client(address):
    bus = Bus(address, client_id=f"t-{uuid.uuid4().hex[:8]}")
    bus.connect()
    return bus


def test_binds_loopback_only(broker):
    assert broker.host == "127.0.0.1"
    with socket.create_connection(("127.0.0.1", broker.port), timeout=5):
        pass


def test_retained_messages_only_reach_matching_subscribers(broker):
    a = client(broker)
    a.subscribe("status/a", lambda t, p: None)  # some subscription exists in the broker
    a.publish_and_wait("status/a", b'{"s": 1}', retain=True)
    a.publish_and_wait("other/b", b'{"s": 2}', retain=True)

    got: list[str] = []
    marker = threading.Event()
    b = client(broker)
    b.subscribe("mine", lambda t, p: (got.append(t), marker.set()))
    b.publish("mine", b"{}")
    assert marker.wait(10)  # our own message arrived, so anything leaked would have arrived before it
    assert got == ["mine"], got
    retained = threading.Event()
    b.subscribe("status/a", lambda t, p: retained.set())
    assert retained.wait(10)  # a real subscription still gets the retained message
    a.close(), b.close()


def test_a_new_subscription_gets_a_topic_already_routed(broker):
    """The broker keeps the filters each topic matches (``broker_routing``): a subscription that
    comes later must be among them."""
    first, second = threading.Event(), threading.Event()
    a = client(broker)
    a.subscribe("late/#", lambda t, p: (second if first.is_set() else first).set())
    a.publish("late/x", b"{}")
    assert first.wait(10)  # late/x is routed to late/#
    got = threading.Event()
    b = client(broker)
    b.subscribe("late/x", lambda t, p: got.set())
    a.publish("late/x", b"{}")
    assert got.wait(10) and second.wait(10)  # the new subscriber and the old one
    a.close(), b.close()


def test_subscriptions_made_together_are_all_in_place_on_leaving(broker):
    """``Bus.subscribing``: the subscriptions go out at once and are acknowledged together; when the
    block is left (a nested one leaves it to the outer), every one of them receives."""
    got = {f: threading.Event() for f in ("s/a", "s/b/+", "s/c/#")}
    a = client(broker)
    with a.subscribing():
        with a.subscribing():
            a.subscribe("s/a", lambda t, p: got["s/a"].set())
        a.subscribe("s/b/+", lambda t, p: got["s/b/+"].set())
        a.subscribe("s/c/#", lambda t, p: got["s/c/#"].set())
    b = client(broker)
    for topic in ("s/a", "s/b/x", "s/c/y/z"):
        b.publish(topic, b"{}")
    assert all(e.wait(10) for e in got.values()), {f: e.is_set() for f, e in got.items()}
    a.close(), b.close()


def test_stop_is_fast_even_with_connected_clients():
    b = EmbeddedBroker()
    address = b.start()
    c = client(address)
    c.publish_and_wait("x", json.dumps({"a": 1}).encode())
    b.child.process.terminate()
    assert b.child.process.wait(timeout=3) == 0  # amqtt's own shutdown waits 5 s
    c.close()


def test_publishing_to_wildcards_or_dollar_topics_is_refused(broker):
    c = client(broker)
    for topic in ("a/+", "a/#", "$SYS/x"):
        with pytest.raises(TopicError, match=re.escape(repr(topic))):
            c.publish(topic, b"{}")
    c.close()


def test_unreachable_broker_is_a_clear_error():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(BrokerError, match=f"cannot reach the MQTT broker at mqtt://127.0.0.1:{port}"):
        Bus(BrokerAddress(port=port), client_id="nobody").connect(timeout=5)


def test_broker_urls():
    a = BrokerAddress.parse("mqtt://user:p%40ss@lab.local:1884")
    assert (a.host, a.port, a.username, a.password) == ("lab.local", 1884, "user", "p@ss")
    assert BrokerAddress.parse("10.0.0.2").port == 1883
    with pytest.raises(BrokerError, match="the scheme must be mqtt://"):
        BrokerAddress.parse("http://x")


def test_ether_broker_says_where_it_listens_and_accepts_clients():
    import subprocess
    import sys

    proc = subprocess.Popen(
        [sys.executable, "-m", "ether", "broker", "--port", "0"], stdout=subprocess.PIPE, text=True
    )
    try:
        line = proc.stdout.readline()
        assert line.startswith("Ether broker on mqtt://127.0.0.1:") and "no login needed" in line, line
        bus = Bus(BrokerAddress.parse(line.split()[3]), client_id="visitor")
        bus.connect()
        bus.close()
    finally:
        proc.terminate()
        assert proc.wait(10) == 0


SILENT_CLIENT = """
import sys
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="silent")
c.will_set("status/silent", b"gone", qos=1)
c.on_connect = lambda *a: print("connected", flush=True)
c.connect("127.0.0.1", int(sys.argv[1]), keepalive=2)
c.loop_forever()
"""


def test_a_client_that_goes_silent_is_dropped_and_its_will_published(broker):
    """A SIGSTOPped client keeps its socket open: only keep-alive can tell it is gone (amqtt ignored it)."""
    watcher = client(broker)
    gone = threading.Event()
    watcher.subscribe("status/silent", lambda t, p: gone.set())
    silent = subprocess.Popen(
        [sys.executable, "-c", SILENT_CLIENT, str(broker.port)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert silent.stdout.readline().strip() == "connected"
        os.kill(silent.pid, signal.SIGSTOP)
        assert gone.wait(30), "the broker never dropped a client that stopped answering"
    finally:
        silent.kill()
        silent.wait()
        watcher.close()


def test_a_client_that_stops_in_the_middle_of_a_packet_is_dropped_and_its_will_published(broker):
    """The fixed header of a PUBLISH and half its body, then nothing (a board whose Wi-Fi dropped
    mid-send): amqtt waited for the rest forever; now the keep-alive ends it."""
    watcher = client(broker)
    gone = threading.Event()
    watcher.subscribe("status/raw", lambda t, p: gone.set())
    sock = raw_connect(broker, 1, "status/raw")
    try:
        sock.sendall(bytes([0x30, 40]) + mqtt_field("data/x")[:5])
        assert gone.wait(30), "the broker never dropped a client that stopped mid-packet"
        assert sock.recv(1) == b"", "the broker kept the connection open"
    finally:
        sock.close()
        watcher.close()


def test_a_connection_that_never_says_connect_is_closed(broker):
    with socket.create_connection((broker.host, broker.port), timeout=60) as sock:
        assert sock.recv(1) == b""  # closed by the broker (CONNECT_TIMEOUT), not by our timeout
