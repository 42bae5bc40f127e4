"""Waiting on signals with a deadline: Ether never sleeps as a way to synchronise."""

from __future__ import annotations

import selectors
import threading
import time
from collections.abc import Callable
from typing import IO


class Deadline:
    """A point in time; ``remaining`` counts down to 0."""

    def __init__(self, timeout: float) -> None:
        self.end = time.monotonic() + timeout

    @property
    def remaining(self) -> float:
        return max(0.0, self.end - time.monotonic())

    @property
    def expired(self) -> bool:
        return time.monotonic() >= self.end


def readline_with_timeout(stream: IO[str], timeout: float) -> str:
    """One line from a pipe, or '' if none arrives before the timeout (or the pipe closes)."""
    with selectors.DefaultSelector() as selector:
        selector.register(stream, selectors.EVENT_READ)
        if not selector.select(timeout):
            return ""
    return stream.readline()


def wait_until(condition: threading.Condition, predicate: Callable[[], bool], timeout: float) -> bool:
    """``Condition.wait_for`` that the caller does not need to hold the lock for."""
    with condition:
        return condition.wait_for(predicate, timeout)
