"""Classes the integration tests run as instances (imported by the instance processes)."""

from __future__ import annotations

import os
import sys
import threading
from typing import Any

from ether import (
    ether_cleanup,
    ether_get,
    ether_init,
    ether_pub,
    ether_save,
    ether_save_all,
    ether_shutdown,
    ether_start,
    ether_sub,
)


class Echo:
    """Answers each value; 13 raises, to show that one exception does not stop the instance."""

    @ether_sub(topic="in")
    @ether_pub(topic="out")
    def echo(self, value: int, label: str = "") -> dict:
        if value == 13:
            raise ValueError("unlucky number")
        return {"value": value, "label": label, "pid": os.getpid()}


class RootEcho:
    """Takes the whole payload through `root` and sends it back unchanged."""

    @ether_sub(topic="raw")
    @ether_pub(topic="raw_out")
    def take(self, root: Any) -> Any:
        return root


class Lifecycle:
    """Writes each lifecycle step it sees to a file, in order."""

    def __init__(self, path: str):
        self.path = path
        self._write("constructed")

    def _write(self, step: str) -> None:
        with open(self.path, "a") as f:
            f.write(step + "\n")

    @ether_init
    def on_init(self) -> None:
        self._write("init")

    @ether_start()
    def on_start(self) -> None:
        self._write("start")

    @ether_save_all
    def on_save_all(self) -> None:
        self._write("save_all")

    @ether_cleanup()
    def on_cleanup(self) -> None:
        self._write("cleanup")

    @ether_shutdown
    def on_shutdown(self) -> None:
        self._write("shutdown")

    def run(self) -> str:
        """A user method named like something a framework might inject; Ether must leave it alone."""
        return "user run"


class BrokenSensor:
    def __init__(self, port: str = "/dev/ttyUSB9"):
        raise ConnectionError(f"sensor not connected on {port}")


class Ticker:
    """A periodic source, like a sensor sampled at a fixed period."""

    def __init__(self):
        self.n = 0

    @ether_pub(topic="tick", interval=0.02)
    def tick(self) -> dict:
        self.n += 1
        return {"n": self.n}


class Blocker:
    """A handler that blocks until released; control messages must still be answered."""

    release = threading.Event()

    @ether_sub(topic="block")
    def block(self, seconds: float) -> None:
        self.release.wait(seconds)


class Chatty:
    """Publishes from inside with ether.pub and by calling its own @ether_pub method directly."""

    @ether_sub(topic="go")
    def go(self, n: int) -> None:
        import ether

        ether.pub({"via": "ether.pub", "n": n}, "chat")
        self.say(n)

    @ether_pub(topic="chat")
    def say(self, n: int) -> dict:
        return {"via": "direct call", "n": n}


class DataStore:
    """Request/reply services: `@ether_save` to store, `@ether_get` to read."""

    def __init__(self):
        self.items: dict[str, Any] = {}

    @ether_save
    def put(self, key: str, value: Any) -> None:
        self.items[key] = value

    @ether_get
    def get_value(self, key: str) -> Any:
        return self.items[key]  # a missing key raises KeyError: the caller gets NotFound

    @ether_get
    def whoami(self) -> int:
        return os.getpid()

    @ether_get
    def nothing(self) -> None:
        return None

    @ether_get
    def slow(self, seconds: float) -> str:
        threading.Event().wait(seconds)
        return "slow done"

    @ether_get
    def broken(self) -> int:
        raise RuntimeError("disk on fire")


class Overlap:
    """Two handlers whose filters overlap: a message on ov/b is for both, each once."""

    @ether_sub(topic="ov/b")
    @ether_pub(topic="ov_out")
    def narrow(self, root: Any) -> dict:
        return {"by": "narrow", "got": root}

    @ether_sub(topic="ov/#")
    @ether_pub(topic="ov_out")
    def wide(self, root: Any) -> dict:
        return {"by": "wide", "got": root}


class OverlapSender:
    """Publishes on ov/b, then on ov/end, as it is asked (an Ether source: numbered messages)."""

    @ether_sub(topic="ov_send")
    @ether_pub(topic="ov/b")
    def send(self, n: int) -> dict:
        return {"n": n}

    @ether_sub(topic="ov_send_end")
    @ether_pub(topic="ov/end")
    def end(self, n: int) -> dict:
        return {"end": n}


class LongLoop:
    """A handler that loops, publishing as it goes (an acquisition started by a command), until the
    file ``flag`` exists or ``limit`` seconds have passed."""

    @ether_sub(topic="loop_go")
    @ether_pub(topic="loop_done")
    def run(self, flag: str, limit: float = 60.0) -> dict:
        pause, n = threading.Event(), 0
        for _ in range(int(limit / 0.02)):
            if os.path.exists(flag):
                break
            n += 1
            self.tick(n)
            pause.wait(0.02)
        return {"n": n, "flagged": os.path.exists(flag)}

    @ether_pub(topic="loop_tick")
    def tick(self, n: int) -> dict:
        return {"n": n}


class CrossedFilters:
    """Two filters that both match ov/b and neither covers the other (+/b and ov/+)."""

    @ether_sub(topic="+/b")
    @ether_pub(topic="ov_out")
    def narrow(self, root: Any) -> dict:
        return {"by": "narrow", "got": root}

    @ether_sub(topic="ov/+")
    @ether_pub(topic="ov_out")
    def wide(self, root: Any) -> dict:
        return {"by": "wide", "got": root}


class Modules:
    """Says which modules its process has imported."""

    @ether_get
    def loaded(self) -> list[str]:
        return sorted(sys.modules)
