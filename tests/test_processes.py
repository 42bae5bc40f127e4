"""Child processes: one backoff formula, capped; a child stops when its lifeline is cut; the ready line;
forks of the fork server are processes of their own."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest

from ether import exits
from ether.forkserver import AVAILABLE, PRELOAD, ForkServer
from ether.processes import MAX_BACKOFF, Child, backoff, parse_ready
from ether.runtime.session import new_session
from ether.transport.broker import BrokerAddress, EmbeddedBroker, local_host
from ether.transport.bus import Bus


def test_backoff_doubles_and_is_capped():
    assert [backoff(n, 0.5) for n in (1, 2, 3, 4)] == [0.5, 1.0, 2.0, 4.0]
    assert backoff(31, 0.5) == MAX_BACKOFF  # was 0.5 * 2**30 s: 17 years
    assert backoff(10_000, 0.5) == MAX_BACKOFF  # no overflow
    assert backoff(3, 0.2, cap=0.5) == 0.5 and backoff(5, 0.0) == 0.0


def test_ready_lines_are_parsed_by_name_only():
    assert parse_ready('ether-ready broker {"port": 1883}\n', "broker") == {"port": 1883}
    assert parse_ready('ether-ready broker {"port": 1883}\n', "session") is None
    assert parse_ready("Ether is running on mqtt://127.0.0.1:1883 (session 'x')", "session") is None
    assert parse_ready("ether-ready session [1, 2]", "session") is None
    assert parse_ready("ether-ready session {broken", "session") is None


def test_a_child_waiting_for_its_spec_exits_when_its_lifeline_is_cut():
    child = Child("the recorder", "ether.data.recorder.recorder")
    assert child.stop(30) == exits.NO_BROKER  # closed stdin before the spec: it leaves at once


@pytest.mark.skipif(not AVAILABLE, reason="the fork server is Linux only")
def test_forked_instances_are_processes_of_their_own():
    """Killing one fork leaves its sibling running; each one's exit code is its own; a fork's lifeline
    and its exit code work as a new interpreter's."""
    forks = ForkServer()
    try:
        victim, sibling = (Child(n, "ether.runtime.instance", forks=forks) for n in ("victim", "sibling"))
        assert victim.pid != sibling.pid
        assert os.getsid(victim.pid) == victim.pid  # the server answers once it is a session of its own
        os.kill(victim.pid, signal.SIGKILL)
        assert victim.process.wait(30) == -signal.SIGKILL
        assert sibling.running()
        assert sibling.stop(30) == exits.INIT_FAILED  # closed stdin before the spec: it leaves at once
    finally:
        forks.close(30)
    assert forks.child.process.returncode == exits.OK


@pytest.mark.skipif(not AVAILABLE, reason="the fork server is Linux only")
def test_a_fork_imports_only_the_users_modules(run_session):
    """What every instance needs is imported once, by the fork server: what a fork imports itself is
    memory of its own (docs/benchmarks.md, an idle fork's memory)."""
    session, _ = run_session({"instances": {"mods": {"class_path": "lab_classes.Modules"}}})
    in_fork = set(session.services.call("Modules.loaded", {}, "mods", 30))
    preloaded = (
        f"import importlib, json, sys, ether.forkserver; [importlib.import_module(m) for m in {PRELOAD}];"
        " print(json.dumps(sorted(sys.modules)))"
    )
    out = subprocess.run([sys.executable, "-c", preloaded], capture_output=True, text=True, check=True)
    assert in_fork - set(json.loads(out.stdout)) == {"lab_classes"}


def test_a_broker_child_that_cannot_listen_says_why_and_is_a_clear_error():
    broker = EmbeddedBroker()
    address = broker.start()
    try:
        taken = EmbeddedBroker(port=address.port)
        with pytest.raises(Exception, match="did not start"):
            taken.start()
        assert taken.child is not None and taken.child.process.wait(30) == exits.CONFIG
    finally:
        broker.stop()


@pytest.mark.parametrize(
    ("listen", "dialled"), [("0.0.0.0", "127.0.0.1"), ("::", "::1"), ("127.0.0.2", "127.0.0.2")]
)
def test_local_processes_dial_where_the_broker_listens(listen, dialled):
    assert local_host(listen) == dialled


def test_a_session_listening_on_another_loopback_address_reaches_it(run_session):
    session = new_session({"instances": {"echo": {"class_path": "lab_classes.Echo"}}}, listen="127.0.0.2")
    session.open()
    try:
        assert session.address is not None and session.address.host == "127.0.0.2"
        assert session.active_instances()["echo"]["state"] == "ready"
        assert session.recording.process is not None and session.recording.process.ready()
        bus = Bus(BrokerAddress("127.0.0.2", session.address.port), client_id="visitor")
        bus.connect()
        bus.close()
    finally:
        assert session.close() == {"echo": 0}
