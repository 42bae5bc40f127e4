"""Fixtures: a real session (embedded broker, real processes) and an observer that records traffic."""

from __future__ import annotations

import pytest

from ether.runtime.session import Session, new_session
from support import Observer


@pytest.fixture(autouse=True, scope="session")
def _session_data(tmp_path_factory):
    """Sessions recorded by tests go to a temporary folder, not ./ether_data of the repository; broker
    keys and logins to another, not ~/.ether."""
    mp = pytest.MonkeyPatch()
    mp.setenv("ETHER_DATA", str(tmp_path_factory.mktemp("ether_data")))
    mp.setenv("ETHER_HOME", str(tmp_path_factory.mktemp("ether_home")))
    yield
    mp.undo()


@pytest.fixture
def run_session():
    """Open sessions from config dicts/paths; every one is closed at the end of the test."""
    opened: list[tuple[Session, list[Observer]]] = []

    def start(config, timeout: float = 30.0) -> tuple[Session, Observer]:
        session = new_session(config)
        session.open(timeout)
        observer = Observer(session.address)
        opened.append((session, [observer]))
        return session, observer

    yield start
    for session, observers in opened:
        for o in observers:
            o.close()
        session.close()
