"""What tests share beyond fixtures: repository paths and an observer that records broker traffic."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import uuid
from pathlib import Path

from ether.contract.wire import decode
from ether.transport.broker import BrokerAddress
from ether.transport.bus import Bus

REPO = Path(__file__).resolve().parent.parent
PIPELINE = REPO / "examples" / "pipeline" / "config.yaml"
sys.path.insert(0, str(PIPELINE.parent))  # the example's classes, for tests that mix them with their own


def ether_run(config: Path, *args: str, env: dict | None = None) -> subprocess.Popen:
    """``ether run CONFIG ARGS`` as a user starts it, its log and output on ``stdout`` as text lines."""
    return subprocess.Popen(
        [sys.executable, "-m", "ether", "run", str(config), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=REPO,
        env=env,
    )


def logged_in(address: BrokerAddress, role: str, name: str = "tester") -> BrokerAddress:
    """``address`` with a login of ``role`` derived from this user's key of the broker: what a process
    of that role, or anyone who took its login, can publish (transport/permissions)."""
    from ether.transport.access import BrokerKey
    from ether.transport.permissions import Login

    key = BrokerKey.find(address)
    assert key is not None, f"no key of the broker at {address.url}"
    return key.address(address, Login(role, "default", name))


def recorder_barrier(session) -> None:
    """Return once the recorder has committed everything it received so far (asked as the session's
    recorder link, a login that may send recorder commands)."""
    process = session.recording.process
    reply = process.requester.request(session.topics.recorder_control(), {"command": "barrier"}, 10)
    assert reply["ok"]


def wait_until_running(proc: subprocess.Popen) -> BrokerAddress:
    """Read ``ether run``'s output until it says it is running (its session is ready); the broker's
    address it names (with ``--port 0`` the broker binds a free port itself: no port picked here can
    be taken before it binds)."""
    for line in proc.stdout:
        if "Press Ctrl-C" in line:
            return BrokerAddress.parse(line.split(" on ", 1)[1].split()[0])
    raise AssertionError(f"ether run ended (code {proc.wait()}) before it was running")


class Observer:
    """A plain MQTT client on the session's broker that keeps every message it sees."""

    def __init__(self, address: BrokerAddress, topic_filter: str = "#") -> None:
        self.messages: list[tuple[str, object, object]] = []
        self._changed = threading.Condition()
        self.bus = Bus(address, client_id=f"observer-{uuid.uuid4().hex[:8]}")
        self.bus.connect()
        self.bus.subscribe(topic_filter, self._on_message)

    def _on_message(self, topic: str, raw: bytes) -> None:
        try:
            payload, meta = decode(raw)
        except ValueError:
            payload, meta = raw, None
        with self._changed:
            self.messages.append((topic, payload, meta))
            self._changed.notify_all()

    def on(self, topic: str) -> list:
        with self._changed:
            return [(p, m) for t, p, m in self.messages if t == topic]

    def wait_for(self, topic: str, count: int = 1, timeout: float = 15.0) -> list:
        """Wait until ``count`` messages arrived on ``topic``; return them (payload, meta)."""
        with self._changed:
            ok = self._changed.wait_for(lambda: len(self.on(topic)) >= count, timeout)
        got = self.on(topic)
        assert ok, f"expected {count} messages on {topic!r} within {timeout} s, got {len(got)}: {got}"
        return got

    def wait_until(self, holds, what: str, timeout: float = 15.0) -> list:
        """Wait until ``holds(messages)`` is true of the (topic, payload, meta) seen so far; return them."""
        with self._changed:
            assert self._changed.wait_for(lambda: holds(self.messages), timeout), f"no {what} in {timeout} s"
            return list(self.messages)

    def wait_for_any(self, count: int = 1, timeout: float = 15.0) -> list:
        """Wait until ``count`` messages arrived on any topic the filter matches; return them all."""
        with self._changed:
            assert self._changed.wait_for(lambda: len(self.messages) >= count, timeout), self.messages
            return list(self.messages)

    def publish(self, topic: str, payload: bytes | str) -> None:
        self.bus.publish(topic, payload.encode() if isinstance(payload, str) else payload)

    def close(self) -> None:
        self.bus.close()


def recorder_kept_down(run_session, monkeypatch, session_name: str, run_dir) -> tuple:
    """A recorded session whose recorder is killed -9 and restarted only when the returned event is
    set: what is published meanwhile waits in the outboxes, and the recorder gets it as a resend."""
    from ether.data.recorder.process import RecorderProcess

    back = threading.Event()
    restart = RecorderProcess._watch

    def restart_when_told(self, child, code):
        back.wait(120)
        restart(self, child, code)

    monkeypatch.setattr(RecorderProcess, "_watch", restart_when_told)
    session, _ = run_session({"session": session_name, "recorder": {"path": str(run_dir)}})
    process = session.recording.process
    os.kill(process.pid, signal.SIGKILL)
    process.child.process.wait(10)
    return session, back


def mqtt_field(text: str) -> bytes:
    """An MQTT string: its length in two bytes, then its UTF-8."""
    return len(text).to_bytes(2, "big") + text.encode()


def raw_connect(address: BrokerAddress, keep_alive: int, will_topic: str | None = None) -> socket.socket:
    """A socket that says CONNECT (clean session, ``keep_alive`` seconds, a QoS 1 Will on ``will_topic``
    if given) by hand, and has its CONNACK: a client the test can make stop talking at any byte."""
    flags = 0x0E if will_topic else 0x02
    body = mqtt_field("MQTT") + bytes([4, flags]) + keep_alive.to_bytes(2, "big")
    body += mqtt_field(f"raw-{uuid.uuid4().hex[:6]}")
    if will_topic:
        body += mqtt_field(will_topic) + mqtt_field("gone")
    sock = socket.create_connection((address.host, address.port), timeout=30)
    sock.sendall(bytes([0x10, len(body)]) + body)
    assert sock.recv(4)[:1] == b"\x20", "no CONNACK"
    return sock
