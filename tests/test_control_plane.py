"""Control plane: external Mosquitto, any-client interop with the real mosquitto_pub/sub, several
supervisors in one session, isolated sessions, scoped shutdown, pause/resume, remote commands, graph."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import pytest

import ether
from ether.runtime.session import new_session
from ether.transport.broker import BrokerAddress, EmbeddedBroker
from ether.transport.bus import Bus
from support import PIPELINE, REPO, Observer, ether_run, wait_until_running

needs_mosquitto = pytest.mark.skipif(not shutil.which("mosquitto"), reason="mosquitto is not installed")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def mosquitto():
    """A real Mosquitto on 127.0.0.1, configured as docs/operations.md recommends."""
    for _ in range(3):  # the free port picked here may be taken before Mosquitto binds it: pick again
        port = free_port()
        conf = Path(tempfile.mkdtemp()) / "mosquitto.conf"
        conf.write_text(
            f"listener {port} 127.0.0.1\nallow_anonymous true\nmax_queued_messages 0\nset_tcp_nodelay true\n"
        )
        proc = subprocess.Popen(["mosquitto", "-c", str(conf)], stderr=subprocess.PIPE, text=True)
        # Mosquitto logs "mosquitto version ... running" once it listens: wait for that line, not a time.
        if any("running" in line for line in proc.stderr):
            break
        proc.wait()
    else:
        pytest.fail("mosquitto did not start")
    threading.Thread(target=proc.stderr.read, daemon=True).start()  # keep its log pipe from filling
    yield BrokerAddress(port=port)
    proc.terminate()
    proc.wait(10)


def mosquitto_sub(address, topic, count, timeout=20):
    """Start the real mosquitto_sub and return once the broker acknowledged its subscription."""
    proc = subprocess.Popen(
        [
            "stdbuf",  # line-buffered, so the SUBACK line arrives when it happens
            "-oL",
            "mosquitto_sub",
            "-d",
            "-p",
            str(address.port),
            "-h",
            "127.0.0.1",
            "-t",
            topic,
            "-C",
            str(count),
            "-W",
            str(timeout),
            "-q",
            "1",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    for line in proc.stdout:  # -d prints the protocol exchange: SUBACK means subscribed
        if "SUBACK" in line:
            return proc
    pytest.fail("mosquitto_sub never subscribed")


def json_lines(proc) -> list[dict]:
    out, _ = proc.communicate(timeout=30)
    return [json.loads(line) for line in out.splitlines() if line.startswith("{")]


def mosquitto_pub(address, topic, message):
    subprocess.run(
        ["mosquitto_pub", "-p", str(address.port), "-h", "127.0.0.1", "-t", topic, "-m", message, "-q", "1"],
        check=True,
        timeout=20,
    )


@pytest.fixture
def session_on(request):
    opened = []

    def start(config, url):
        session = new_session(config, broker_url=url)
        session.open()
        opened.append(session)
        return session

    yield start
    for session in reversed(opened):
        session.close()


@needs_mosquitto
def test_pipeline_on_mosquitto(mosquitto, session_on):
    session = session_on(PIPELINE, mosquitto.url)
    observer = Observer(mosquitto, "result")
    session.start()
    assert sorted(p["result"] for p, _ in observer.wait_for("result", 2)) == [84, 168]
    observer.close()


@needs_mosquitto
def test_mosquitto_clients_publish_and_read_plain_json(mosquitto, session_on):
    session_on({"instances": {"echo": {"class_path": "lab_classes.Echo"}}}, mosquitto.url)
    errors = Observer(mosquitto, "ether/default/errors")
    reader = mosquitto_sub(mosquitto, "out", 1)
    mosquitto_pub(mosquitto, "in", '{"value": "not a number"}')  # validated like any message
    mosquitto_pub(mosquitto, "in", '{"value": 5, "label": "from mosquitto_pub"}')
    body = json_lines(reader)[0]
    assert body["value"] == 5 and body["label"] == "from mosquitto_pub" and body["_ether"]["src"] == "echo"
    error = errors.wait_for("ether/default/errors", 1)[0][0]
    assert error["instance"] == "echo" and "field 'value'" in error["reason"]
    errors.close()


@needs_mosquitto
def test_any_client_can_make_a_request(mosquitto, session_on):
    session_on({"instances": {"store": {"class_path": "lab_classes.DataStore"}}}, mosquitto.url)
    reader = mosquitto_sub(mosquitto, "ether/default/reply/me", 1)
    request = {"key": "missing", "_ether": {"reply_to": "ether/default/reply/me", "corr": "42"}}
    mosquitto_pub(mosquitto, "ether/default/instance/store/call/DataStore.get_value", json.dumps(request))
    reply = json_lines(reader)[0]
    assert reply["ok"] is False and reply["error"]["kind"] == "not_found" and reply["_ether"]["corr"] == "42"


@needs_mosquitto
def test_two_supervisors_form_one_session(mosquitto, session_on):
    """Two `ether run`-like supervisors on one broker, as if on two hosts."""
    host_a = session_on(
        {
            "instances": {
                "generator1": {"class_path": "lab_pipeline.DataGenerator"},
                "store": {"class_path": "lab_classes.DataStore"},
            }
        },
        mosquitto.url,
    )
    host_b = session_on(
        {
            "instances": {
                "processor2x": {"class_path": "lab_pipeline.DataProcessor", "kwargs": {"multiplier": 2}},
                "collector1": {"class_path": "lab_pipeline.DataCollector"},
            }
        },
        mosquitto.url,
    )
    observer = Observer(mosquitto, "result")
    host_a.start()  # A's generator feeds B's processor
    assert observer.wait_for("result", 1)[0][0] == {"result": 84}
    assert set(host_b.active_instances()) >= {"generator1", "store", "processor2x", "collector1"}
    # B calls a service that only A's instance serves
    host_b.services.call("DataStore.put", {"key": "x", "value": 1}, None, 5)
    assert host_b.services.call("DataStore.get_value", {"key": "x"}, None, 5) == 1
    observer.close()


def test_sessions_with_different_names_do_not_see_each_other(run_session):
    lab1, observer = run_session(
        {"session": "lab1", "instances": {"echo": {"class_path": "lab_classes.Echo"}}}
    )
    lab2 = new_session(
        {"session": "lab2", "instances": {"echo": {"class_path": "lab_classes.Echo"}}},
        broker_url=lab1.address.url,
    )
    lab2.open()
    try:
        observer.publish("lab2/in", '{"value": 2}')
        observer.publish("lab1/in", '{"value": 1}')
        assert observer.wait_for("lab1/out", 1)[0][0]["value"] == 1
        assert observer.wait_for("lab2/out", 1)[0][0]["value"] == 2
        assert len(observer.on("lab1/out")) == 1  # lab1's echo never saw lab2's message
        assert set(lab1.active_instances()) == {"echo"} and set(lab2.active_instances()) == {"echo"}
    finally:
        lab2.close()


def test_a_joining_process_shutdown_leaves_the_session_running(run_session):
    owner, observer = run_session({"instances": {"echo": {"class_path": "lab_classes.Echo"}}})
    ether.tap(broker=owner.address.url)  # join, with no instances of our own
    assert "echo" in ether.get_active_instances()
    ether.pub({"value": 1}, "in")
    ether.shutdown()
    observer.publish("in", '{"value": 2}')
    assert [p["value"] for p, _ in observer.wait_for("out", 2)] == [1, 2]
    assert owner.active_instances()["echo"]["state"] == "ready"


def test_pause_holds_delivery_and_resume_releases_it(run_session):
    session, observer = run_session({"instances": {"echo": {"class_path": "lab_classes.Echo"}}})
    session.pause(True, ["echo"])
    observer.publish("in", '{"value": 1}')
    status = session.supervisor.requester.request(
        session.topics.instance_control("echo"), {"command": "status"}, timeout=10
    )
    assert status["result"]["state"] == "paused" and observer.on("out") == []  # the message is held
    session.pause(False, ["echo"])
    assert observer.wait_for("out", 1)[0][0]["value"] == 1


def test_remote_commands_end_an_ether_run_session(tmp_path):
    proc = ether_run(PIPELINE, "--port", "0")
    port = wait_until_running(proc).port
    url = f"mqtt://127.0.0.1:{port}"

    def cli(*args):
        return subprocess.run(
            [sys.executable, "-m", "ether", *args, "--broker", url],
            capture_output=True,
            text=True,
            timeout=60,
        )

    watcher = Bus(BrokerAddress(port=port), client_id="watcher")
    watcher.connect()
    restarted = cli("restart", "processor4x")
    assert restarted.returncode == 0, restarted.stderr
    stopped = cli("stop", "collector1")
    assert stopped.returncode == 0 and "stop collector1: done" in stopped.stdout
    watcher.close()
    unknown = cli("stop", "nobody")  # refused at once, not after --timeout
    assert (
        unknown.returncode == 1 and "has no instance 'nobody' (has: collector1, generator1" in unknown.stderr
    )
    assert "no supervisor of session 'lab9'" in cli("shutdown", "--session", "lab9").stderr
    ended = cli("shutdown")
    assert ended.returncode == 0, ended.stderr
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, out
    assert "Stopping" in out
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)


def test_graph_prints_mermaid_and_warns_about_loose_ends(tmp_path):
    config = tmp_path / "lab.yaml"
    config.write_text(
        "instances:\n  echo:\n    class_path: lab_classes.Echo\n  gen:\n    class_path: lab_pipeline.DataGenerator\n"
    )
    proc = subprocess.run(
        [sys.executable, "-m", "ether", "graph", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONPATH": f"{REPO / 'tests'}{os.pathsep}{PIPELINE.parent}"},
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("flowchart LR")
    assert "instance 'echo' subscribes to 'in' but no instance publishes to it" in proc.stderr
    assert "instance 'gen' publishes to 'data' but no instance subscribes to it" in proc.stderr


def test_a_supervisor_announces_itself_and_its_last_will_says_dead(tmp_path):
    broker = EmbeddedBroker()  # outlives the supervisor, so its Last Will can be seen
    address = broker.start()
    observer = Observer(address, "ether/default/supervisor/+/status")
    proc = ether_run(PIPELINE, "--broker", address.url)
    try:
        wait_until_running(proc)
        (topic, running, _), *_ = observer.wait_for_any()
        assert running["state"] == "running" and running["pid"] == proc.pid
        assert running["instances"] == ["collector1", "generator1", "processor2x", "processor4x"]
        proc.kill()
        proc.wait(10)
        observer.wait_for(topic, 2)
        assert observer.on(topic)[-1][0]["state"] == "dead"
    finally:
        proc.kill()
        proc.communicate(timeout=30)
        observer.close()
        broker.stop()
