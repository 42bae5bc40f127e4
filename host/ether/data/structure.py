"""The runs, trials and markers of a recorded session, read from its ``ether.structure`` messages.

Messages are taken in arrival order at the recorder; their times are the recorder's clock
(``t_recorded``). A message that does not fit :class:`StructureEvent`, or that names an entry it
cannot (a stop of nothing open, a start with an id already used), is not used and is listed in
``problems`` with its row and the reason (docs/experiments.md).
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass, field
from typing import Any

from ether.contract.messages import ContractError, StructureEvent, parse
from ether.contract.topics import STRUCTURE

ENTRY_COLUMNS = (
    "id",
    "kind",
    "number",
    "name",
    "parent",
    "start",
    "stop",
    "status",
    "error",
    "metadata",
    "src",
)
MARKER_COLUMNS = ("name", "t", "parent", "fields", "src")
UNFINISHED = "unfinished"  # an entry whose stop never came (the session ended or crashed first)


@dataclass
class Structure:
    entries: list[dict[str, Any]] = field(default_factory=list)  # runs and trials, by start
    markers: list[dict[str, Any]] = field(default_factory=list)
    problems: list[dict[str, Any]] = field(default_factory=list)  # {"row", "reason"}


def read_structure(db: sqlite3.Connection, ended: bool = True) -> Structure:
    """Every run, trial and marker of the session store ``db``; an entry without a stop is ``open``
    while the session runs, ``unfinished`` once it has ``ended``."""
    rows = db.execute(
        "SELECT row, payload, src, boot, seq, parents, t_recorded FROM messages WHERE topic = ? ORDER BY row",
        (STRUCTURE,),
    ).fetchall()
    builder = _Builder()
    for r in _causal_order(db, rows):
        builder.take(r["row"], json.loads(r["payload"]), r["src"], r["t_recorded"])
    for entry in builder.open if ended else ():
        entry["status"] = UNFINISHED
    return builder.structure


def _causal_order(db: sqlite3.Connection, rows: list[sqlite3.Row]) -> list[sqlite3.Row]:
    """Arrival order, except that an event sent while handling a message goes where that message was
    sent: right after the events its sender had sent before it. The broker may deliver the handler's
    event to the recorder after later events of the message's sender (a trial an instance starts for a
    script's message, arriving after the script's run stop). A source's own events keep their order."""
    earlier: dict[tuple[Any, Any], list[tuple[int, int]]] = {}  # (src, boot) -> [(seq, row)]
    for r in rows:
        if r["seq"] is not None:
            earlier.setdefault((r["src"], r["boot"]), []).append((r["seq"], r["row"]))
    keys: dict[int, float] = {}
    last_of_source: dict[tuple[Any, Any], float] = {}
    for r in rows:
        key = float(r["row"])
        causes = []
        for parent in json.loads(r["parents"] or "[]"):
            cause = db.execute("SELECT src, boot, seq FROM messages WHERE msg_id = ?", (parent,)).fetchone()
            if cause is not None and cause["seq"] is not None:
                before = earlier.get((cause["src"], cause["boot"]), ())
                causes.append(max((row for seq, row in before if seq < cause["seq"]), default=0) + 0.5)
        if causes:
            key = max(causes)
        source = (r["src"], r["boot"])
        key = max(key, last_of_source.get(source, key))
        keys[r["row"]] = last_of_source[source] = key
    return sorted(rows, key=lambda r: keys[r["row"]])


class _Builder:
    def __init__(self) -> None:
        self.structure = Structure()
        self.by_id: dict[str, dict[str, Any]] = {}
        self.open: list[dict[str, Any]] = []  # innermost last
        self.numbers = {"run": 0, "trial": 0}

    def take(self, row: int, payload: Any, src: str | None, t: float) -> None:
        try:
            event = parse(StructureEvent, payload)
        except ContractError as exc:
            self.problem(row, str(exc))
            return
        explicit = isinstance(payload, dict) and "parent" in payload
        if event.event == "start":
            self.start(row, event, explicit, src, t)
        elif event.event == "stop":
            self.stop(row, event, t)
        else:
            self.mark(row, event, explicit, src, t)

    def problem(self, row: int, reason: str) -> None:
        self.structure.problems.append({"row": row, "reason": reason})

    def parent(self, row: int, event: StructureEvent, explicit: bool, kinds: tuple[str, ...]) -> str | None:
        if explicit:
            if event.parent is not None and event.parent not in self.by_id:
                self.problem(row, f"parent {event.parent!r} is no run or trial started before")
            return event.parent
        inner = [e for e in self.open if e["kind"] in kinds]
        return inner[-1]["id"] if inner else None

    def start(self, row: int, event: StructureEvent, explicit: bool, src: str | None, t: float) -> None:
        kind = event.kind or "run"
        entry_id = event.id or f"{kind}@{row}"
        if entry_id in self.by_id:
            self.problem(row, f"start of id {entry_id!r}, which started before; not used")
            return
        self.numbers[kind] += 1
        entry = {
            "id": entry_id,
            "kind": kind,
            "number": self.numbers[kind],
            "name": event.name or kind,
            "parent": self.parent(row, event, explicit, ("run",)),
            "start": t,
            "stop": None,
            "status": "open",
            "error": None,
            "metadata": event.metadata,
            "src": src,
        }
        self.by_id[entry_id] = entry
        self.open.append(entry)
        self.structure.entries.append(entry)

    def stop(self, row: int, event: StructureEvent, t: float) -> None:
        candidates = [
            e
            for e in self.open
            if (event.id is None or e["id"] == event.id)
            and (event.kind is None or e["kind"] == event.kind)
            and (event.name is None or e["name"] == event.name)
        ]
        if not candidates:
            named = {k: v for k, v in (("id", event.id), ("kind", event.kind), ("name", event.name)) if v}
            self.problem(row, f"stop of no open run or trial ({named or 'none is open'}); not used")
            return
        entry = candidates[-1]
        entry.update(stop=t, status=event.status or "ok", error=event.error)
        self.open.remove(entry)

    def mark(self, row: int, event: StructureEvent, explicit: bool, src: str | None, t: float) -> None:
        if event.name is None:
            self.problem(row, "a marker without a name; not used")
            return
        parent = self.parent(row, event, explicit, ("run", "trial"))
        self.structure.markers.append(
            {"name": event.name, "t": t, "parent": parent, "fields": event.metadata, "src": src}
        )
