"""The permission matrix: role x topic kind x publish/subscribe, on the embedded broker and on a
managed Mosquitto, with real clients. The table below is the contract of docs/operations.md."""

from __future__ import annotations

import shutil
import threading
import uuid

import pytest

from ether.transport.access import Access
from ether.transport.broker import BrokerAddress, EmbeddedBroker
from ether.transport.bus import Bus
from ether.transport.mosquitto import ManagedMosquitto
from ether.transport.permissions import Login
from ether.transport.signing import new_secret, password

S = "ether/default"
TOPICS = {  # kind -> a topic of that kind (own: the login's own name, other: someone else's)
    "data": "data",
    "data two levels": "lab/temperature",
    "board reading, own": "thermo1.temperature",
    "board reading, other": "thermo2.temperature",
    "reply": f"{S}/reply/someone/x",
    "errors": f"{S}/errors",
    "session control": f"{S}/control",
    "instance status, own": f"{S}/instance/echo/status",
    "instance status, other": f"{S}/instance/other/status",
    "instance control": f"{S}/instance/echo/control",
    "instance call": f"{S}/instance/echo/call/Echo.get",
    "supervisor status": f"{S}/supervisor/sup1/status",
    "recorder status": f"{S}/recorder/status",
    "recorder control": f"{S}/recorder/control",
    "recorder closing": f"{S}/recorder/closing",
    "recorder ack": f"{S}/recorder/ack/echo",
    "recorder resend": f"{S}/recorder/resend/data",
    "device schema, own": f"{S}/device/thermo1/schema",
    "device schema, other": f"{S}/device/thermo2/schema",
    "device state, own": f"{S}/device/thermo1/state",
    "device state, other": f"{S}/device/thermo2/state",
    "device call": f"{S}/device/thermo1/call",
    "log, the instance's own": f"{S}/log/echo",
    "log, the recorder's own": f"{S}/log/recorder",
    "log, other": f"{S}/log/other",
}
LOGS = {"log, the instance's own", "log, the recorder's own", "log, other"}
DATA = {"data", "data two levels", "board reading, own", "board reading, other"}
REQUESTS = {"instance call", "device call"}
PUBLISHES = {  # role -> the kinds it may publish
    "supervisor": DATA
    | REQUESTS
    | {"reply", "errors", "session control", "instance status, own"}
    | {"instance status, other", "instance control", "supervisor status", "recorder status"}
    | {"recorder control", "recorder closing", "recorder resend"}
    | LOGS,
    "operator": DATA
    | REQUESTS
    | {"reply", "errors", "session control", "instance control", "recorder control"},
    "recorder": {"reply", "errors", "recorder status", "recorder ack", "log, the recorder's own"},
    "instance": DATA
    | REQUESTS
    | {"reply", "errors", "instance status, own", "recorder closing", "recorder resend"}
    | {"log, the instance's own"},
    "device": {"board reading, own", "reply", "errors", "device schema, own", "device state, own"},
    "anonymous": DATA
    | REQUESTS
    | {"reply", "errors", "device schema, own", "device schema, other", "device state, own"}
    | {"device state, other"},
}
READS = {  # role -> the kinds it receives when subscribed to each topic and to '#'
    **{role: set(TOPICS) for role in ("supervisor", "operator", "recorder", "instance", "anonymous")},
    "device": DATA | {"device call", "device schema, own", "device state, own"},
}
# a Mosquitto ACL cannot say "topics starting with 'thermo1.'": a board may publish any data topic there
# (its readings' src is then only as good as the recorder's check: docs/operations.md)
MOSQUITTO_ALSO = {("device", "board reading, other"), ("device", "data"), ("device", "data two levels")}

LOGINS = {
    "supervisor": Login("supervisor", "default", "sup1"),
    "operator": Login("operator", "default", "cli"),
    "recorder": Login("recorder", "default", "recorder"),
    "instance": Login("instance", "default", "echo"),
    "device": Login("device", name="thermo1"),
}


class Client:
    """One real MQTT client that keeps what it receives."""

    def __init__(self, address: BrokerAddress, subscribe: bool = True) -> None:
        self.got: dict[str, list[bytes]] = {}
        self.changed = threading.Condition()
        self.bus = Bus(address, client_id=f"matrix-{uuid.uuid4().hex[:8]}")
        self.bus.connect()
        if subscribe:
            for topic_filter in ("#", *TOPICS.values()):
                self.bus.subscribe(topic_filter, self.keep)

    def keep(self, topic: str, raw: bytes) -> None:
        with self.changed:
            self.got.setdefault(topic, []).append(raw)
            self.changed.notify_all()

    def wait_for(self, topic: str, payload: bytes, timeout: float = 10.0) -> bool:
        with self.changed:
            return self.changed.wait_for(lambda: payload in self.got.get(topic, []), timeout)


def logged_in(address: BrokerAddress, secret: bytes, login: Login, board_password: str) -> BrokerAddress:
    if login.role == "device" and board_password:
        return BrokerAddress(address.host, address.port, login.username, board_password)
    return BrokerAddress(address.host, address.port, login.username, password(secret, login.username))


def check_matrix(addresses: dict[str, BrokerAddress], also: set = frozenset()) -> None:
    """Every role publishes one message to every topic kind; a supervisor sees what got through.
    Then a supervisor publishes to every kind; each role sees what it may read."""
    watcher = Client(addresses["supervisor"])
    clients = {role: Client(address) for role, address in addresses.items()}
    allowed_marker = {role: "data" if role == "anonymous" else f"{S}/errors" for role in addresses}
    allowed_marker["device"] = "thermo1.done"
    for role, client in clients.items():
        for kind, topic in TOPICS.items():
            client.bus.publish(topic, f"{role}:{kind}".encode())
        done = f"{role}:done".encode()
        client.bus.publish(allowed_marker[role], done)
        assert watcher.wait_for(allowed_marker[role], done), f"{role}'s own marker never arrived"
    for role in clients:
        expected = PUBLISHES[role] | {k for r, k in also if r == role}
        passed = {k for k, t in TOPICS.items() if f"{role}:{k}".encode() in watcher.got.get(t, [])}
        assert passed == expected, f"{role} publishes: {sorted(passed ^ expected)} differ"
    senders = {}  # kind -> the first role here that may publish it
    for role in clients:
        for kind in PUBLISHES[role]:
            senders.setdefault(kind, role)
    markers = {role: "data" if "data" in PUBLISHES[role] else "reply" for role in clients}
    for role, client in clients.items():
        for kind, sender in senders.items():
            if sender == role:
                client.bus.publish(TOPICS[kind], f"probe:{kind}".encode())
        client.bus.publish(TOPICS[markers[role]], f"end:{role}".encode())
    for role, client in clients.items():
        for sender, kind in markers.items():
            if kind in READS[role]:
                assert client.wait_for(TOPICS[kind], f"end:{sender}".encode()), f"{role}: no end of {sender}"
        seen = {k for k, t in TOPICS.items() if f"probe:{k}".encode() in client.got.get(t, [])}
        expected = READS[role] & set(senders)
        assert seen == expected, f"{role} reads: {sorted(seen ^ expected)} differ"
    for client in (watcher, *clients.values()):
        client.bus.close()


def test_permission_matrix_on_the_embedded_broker(tmp_path):
    secret = new_secret()
    board = Access(tmp_path)
    board_password = board.add("thermo1")
    exposed = EmbeddedBroker(password_file=str(board.password_file), secret=secret)  # logins only
    loopback = EmbeddedBroker(secret=secret)  # anonymous let in
    a, b = exposed.start(), loopback.start()
    try:
        addresses = {role: logged_in(a, secret, login, board_password) for role, login in LOGINS.items()}
        addresses["anonymous"] = BrokerAddress(b.host, b.port)
        addresses_b = dict(addresses, supervisor=logged_in(b, secret, LOGINS["supervisor"], ""))
        check_matrix({k: v for k, v in addresses.items() if k != "anonymous"})
        check_matrix({"supervisor": addresses_b["supervisor"], "anonymous": addresses["anonymous"]})
    finally:
        exposed.stop()
        loopback.stop()


@pytest.mark.skipif(
    not shutil.which("mosquitto") and not shutil.which("/usr/sbin/mosquitto"), reason="no mosquitto"
)
def test_permission_matrix_on_managed_mosquitto():
    secret = new_secret()
    mosquitto = ManagedMosquitto(0, secret, list(LOGINS.values()))
    mosquitto.launch()
    address = mosquitto.wait_ready()
    try:
        addresses = {role: logged_in(address, secret, login, "") for role, login in LOGINS.items()}
        addresses["anonymous"] = address
        check_matrix(addresses, MOSQUITTO_ALSO)
    finally:
        mosquitto.stop()


def test_a_missing_mosquitto_names_its_package(monkeypatch):
    from ether.transport import mosquitto
    from ether.transport.broker import BrokerError

    monkeypatch.setattr(mosquitto.shutil, "which", lambda name: None)
    monkeypatch.setattr(mosquitto, "BINARY", "/nonexistent/mosquitto")
    with pytest.raises(BrokerError, match="install the package 'mosquitto'"):
        mosquitto.find_binary()


def test_mosquitto_password_lines_are_what_mosquitto_passwd_writes():
    import base64
    import hashlib

    from ether.transport.mosquitto import password_line

    name, hashed = password_line("instance/default/echo", "pw").rstrip("\n").split(":", 1)
    _, version, iterations, salt, digest = hashed.split("$")
    expected = hashlib.pbkdf2_hmac("sha512", b"pw", base64.b64decode(salt), int(iterations))
    assert (name, version, base64.b64decode(digest)) == ("instance/default/echo", "7", expected)
