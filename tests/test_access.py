"""Access: an embedded broker reachable from other machines requires logins; logins are kept private."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from dataclasses import replace

import pytest

import ether.runtime.session
from ether.runtime.session import new_session
from ether.transport.access import Access, client_address
from ether.transport.broker import BrokerAddress, BrokerError, EmbeddedBroker, needs_credentials, serve
from ether.transport.bus import Bus


@pytest.fixture
def access(tmp_path, monkeypatch) -> Access:
    monkeypatch.setenv("ETHER_HOME", str(tmp_path / "home"))
    return Access()


def mode(path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.parametrize(
    "host, needed",
    [("127.0.0.1", False), ("::1", False), ("localhost", False), ("0.0.0.0", True), ("192.168.1.5", True)],
)
def test_only_loopback_goes_without_logins(host, needed):
    assert needs_credentials(host) is needed


def test_logins_are_hashed_and_owner_only(access):
    password = access.add("board1")
    text = access.password_file.read_text()
    assert text.startswith("board1:$argon2") and password not in text
    assert mode(access.folder) == 0o700 and mode(access.password_file) == 0o600
    assert access.remove("board1") and access.users() == {}
    for bad in ("bad name", "instance/default/echo"):  # a board cannot take an Ether client's name
        with pytest.raises(ValueError, match="no ':', '/' or spaces"):
            access.add(bad)


def test_an_exposed_broker_refuses_to_start_without_logins():
    with pytest.raises(BrokerError, match="--password-file"):
        serve("0.0.0.0", 0)  # refused before anything listens


def test_a_broker_with_logins_accepts_only_them(access):
    password = access.add("board1")
    broker = EmbeddedBroker(password_file=str(access.password_file))
    address = broker.start()
    try:
        for login, expected in [((None, None), "refused"), (("board1", "wrong"), "refused")]:
            bus = Bus(BrokerAddress(address.host, address.port, *login), client_id="intruder")
            with pytest.raises(BrokerError, match=expected):
                bus.connect()
        bus = Bus(BrokerAddress(address.host, address.port, "board1", password), client_id="board1")
        bus.connect()
        bus.close()
    finally:
        broker.stop()


def test_a_session_on_an_exposed_broker_logs_its_own_processes_in(access, monkeypatch):
    """Treat 127.0.0.1 as exposed (tests stay on loopback): the instances and the recorder must log in."""
    monkeypatch.setattr(ether.runtime.session, "needs_credentials", lambda host: True)
    session = new_session({"instances": {"echo": {"class_path": "lab_classes.Echo"}}})
    session.open()
    try:
        assert session.active_instances()["echo"]["state"] == "ready"
        url_file = access.folder / "default.url"
        assert mode(url_file) == 0o600
        joined = BrokerAddress.parse(url_file.read_text().strip())
        assert joined.username == "supervisor/default/remote" and joined.password
        other_host = Bus(
            replace(session.address, username=joined.username, password=joined.password), "remote"
        )
        other_host.connect()
        other_host.close()
        operator = client_address(session.address, "default", "cli")  # an ether command's login
        assert operator.username == "operator/default/cli"
        cli = Bus(operator, "cli")
        cli.connect()
        cli.close()
        with pytest.raises(BrokerError, match="refused"):
            Bus(BrokerAddress(port=session.address.port), client_id="anonymous").connect()
    finally:
        assert session.close() == {"echo": 0}


def test_ether_access_command_prints_a_password_once(access):
    env_home = {**os.environ, "ETHER_HOME": str(access.folder.parent)}
    run = [sys.executable, "-m", "ether", "access"]
    added = subprocess.run([*run, "add", "thermo1"], capture_output=True, text=True, env=env_home, timeout=60)
    assert added.returncode == 0, added.stderr
    password = added.stdout.split("password: ")[1].split()[0]
    assert password not in access.password_file.read_text()
    listed = subprocess.run([*run, "list"], capture_output=True, text=True, env=env_home, timeout=60)
    assert listed.stdout.split() == ["thermo1"]
