"""Beyond one machine: TLS (mqtts://) and WebSockets (ws://, wss://) to Mosquitto and the embedded
broker, with certificates made here."""

from __future__ import annotations

import datetime
import getpass
import ipaddress
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

import ether
from ether import exits
from ether.config import ConfigError
from ether.config.loading import load
from ether.transport.broker import BrokerAddress, BrokerError, EmbeddedBroker, Listener
from ether.transport.bus import Bus
from ether.transport.mosquitto import free_port
from ether.transport.waiting import wait_until
from support import REPO, Observer, ether_run

needs_mosquitto = pytest.mark.skipif(not shutil.which("mosquitto"), reason="mosquitto is not installed")


# -- certificates ------------------------------------------------------------------------------


class Authority:
    """A certificate authority of the test: it signs server and client certificates into ``folder``."""

    def __init__(self, folder: Path, name: str = "test-ca") -> None:
        self.folder = folder
        self.key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        self.name = subject
        self.cert = (
            self._builder(subject, self.key.public_key())
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(self.key, hashes.SHA256())
        )
        self.path = self._write(f"{name}.pem", self.cert.public_bytes(serialization.Encoding.PEM))

    def _builder(self, subject: x509.Name, public_key) -> x509.CertificateBuilder:
        now = datetime.datetime.now(datetime.timezone.utc)
        return (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(getattr(self, "name", subject))
            .public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
        )

    def _write(self, name: str, data: bytes) -> str:
        path = self.folder / name
        path.write_bytes(data)
        return str(path)

    def issue(self, name: str, hosts: tuple[str, ...] = ()) -> tuple[str, str]:
        """A certificate for ``name`` (valid for ``hosts``, names or IP addresses): (cert file, key file)."""
        key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        builder = self._builder(subject, key.public_key())
        if hosts:
            names = [_general_name(h) for h in hosts]
            builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
        cert = builder.sign(self.key, hashes.SHA256())
        key_pem = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        return (
            self._write(f"{name}.pem", cert.public_bytes(serialization.Encoding.PEM)),
            self._write(f"{name}.key", key_pem),
        )


def _general_name(host: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        return x509.DNSName(host)


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> dict[str, str]:
    """A CA, a server certificate for 127.0.0.1/localhost, one for another host, a client's, and a
    CA nobody signed with."""
    folder = tmp_path_factory.mktemp("pki")
    ca = Authority(folder)
    server, server_key = ca.issue("server", ("127.0.0.1", "localhost"))
    elsewhere, elsewhere_key = ca.issue("elsewhere", ("lab-server.example",))
    client, client_key = ca.issue("client")
    stranger = Authority(folder, "stranger-ca")
    return {
        "ca": ca.path,
        "server": server,
        "server_key": server_key,
        "elsewhere": elsewhere,
        "elsewhere_key": elsewhere_key,
        "client": client,
        "client_key": client_key,
        "stranger_ca": stranger.path,
    }


# -- brokers -----------------------------------------------------------------------------------


def run_mosquitto(folder: Path, *listener_lines: str):
    """Start Mosquitto with these listener lines; return the process once it is running."""
    conf = folder / f"mosquitto-{uuid.uuid4().hex[:6]}.conf"
    conf.write_text(
        f"user {getpass.getuser()}\n"  # as root it would become 'mosquitto', who cannot read the test's files
        "per_listener_settings false\nallow_anonymous true\nmax_queued_messages 0\n"
        "set_tcp_nodelay true\npersistence false\n" + "\n".join(listener_lines) + "\n"
    )
    proc = subprocess.Popen(["mosquitto", "-c", str(conf)], stderr=subprocess.PIPE, text=True)
    assert proc.stderr is not None
    seen = []
    for line in proc.stderr:  # "mosquitto version ... running" once it listens
        seen.append(line)
        if line.rstrip().endswith(" running"):
            break
    else:
        pytest.fail(f"mosquitto did not start: {''.join(seen)}")
    threading.Thread(target=proc.stderr.read, daemon=True).start()
    return proc


@pytest.fixture(scope="module")
def tls_mosquitto(pki, tmp_path_factory):
    """Mosquitto with two TLS listeners: one server-authenticated, one that requires a client certificate."""
    folder = tmp_path_factory.mktemp("tls-mosquitto")
    plain, mutual = free_port(), free_port()
    files = [f"cafile {pki['ca']}", f"certfile {pki['server']}", f"keyfile {pki['server_key']}"]
    proc = run_mosquitto(
        folder,
        f"listener {plain} 127.0.0.1",
        *files,
        f"listener {mutual} 127.0.0.1",
        *files,
        "require_certificate true",
    )
    yield {"server": plain, "mutual": mutual}
    proc.terminate()
    proc.wait(10)


def round_trip(address: BrokerAddress, topic: str = "net/check") -> None:
    """A message published over ``address`` comes back to a subscriber over the same address."""
    got = threading.Event()
    bus = Bus(address, client_id=f"net-{uuid.uuid4().hex[:8]}")
    bus.connect()
    try:
        bus.subscribe(topic, lambda t, p: got.set() if p == b"hello" else None)
        bus.publish(topic, b"hello")
        assert got.wait(10), f"no round trip over {address.url}"
    finally:
        bus.close()


def refused(address: BrokerAddress) -> str:
    """Connecting over ``address`` fails: the error's text."""
    bus = Bus(address, client_id=f"net-{uuid.uuid4().hex[:8]}")
    with pytest.raises(BrokerError) as caught:
        bus.connect(timeout=10)
    return str(caught.value)


# -- urls --------------------------------------------------------------------------------------


def test_broker_urls_name_scheme_port_path_and_tls_files():
    tls = BrokerAddress.parse("mqtts://me:pw@lab:8884?ca=/etc/ca.pem&cert=c.pem&key=c.key")
    assert (tls.scheme, tls.host, tls.port, tls.tls, tls.websockets) == ("mqtts", "lab", 8884, True, False)
    assert (tls.ca, tls.cert, tls.key) == ("/etc/ca.pem", "c.pem", "c.key")
    assert tls.url == "mqtts://lab:8884"  # logs see neither login nor files
    assert BrokerAddress.parse(tls.login_url) == tls  # other processes get all of it
    assert BrokerAddress.parse("mqtts://lab").port == 8883
    ws = BrokerAddress.parse("wss://lab:9443/broker")
    assert (ws.websockets, ws.tls, ws.path, ws.url) == (True, True, "/broker", "wss://lab:9443/broker")
    assert BrokerAddress.parse("ws://lab:9001").path == "/mqtt"


@pytest.mark.parametrize(
    "url, says",
    [
        ("http://lab:80", "the scheme must be mqtt://, mqtts:// (TLS), ws:// or wss://"),
        ("mqtt://lab?ca=ca.pem", "ca, cert and key are TLS options: use mqtts:// or wss://"),
        ("mqtts://lab?cert=c.pem", "a client certificate needs both cert= and key="),
        ("mqtts://lab?cafile=ca.pem", "unknown option 'cafile' (known: ca, cert, key)"),
        ("mqtts://lab?ca=", "'ca' needs a file path"),
        ("mqtt://lab/path", "only a ws:// or wss:// url has a path"),
        ("mqtts://me:secret@lab?bad=1", "mqtts://me:***@lab"),
    ],
)
def test_bad_broker_urls_say_what_is_wrong(url, says):
    with pytest.raises(BrokerError) as caught:
        BrokerAddress.parse(url)
    assert says in str(caught.value)
    assert "secret" not in str(caught.value)


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "lab.yaml"
    path.write_text(text)
    return path


def test_yaml_tls_files_are_relative_to_the_session_file(tmp_path):
    (tmp_path / "certs").mkdir()
    for name in ("ca.pem", "me.pem", "me.key"):
        (tmp_path / "certs" / name).write_text("-")
    text = "broker:\n  url: mqtts://lab:8883\n  ca: certs/ca.pem\n  cert: certs/me.pem\n  key: certs/me.key\n"
    address = BrokerAddress.parse(load(write(tmp_path, text)).broker_url)
    assert address.ca == str(tmp_path / "certs" / "ca.pem")
    assert (address.cert, address.key) == (str(tmp_path / "certs/me.pem"), str(tmp_path / "certs/me.key"))


@pytest.mark.parametrize(
    "text, line, says",
    [
        ("broker:\n  url: mqtts://lab\n  ca: missing.pem\n", 3, "the TLS ca file"),
        ("broker:\n  url: mqtt://lab\n  ca: ca.pem\n", 1, "TLS files need an mqtts:// or wss:// url"),
        ("broker:\n  url: mqtts://lab\n  cert: me.pem\n", 1, "needs both 'cert' and 'key'"),
        ("broker: mqtts://lab?ca=nowhere.pem\n", 1, "nowhere.pem does not exist"),
    ],
)
def test_yaml_tls_mistakes_name_file_and_line(tmp_path, text, line, says):
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        load(path)
    assert says in str(caught.value)
    assert f"{path}:{line}" in str(caught.value)


# -- TLS to Mosquitto --------------------------------------------------------------------------


@needs_mosquitto
def test_mqtts_to_mosquitto_checks_the_server_certificate(pki, tls_mosquitto):
    port = tls_mosquitto["server"]
    round_trip(BrokerAddress.parse(f"mqtts://127.0.0.1:{port}?ca={pki['ca']}"))
    assert "certificate verify failed" in refused(
        BrokerAddress.parse(f"mqtts://127.0.0.1:{port}?ca={pki['stranger_ca']}")
    )
    with pytest.raises(BrokerError, match="the TLS ca file '/nowhere/ca.pem' does not exist"):
        Bus(BrokerAddress.parse(f"mqtts://127.0.0.1:{port}?ca=/nowhere/ca.pem"), client_id="x")


@needs_mosquitto
def test_mqtts_checks_the_host_name(pki, tmp_path):
    """A certificate of the right CA for another host is refused."""
    port = free_port()
    proc = run_mosquitto(
        tmp_path,
        f"listener {port} 127.0.0.1",
        f"certfile {pki['elsewhere']}",
        f"keyfile {pki['elsewhere_key']}",
    )
    try:
        said = refused(BrokerAddress.parse(f"mqtts://127.0.0.1:{port}?ca={pki['ca']}"))
        assert "the TLS handshake with the MQTT broker at mqtts://127.0.0.1" in said
        assert "IP address mismatch" in said
    finally:
        proc.terminate()
        proc.wait(10)


@needs_mosquitto
def test_mqtts_with_a_client_certificate(pki, tls_mosquitto):
    url = f"mqtts://127.0.0.1:{tls_mosquitto['mutual']}?ca={pki['ca']}"
    round_trip(BrokerAddress.parse(f"{url}&cert={pki['client']}&key={pki['client_key']}"))
    refused(BrokerAddress.parse(url))  # the broker wants a certificate


@needs_mosquitto
def test_a_session_runs_over_mqtts(pki, tls_mosquitto):
    """Supervisor, instances and recorder all connect over TLS (their url carries the CA file)."""
    from ether.runtime.session import new_session

    url = f"mqtts://localhost:{tls_mosquitto['server']}?ca={pki['ca']}"
    session = new_session({"instances": {"echo": {"class_path": "lab_classes.Echo"}}}, broker_url=url)
    session.open()
    try:
        assert session.address.tls
        observer = Observer(session.address, "out")
        try:
            session.publish("in", {"value": 5})
            (reply, meta), *_ = observer.wait_for("out")
            assert reply["value"] == 5 and meta.src == "echo"
        finally:
            observer.close()
    finally:
        session.close()


# -- the embedded broker's TLS and WebSocket listeners ----------------------------------------


@pytest.fixture(scope="module")
def embedded(pki):
    listeners = (
        Listener("mqtts", 0, pki["server"], pki["server_key"]),
        Listener("ws"),
        Listener("wss", 0, pki["server"], pki["server_key"]),
    )
    broker = EmbeddedBroker(listeners=listeners)
    address = broker.start()
    yield address, {listener.scheme: port for listener, port in broker.ports.items()}
    broker.stop()


def test_the_embedded_broker_listens_on_tls_and_websockets(pki, embedded):
    plain, ports = embedded
    ca = f"?ca={pki['ca']}"
    round_trip(BrokerAddress.parse(f"mqtts://127.0.0.1:{ports['mqtts']}{ca}"))
    round_trip(BrokerAddress.parse(f"ws://127.0.0.1:{ports['ws']}/mqtt"))
    round_trip(BrokerAddress.parse(f"wss://localhost:{ports['wss']}/mqtt{ca}"))
    assert "certificate verify failed" in refused(
        BrokerAddress.parse(f"mqtts://127.0.0.1:{ports['mqtts']}?ca={pki['stranger_ca']}")
    )


def test_one_message_crosses_tcp_tls_and_websockets(pki, embedded):
    """Subscribers on every listener get what a WebSocket client publishes: one broker behind them."""
    plain, ports = embedded
    addresses = [
        plain,
        BrokerAddress.parse(f"mqtts://127.0.0.1:{ports['mqtts']}?ca={pki['ca']}"),
        BrokerAddress.parse(f"wss://127.0.0.1:{ports['wss']}/mqtt?ca={pki['ca']}"),
    ]
    events = [threading.Event() for _ in addresses]
    buses = []
    try:
        for address, event in zip(addresses, events, strict=True):
            bus = Bus(address, client_id=f"net-{uuid.uuid4().hex[:8]}")
            bus.connect()
            bus.subscribe("net/cross", lambda t, p, e=event: e.set())
            buses.append(bus)
        sender = Bus(BrokerAddress.parse(f"ws://127.0.0.1:{ports['ws']}"), client_id="net-ws-sender")
        sender.connect()
        buses.append(sender)
        assert sender.publish_and_wait("net/cross", b"{}")
        assert all(e.wait(10) for e in events)
    finally:
        for bus in buses:
            bus.close()


def test_ether_run_listens_also_on_websockets_and_tls(pki, tmp_path):
    """``ether run --listener``: a session's embedded broker takes browsers and TLS clients too."""
    config = tmp_path / "lab.yaml"
    config.write_text(f"recorder: {{path: {tmp_path}}}\ninstances: {{}}\n")
    tls = f"mqtts:0:{pki['server']}:{pki['server_key']}"
    proc = ether_run(config, "--headless", "--port", "0", "--listener", "ws:0", "--listener", tls)
    try:
        ports = {}
        for line in proc.stdout:
            if "also listens on" in line:
                scheme, port = line.rsplit(" ", 1)[-1].strip().split("://")
                ports[scheme] = int(port.rsplit(":", 1)[1])
            if "Press Ctrl-C" in line:
                break
        assert set(ports) == {"ws", "mqtts"}, ports
        round_trip(BrokerAddress.parse(f"ws://127.0.0.1:{ports['ws']}/mqtt"))
        round_trip(BrokerAddress.parse(f"mqtts://127.0.0.1:{ports['mqtts']}?ca={pki['ca']}"))
    finally:
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0 and "sealed complete" in out, out


@pytest.mark.parametrize(
    "args, says",
    [
        (["--listener", "ftp:21"], "--listener: a broker listener is mqtts, ws or wss (not 'ftp')"),
        (
            ["--listener", "ws:0", "--broker", "mqtt://127.0.0.1:1"],
            "--listener: it adds ports to the embedded",
        ),
    ],
)
def test_bad_listener_options_of_ether_run_say_what_is_wrong(tmp_path, args, says):
    config = tmp_path / "lab.yaml"
    config.write_text("instances: {}\n")
    proc = ether_run(config, "--headless", *args)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == exits.CONFIG and says in out, out


@pytest.mark.parametrize(
    "text, says",
    [
        ("mqtts:8883", "needs the server's certificate and key files"),
        ("ws:9001:a.pem:a.key", "is not TLS: it takes no certificate"),
        ("http:80", "is mqtts, ws or wss"),
        ("ws", "write SCHEME:PORT or SCHEME:PORT:CERT:KEY"),
        ("wss:9443:/nowhere.pem:/nowhere.key", "certificate file '/nowhere.pem' does not exist"),
    ],
)
def test_bad_listeners_say_what_is_wrong(text, says):
    with pytest.raises(BrokerError, match=says):
        Listener.parse(text)


# -- worker pools ------------------------------------------------------------------------------


def pool_session(tmp_path: Path, broker_url: str | None = None, **instances):
    from ether.runtime.session import new_session

    config = {
        "session": f"pool{uuid.uuid4().hex[:6]}",
        "recorder": {"path": str(tmp_path)},
        "instances": {"proc": {"class_path": "delivery_classes.Processor", "workers": 3, "backoff": 0.05}}
        | instances,
    }
    session = new_session(config, broker_url=broker_url)
    session.open()
    return session


def processed_once(run_dir: Path) -> Counter:
    """How often each stored sample was processed (by the lineage of the results), per worker; checks
    that each was processed exactly once, that the seal is complete and nothing is unprocessed."""
    from ether.data.recorder.store import connect, read_manifest

    db = connect(run_dir, readonly=True)
    samples = {r[0] for r in db.execute("SELECT msg_id FROM messages WHERE topic = 'samples'")}
    results = db.execute("SELECT src, parents FROM messages WHERE topic = 'results'").fetchall()
    unprocessed = db.execute("SELECT src, detail FROM events WHERE kind = 'unprocessed'").fetchall()
    manifest = read_manifest(db)
    db.close()
    parents = Counter(json.loads(p)[0] for _, p in results)
    assert samples and set(parents) == samples, "a sample without a result, or a result of nothing"
    assert max(parents.values()) == 1, "a sample was processed twice"
    assert unprocessed == [] and manifest["status"] == "complete", (unprocessed, manifest["status"])
    return Counter(src for src, _ in results)


def test_a_pool_of_three_handles_each_message_once(tmp_path):
    session = pool_session(tmp_path)
    results = session.topics.data("results")
    observer = Observer(session.address, results)
    try:
        assert sorted(session.supervisor.instances) == ["proc@1", "proc@2", "proc@3"]
        for n in range(60):
            session.publish("samples", {"n": n})
        got = observer.wait_for(results, 60)
        assert sorted(p["n"] for p, _ in got) == list(range(60))
    finally:
        observer.close()
        session.close()
    by_worker = processed_once(session.recording.run_dir)
    assert set(by_worker) == {"proc@1", "proc@2", "proc@3"} and sum(by_worker.values()) == 60, by_worker


@needs_mosquitto
def test_a_killed_worker_catches_up_on_its_share(tmp_path):
    """kill -9 one worker of the pool mid-stream: it restarts and handles its share of what came
    meanwhile; every sample is processed exactly once and the seal is complete."""
    broker = free_port()
    proc = run_mosquitto(tmp_path, f"listener {broker} 127.0.0.1")
    source = {"source": {"class_path": "delivery_classes.Source", "backoff": 0.05}}
    session = pool_session(tmp_path, f"mqtt://127.0.0.1:{broker}", **source)
    results = session.topics.data("results")
    observer = Observer(session.address, results)
    try:
        session.start()
        observer.wait_for(results, 200, timeout=60)
        victim = session.supervisor.instances["proc@2"]
        os.kill(victim.pid, signal.SIGKILL)
        assert wait_until(
            session.supervisor._changed, lambda: victim.restarts == 1 and victim.state == "ready", 30
        )
        observer.wait_for(results, len(observer.on(results)) + 200, timeout=60)
    finally:
        observer.close()
        session.close()
        proc.terminate()
        proc.wait(10)
    assert set(processed_once(session.recording.run_dir)) == {"proc@1", "proc@2", "proc@3"}


def test_the_graph_shows_a_pool_as_one_node_and_follows_shared_subscriptions(tmp_path):
    from ether.runtime.graph import TopicGraph

    text = (
        "instances:\n"
        "  source: {class_path: delivery_classes.Source}\n"
        "  proc: {class_path: delivery_classes.Processor, workers: 3}\n"
        "  coll: {class_path: network_classes.SharedCollector}\n"
    )
    graph = TopicGraph.of(load(write(tmp_path, text)))
    assert graph.edges() == [
        ("proc", "results", "coll"),
        ("source", "samples", "proc"),
    ]
    assert "proc[proc x3 workers]" in graph.mermaid()
    assert not [w for w in graph.warnings() if "results" in w or "samples" in w], graph.warnings()


def test_workers_must_be_a_small_positive_number(tmp_path):
    path = write(
        tmp_path, "instances:\n  proc:\n    class_path: delivery_classes.Processor\n    workers: 0\n"
    )
    with pytest.raises(ConfigError, match=r"lab.yaml:4.*workers"):
        load(path)


@needs_mosquitto
def test_a_shared_subscription_is_delivered(tmp_path):
    """An instance subscribing to $share/<group>/<filter> gets the messages (they were dropped)."""
    broker = free_port()
    proc = run_mosquitto(tmp_path, f"listener {broker} 127.0.0.1")
    from ether.runtime.session import new_session

    session = new_session(
        {
            "session": "shared",
            "recorder": False,
            "instances": {"coll": {"class_path": "network_classes.SharedCollector"}},
        },
        broker_url=f"mqtt://127.0.0.1:{broker}",
    )
    session.open()
    collected = session.topics.data("collected")
    observer = Observer(session.address, collected)
    try:
        session.publish("results", {"n": 7, "squared": 49})
        (payload, meta), *_ = observer.wait_for(collected)
        assert payload == {"n": 7} and meta.src == "coll"
    finally:
        observer.close()
        session.close()
        proc.terminate()
        proc.wait(10)


# -- several hosts -----------------------------------------------------------------------------

SOURCE_HOST = {
    "source": {"class_path": "delivery_classes.Source", "backoff": 0.05},
    "coll": {"class_path": "delivery_classes.Collector", "backoff": 0.05},
}
PROCESSOR_HOST = {"proc": {"class_path": "delivery_classes.Processor", "backoff": 0.05}}


class Host:
    """One `ether run` as on its own machine: its YAML, its broker url, its output kept."""

    def __init__(
        self, tmp_path: Path, name: str, session: str, instances: dict, broker: BrokerAddress
    ) -> None:
        conf = {
            "session": session,
            "recorder": {"path": str(tmp_path / "data"), "drain_timeout": 2},
            "instances": instances,
        }
        path = tmp_path / f"{name}.yaml"
        path.write_text(json.dumps(conf))
        env = {**os.environ, "PYTHONPATH": f"{REPO / 'tests'}:{os.environ.get('PYTHONPATH', '')}"}
        self.proc = ether_run(path, "--headless", "--broker", broker.url, env=env)
        self.output: list[str] = []
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.output.append(line)
            if "Ether is running" in line:
                break
        else:
            pytest.fail(f"host {name} did not start:\n{''.join(self.output)[-3000:]}")
        self._reader = threading.Thread(target=lambda: self.output.extend(self.proc.stdout), daemon=True)
        self._reader.start()

    def end(self) -> tuple[int, str]:
        """Ctrl-C: its exit code and last line (the seal)."""
        self.proc.send_signal(signal.SIGINT)
        code = self.proc.wait(90)
        self._reader.join(10)
        return code, "".join(self.output).strip().splitlines()[-1]


def bridged_mosquittos(tmp_path: Path):
    """Mosquitto A, and Mosquitto B bridged to A (every topic both ways, QoS 1, low-latency settings);
    returns once a message crosses the bridge."""
    a, b = free_port(), free_port()
    proc_a = run_mosquitto(tmp_path, f"listener {a} 127.0.0.1")
    proc_b = run_mosquitto(
        tmp_path,
        f"listener {b} 127.0.0.1",
        f"connection to-a\naddress 127.0.0.1:{a}\ntopic # both 1\ntry_private true\ncleansession false",
    )
    crossed = threading.Event()
    listener = Bus(BrokerAddress(port=a), client_id="bridge-probe-a")
    listener.connect()
    listener.subscribe("probe/bridge", lambda t, p: crossed.set())
    sender = Bus(BrokerAddress(port=b), client_id="bridge-probe-b")
    sender.connect()
    for _ in range(100):  # the bridge subscribes on A when it connects: until then nothing crosses
        sender.publish("probe/bridge", b"{}")
        if crossed.wait(0.5):
            break
    listener.close(), sender.close()
    assert crossed.is_set(), "the bridge never carried a message"
    return (a, proc_a), (b, proc_b)


def share_key(from_port: int, to_port: int) -> None:
    """Host B uses host A's broker key (docs/operations.md: copy broker-<port>.key), under its own
    broker's port: its instances then sign as the session's recorder expects."""
    from ether.transport.access import BrokerKey

    assert wait_until(threading.Condition(), lambda: BrokerKey.path(from_port).exists(), 10)
    BrokerKey.path(to_port).write_text(BrokerKey.path(from_port).read_text())


@needs_mosquitto
@pytest.mark.parametrize("layout", ["one-mosquitto", "bridged-mosquittos"])
def test_a_host_killed_mid_stream_loses_nothing_silently(layout, tmp_path):
    """Two `ether run` supervisors of one session (source+collector on A, processor on B), over one
    Mosquitto or over two bridged ones; host B (its supervisor, and its broker if it has one) is killed
    mid-stream. Every sample is stored once and processed at most once; B's instance reports what it
    processed to the store of record, so the seal counts, exactly, every stored sample the store does
    not know B processed: as not processed, or as unknown when B's last reports died with its broker.
    The seal is incomplete and says so in the exit code, `open_session` and `ether sessions`."""
    from test_delivery import tally

    if layout == "one-mosquitto":
        port = free_port()
        brokers = [run_mosquitto(tmp_path, f"listener {port} 127.0.0.1")]
        port_a = port_b = port
    else:
        (port_a, proc_a), (port_b, proc_b) = bridged_mosquittos(tmp_path)
        brokers = [proc_a, proc_b]
    session = f"hosts{uuid.uuid4().hex[:6]}"
    address_a = BrokerAddress(port=port_a)
    results, samples = f"{session}/results", f"{session}/samples"
    observer = Observer(address_a, f"{session}/#")
    host_b = None
    try:
        host_a = Host(tmp_path, "a", session, SOURCE_HOST, address_a)
        if port_b != port_a:
            share_key(port_a, port_b)
        host_b = Host(tmp_path, "b", session, PROCESSOR_HOST, BrokerAddress(port=port_b))
        observer.wait_for(results, 200, timeout=60)
        host_b.proc.kill()  # the node dies: its supervisor, then its broker
        if port_b != port_a:
            brokers[1].kill()
        observer.wait_for(samples, len(observer.on(samples)) + 200, timeout=60)  # A goes on
        code, last = host_a.end()
    finally:
        observer.close()
        if host_b is not None and host_b.proc.poll() is None:
            host_b.proc.kill()
        for proc in brokers:
            proc.terminate()
            proc.wait(10)
    assert " sealed " in last, last
    run_dir = Path(last.rsplit(" in ", 1)[1])
    stored, processed, reported = host_b_accounting(run_dir)
    assert processed and max(processed.values()) == 1, "host B processed nothing, or a sample twice"
    assert reported <= set(processed), "the store says host B processed a sample it did not"
    recorded = ether.open_session(run_dir)
    (proc,) = [u for u in recorded.unprocessed if u["instance"] == "proc"]
    not_reported = stored - reported
    # what the store does not know host B processed is counted, exactly: as not processed when B's
    # reports all arrived (its instance drained), as unknown when they stopped (its broker died)
    assert proc["durable"] + proc["unknown"] == len(not_reported) > 0, (proc, len(not_reported))
    assert expand(proc["ranges"]) == {seq for seq, msg_id in stored_seqs(run_dir) if msg_id in not_reported}
    if proc["unknown"]:
        assert proc["durable"] == 0 and "not known to be processed by proc" in last, last
    else:
        assert reported == set(processed) and f"{proc['durable']} not processed by proc" in last, last
    summary = recorded.manifest
    assert summary["status"] == "incomplete" and code == exits.INCOMPLETE, (summary["status"], code)
    assert summary.get("unprocessed", {}).get("proc", 0) + summary.get("unknown_processed", {}).get(
        "proc", 0
    ) == len(not_reported)
    others = sum(u["durable"] + u["unknown"] for u in recorded.unprocessed if u["instance"] != "proc")
    recorded.close()
    listing = subprocess.run(
        [sys.executable, "-m", "ether", "sessions", "--data", str(run_dir.parent)],
        capture_output=True,
        text=True,
    )
    (row,) = [line.split() for line in listing.stdout.splitlines() if line.startswith(run_dir.name)]
    assert row[-1] == str(len(not_reported) + others), listing.stdout  # the unprocessed column
    row = tally(run_dir, f"kill host B ({layout})", layout)
    assert row["seal"] == "incomplete", row


@needs_mosquitto
def test_what_another_host_processed_is_in_the_store_of_record(tmp_path):
    """Host A records and collects; host B samples and processes (its ledgers stay on B). B ends first,
    then A: the store knows from B's reports that B's processor handled every sample, so the seal
    is complete, with nothing unprocessed and nothing unknown."""
    port = free_port()
    broker = run_mosquitto(tmp_path, f"listener {port} 127.0.0.1")
    session = f"hosts{uuid.uuid4().hex[:6]}"
    address = BrokerAddress(port=port)
    observer = Observer(address, f"{session}/collected")
    try:
        host_a = Host(tmp_path, "a", session, {"coll": SOURCE_HOST["coll"]}, address)
        host_b = Host(tmp_path, "b", session, {"source": SOURCE_HOST["source"], **PROCESSOR_HOST}, address)
        observer.wait_for(f"{session}/collected", 100, timeout=60)
        code_b, _ = host_b.end()
        code, last = host_a.end()
    finally:
        observer.close()
        broker.terminate()
        broker.wait(10)
    assert code_b == exits.OK and code == exits.OK and " sealed complete" in last, (code_b, code, last)
    run_dir = Path(last.rsplit(" in ", 1)[1])
    stored, processed, reported = host_b_accounting(run_dir)
    assert stored == set(processed) == reported  # each sample once, each reported processed
    recorded = ether.open_session(run_dir)
    try:
        assert recorded.unprocessed == [] and recorded.manifest["unknown_processed"] == {}
    finally:
        recorded.close()
    assert not (run_dir / "outbox" / "proc.sqlite").exists()  # A counted from B's reports, not a file


def test_a_forged_processed_report_is_not_believed(tmp_path):
    """Another client claims, through the resend topic the broker lets it use, that an instance
    processed messages: the recorder checks the instance's signature and keeps nothing of it."""
    from ether.contract.messages import ProcessedReport
    from ether.contract.wire import Meta, encode
    from ether.data.recorder.store import connect
    from ether.runtime.session import new_session
    from ether.transport.access import BrokerKey
    from ether.transport.permissions import Login
    from ether.transport.signing import sign
    from support import recorder_barrier

    session = new_session(
        {"recorder": {"path": str(tmp_path)}, "instances": {"echo": {"class_path": "lab_classes.Echo"}}}
    )
    session.open()
    observer = Observer(session.address, "sync")
    mallory = None
    try:
        key = BrokerKey.find(session.address)
        assert key is not None
        mallory = Bus(
            key.address(session.address, Login("instance", "default", "mallory")), client_id="mallory"
        )
        mallory.connect()
        report = ProcessedReport(instance="echo", subscribes=["in"], processed={"main:x": {"b": [(1, 1000)]}})
        meta = Meta("f-processed.1", "echo", "f-processed", 1, time.time())
        body = sign(encode(report.payload(), meta), os.urandom(32))
        topics = session.topics
        mallory.publish(topics.recorder_resend(topics.instance_processed("echo")), body)
        mallory.publish(topics.instance_processed("echo"), body)  # not its own name: the broker refuses
        mallory.publish("sync", b"{}")  # after the forged ones, from the same client
        observer.wait_for("sync")
        recorder_barrier(session)
        db = connect(session.recording.run_dir, readonly=True)
        forged = db.execute("SELECT COUNT(*) FROM processed_reports WHERE boot = 'f-processed'").fetchone()[0]
        refused = db.execute("SELECT detail FROM events WHERE kind = 'bad_system_message'").fetchall()
        db.close()
        assert forged == 0
        assert [json.loads(d)["reason"] for (d,) in refused] == [
            "ignored a processed report: src 'echo' is not verified (no valid signature of that source)"
        ]
    finally:
        if mallory is not None:
            mallory.close()
        observer.close()
        session.close()


def host_b_accounting(run_dir: Path) -> tuple[set[str], Counter, set[str]]:
    """(stored samples, how often each was processed by host B's proc according to the results'
    lineage, the samples its processed reports in the store name)."""
    from ether.data.recorder.store import connect

    db = connect(run_dir, readonly=True)
    samples = db.execute("SELECT msg_id, src, boot, seq FROM messages WHERE topic = 'samples'").fetchall()
    parents = db.execute("SELECT parents FROM messages WHERE topic = 'results'").fetchall()
    reports = db.execute("SELECT ranges FROM processed_reports WHERE src = 'proc'").fetchall()
    db.close()
    spans = [
        (src, boot, a, b)
        for (ranges,) in reports
        for src, boots in json.loads(ranges).items()
        for boot, pairs in boots.items()
        for a, b in pairs
    ]
    reported = {
        msg_id
        for msg_id, src, boot, seq in samples
        if any(s == src and b == boot and a <= seq <= z for s, b, a, z in spans)
    }
    return {r[0] for r in samples}, Counter(json.loads(p)[0] for (p,) in parents), reported


def stored_seqs(run_dir: Path) -> list[tuple[int, str]]:
    from ether.data.recorder.store import connect

    db = connect(run_dir, readonly=True)
    rows = db.execute("SELECT seq, msg_id FROM messages WHERE topic = 'samples'").fetchall()
    db.close()
    return [(seq, msg_id) for seq, msg_id in rows]


def expand(ranges: dict) -> set[int]:
    """The seqs of ``{src: {boot: [[first, last], ...]}}`` (one source, one boot here)."""
    return {
        n for boots in ranges.values() for pairs in boots.values() for a, b in pairs for n in range(a, b + 1)
    }


def test_the_embedded_broker_refuses_a_shared_subscription_loudly(embedded, caplog):
    """amqtt 0.12.1 has no shared subscriptions: it would match nothing, silently; it refuses instead."""
    plain, _ = embedded
    bus = Bus(plain, client_id="net-share")
    bus.connect()
    try:
        bus_log = logging.getLogger("ether.bus")  # caplog's own handler: "ether" may not propagate
        bus_log.addHandler(caplog.handler)  # (a session earlier in this process set up its logging)
        try:
            with caplog.at_level("ERROR", logger="ether.bus"):
                bus.subscribe("$share/g/net/x", lambda t, p: None)
        finally:
            bus_log.removeHandler(caplog.handler)
        assert "the broker refused a subscription" in caplog.text
    finally:
        bus.close()
