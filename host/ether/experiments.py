"""Structure inside a session: runs and trials (nested, with metadata and an exit status) and markers.

``with ether.run("calibration", gain=2):`` sends a start on the data topic ``ether.structure`` and,
at the end of the block, a stop: ``ok``, ``failed`` with the exception's text, or ``aborted``
(KeyboardInterrupt, SystemExit). ``ether.trial(...)`` is the same for a trial, ``ether.mark(name,
**fields)`` a point in time. They work wherever ``ether.pub`` does: a tapped script or notebook, and
the methods of a running instance. Being data messages, they are stamped, kept in the sender's outbox
until the recorder has them, and time-stamped on the recorder's clock (docs/experiments.md).
"""

from __future__ import annotations

import threading
import uuid
from typing import Any, Literal

from ether.contract.messages import STRUCTURE_ERROR_LIMIT, StructureEvent
from ether.contract.topics import STRUCTURE

Kind = Literal["run", "trial"]
_open: list[Entry] = []  # the entries this process started and has not stopped, innermost last
_lock = threading.Lock()


def _send(event: StructureEvent, parent_given: bool) -> None:
    from ether.runtime import context

    payload = event.payload()
    if parent_given:
        payload["parent"] = event.parent  # null too: an explicit top-level entry
    context.current().publish(STRUCTURE, payload)


class Entry:
    """A run or trial that has started: a context manager (its end stops it), or call :meth:`stop`."""

    def __init__(self, kind: Kind, name: str, parent: Entry | str | None, metadata: dict[str, Any]) -> None:
        self.kind, self.name, self.metadata = kind, name, metadata
        self.id = f"{kind}-{uuid.uuid4().hex[:12]}"
        self.status: str | None = None  # set by stop()
        with _lock:
            inner = _open[-1].id if _open else None
        self.parent = parent.id if isinstance(parent, Entry) else parent if parent is not None else inner
        start = StructureEvent(
            event="start", kind=kind, name=name, id=self.id, parent=self.parent, metadata=metadata
        )
        _send(start, parent_given=self.parent is not None)
        with _lock:
            _open.append(self)

    def stop(self, status: Literal["ok", "failed", "aborted"] = "ok", error: str | None = None) -> None:
        """End this entry now (a second stop does nothing)."""
        with _lock:
            if self.status is not None:
                return
            self.status = status
            if self in _open:
                _open.remove(self)
        if error is not None and len(error) > STRUCTURE_ERROR_LIMIT:
            error = error[: STRUCTURE_ERROR_LIMIT - 3] + "..."
        _send(StructureEvent(event="stop", id=self.id, status=status, error=error), parent_given=False)

    def mark(self, name: str, **fields: Any) -> None:
        """A marker inside this entry (from any thread)."""
        _mark(name, self.id, fields)

    def __enter__(self) -> Entry:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: Any) -> None:
        if exc is None:
            self.stop("ok")
        elif isinstance(exc, Exception):
            self.stop("failed", f"{type(exc).__name__}: {exc}")
        else:
            self.stop("aborted", type(exc).__name__)

    def __repr__(self) -> str:
        return f"<{self.kind} {self.name!r} id={self.id} status={self.status or 'open'}>"


def run(name: str, *, parent: Entry | str | None = None, **metadata: Any) -> Entry:
    """Start a run now; it nests in the innermost run or trial this process has open (or ``parent``)."""
    return Entry("run", name, parent, metadata)


def trial(name: str = "trial", *, parent: Entry | str | None = None, **metadata: Any) -> Entry:
    """Start a trial now; it nests like :func:`run`. Trials are numbered 1, 2, ... in their session."""
    return Entry("trial", name, parent, metadata)


def mark(name: str, **fields: Any) -> None:
    """A marker now, in the innermost run or trial this process has open; ``fields`` are its data."""
    with _lock:
        inner = _open[-1].id if _open else None
    _mark(name, inner, fields)


def _mark(name: str, parent: str | None, fields: dict[str, Any]) -> None:
    event = StructureEvent(event="mark", name=name, parent=parent, metadata=fields)
    _send(event, parent_given=parent is not None)


__all__ = ["Entry", "mark", "run", "trial"]
