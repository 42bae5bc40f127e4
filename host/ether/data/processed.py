"""What a subscriber instance has processed, and what it missed: catch-up and accounting (docs/data.md).

Each instance keeps, in its outbox file, the (src, boot, seq) of every numbered message it handled
and the topics it subscribes to. Handling a message is one transaction: its processed mark and the
messages its handler published commit together, so a kill -9 either keeps both or neither.
What the session store holds on those topics and the instance has not processed is what it missed:
it catches up on it from the store (at start, and at the session's end), and the seal counts the
rest per instance.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeGuard

from ether.contract.topics import matches
from ether.contract.wire import Meta
from ether.data.recorder.store import STORE_FILE, connect, payload_of

LATEST_SUFFIX = "-latest"  # the boot suffix of a `latest` stream's own sequence (docs/data.md)
HIGH_LIMIT = 10_000  # (src, boot) pairs whose highest processed seq is kept in memory

SCHEMA = """
CREATE TABLE IF NOT EXISTS processed (
    src TEXT NOT NULL, boot TEXT NOT NULL, seq INTEGER NOT NULL, PRIMARY KEY (src, boot, seq)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS subscribed (topic TEXT PRIMARY KEY) WITHOUT ROWID;
"""


class Processed:
    """The processed ledger of one instance, in its outbox database (the caller commits)."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db
        db.executescript(SCHEMA)
        # per (src, boot), the highest seq marked: a live message above it was not handled yet, which
        # spares the lookup on disk (this process is the ledger's only writer; an earlier one's marks
        # are read here). Bounded: a (src, boot) beyond the limit is looked up on disk.
        self._high: dict[tuple[str, str], int] = {
            (src, boot): seq
            for src, boot, seq in db.execute("SELECT src, boot, MAX(seq) FROM processed GROUP BY src, boot")
        }
        self._complete = len(self._high) < HIGH_LIMIT

    def subscribe(self, user_topics: list[str]) -> None:
        self.db.executemany("INSERT OR IGNORE INTO subscribed VALUES (?)", [(t,) for t in user_topics])

    def new(self, meta: Meta) -> bool:
        """Whether ``meta`` is above every mark of its (src, boot), so certainly not handled yet
        (known without reading the disk)."""
        high = self._high.get((meta.src, meta.boot))
        return self._complete if high is None else meta.seq > high

    def seen(self, meta: Meta) -> bool:
        row = self.db.execute(
            "SELECT 1 FROM processed WHERE src = ? AND boot = ? AND seq = ?", (meta.src, meta.boot, meta.seq)
        ).fetchone()
        return row is not None

    def marking(self, meta: Meta) -> None:
        """A mark about to be written (before its transaction): ``seen`` must not skip the disk for it."""
        key = (meta.src, meta.boot)
        high = self._high.get(key)
        if high is not None:
            self._high[key] = max(high, meta.seq)
        elif len(self._high) < HIGH_LIMIT:
            self._high[key] = meta.seq
        else:
            self._complete = False

    def mark(self, metas: list[Meta]) -> None:
        self.db.executemany(
            "INSERT OR IGNORE INTO processed VALUES (?, ?, ?)", [(m.src, m.boot, m.seq) for m in metas]
        )


def numbered(meta: Meta | None) -> TypeGuard[Meta]:
    """A message the ledger can account for: it names its source, boot and sequence number."""
    return meta is not None and meta.seq > 0 and bool(meta.src) and bool(meta.boot)


@dataclass
class Missed:
    """A stored message an instance has not processed, rebuilt as it was sent."""

    topic: str  # the user's topic
    payload: Any
    meta: Meta


def _unprocessed(run_dir: Path, ledger: Path, durable_only: bool) -> Iterator[sqlite3.Row]:
    store = run_dir / STORE_FILE
    if not store.exists() or not ledger.exists():
        return iter(())
    db = connect(store, readonly=True)
    db.row_factory = sqlite3.Row
    db.execute("ATTACH DATABASE ? AS mine", (f"file:{ledger}?mode=ro",))
    filters = [r[0] for r in db.execute("SELECT topic FROM mine.subscribed")]
    topics = [
        t for (t,) in db.execute("SELECT DISTINCT topic FROM messages") if any(matches(f, t) for f in filters)
    ]
    if not topics:
        db.close()
        return iter(())
    latest = f"AND boot NOT LIKE '%{LATEST_SUFFIX}'" if durable_only else ""
    rows = db.execute(
        "SELECT topic, payload, data, msg_id, src, boot, seq, parents, t_sent FROM messages m"
        f" WHERE topic IN ({','.join('?' * len(topics))}) AND seq IS NOT NULL {latest}"
        " AND NOT EXISTS (SELECT 1 FROM mine.processed p"
        "  WHERE p.src = m.src AND p.boot = m.boot AND p.seq = m.seq)"
        " ORDER BY row",
        topics,
    ).fetchall()
    db.close()
    return iter(rows)


def missed(run_dir: Path, ledger: Path) -> list[Missed]:
    """The durable messages in the session store, on the ledger's topics, that it has not processed."""
    return [
        Missed(
            r["topic"],
            payload_of(r),
            Meta(
                r["msg_id"] or "", r["src"], r["boot"], r["seq"], r["t_sent"] or 0.0, json.loads(r["parents"])
            ),
        )
        for r in _unprocessed(run_dir, ledger, durable_only=True)
    ]


@dataclass
class Unprocessed:
    """What one instance never processed: counts and seq ranges per (src, boot)."""

    durable: int = 0
    latest: int = 0  # a `latest` stream may lose samples: counted, but not a reason for `incomplete`
    ranges: dict[str, dict[str, list[list[int]]]] = field(default_factory=dict)  # src -> boot -> [[a, b]]


def account(run_dir: Path) -> dict[str, Unprocessed]:
    """Per instance (its outbox file), what the store holds on its topics that it never processed."""
    result: dict[str, Unprocessed] = {}
    for ledger in sorted((run_dir / "outbox").glob("*.sqlite")):
        try:
            rows = list(_unprocessed(run_dir, ledger, durable_only=False))
        except sqlite3.Error:  # an outbox of a source that subscribes to nothing has no ledger tables
            continue
        if not rows:
            continue
        left = result.setdefault(ledger.stem, Unprocessed())
        for r in sorted(rows, key=lambda r: (r["src"], r["boot"], r["seq"])):
            if r["boot"].endswith(LATEST_SUFFIX):
                left.latest += 1
            else:
                left.durable += 1
            ranges = left.ranges.setdefault(r["src"], {}).setdefault(r["boot"], [])
            if ranges and ranges[-1][1] + 1 == r["seq"]:
                ranges[-1][1] = r["seq"]
            else:
                ranges.append([r["seq"], r["seq"]])
    return result
