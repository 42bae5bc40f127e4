"""The session store: one SQLite file (WAL) per session run, schema version 2 (docs/data.md).

Why SQLite in WAL mode: one file a scientist can copy and open anywhere, crash-safe (a killed writer
leaves the last committed batch readable), queryable with SQL, and >100k rows/s with batched commits.

Tables:
  manifest  key -> JSON value: what ran (config, code identity, versions, host, start/stop, status)
  messages  one row per data message; a resend of (src, boot, seq) is ignored, never duplicated;
            arrays and bytes are kept raw in its ``data`` BLOB (``ether.contract.arrays``)
  streams   per (src, boot): highest contiguous seq saved and highest seq seen
  gaps      the gap ledger: sequence ranges of a (src, boot) that are missing right now
  events    what happened: restarts, new boots, gaps found and filled, forced ends, device schemas
  conflicts a second message with the (src, boot, seq) of a saved one but other content (never dropped)
  logs      every process's log lines (instances, recorder, broker, supervisors), ``log/<source>``
  processed_reports  what each subscriber instance (of any host) reported it processed
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pydantic_core

from ether.contract import arrays
from ether.contract.messages import LOG_LEVELS, LogRecord, ProcessedReport

SCHEMA_VERSION = 2  # 2: messages.data (arrays and bytes)
STORE_FILE = "session.sqlite"
# 16 KiB pages: arrays (BLOBs over many pages) write ~1.6x faster than with 4 KiB, small rows as fast
PAGE_SIZE = 16384

# Manifest statuses. `running` in a store nobody writes to any more means the session crashed.
RUNNING, COMPLETE, INCOMPLETE, CRASHED = "running", "complete", "incomplete", "crashed"
LEVELS = {name: 10 * (i + 1) for i, name in enumerate(LOG_LEVELS)}  # as logging numbers them
FAILED = "failed"  # the session did not start (the manifest says why): no data of it is expected

SCHEMA = """
CREATE TABLE IF NOT EXISTS manifest (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL                 -- JSON
);
CREATE TABLE IF NOT EXISTS messages (
    row        INTEGER PRIMARY KEY,     -- arrival order at the recorder
    topic      TEXT NOT NULL,           -- the user's topic (session prefix removed)
    payload    TEXT NOT NULL,           -- the message as JSON, without the _ether metadata
    msg_id     TEXT,                    -- _ether.id; NULL for a foreign client's plain JSON
    src        TEXT,                    -- _ether.src: the instance, device or script that sent it
    boot       TEXT,                    -- _ether.boot: a new value means the source restarted
    seq        INTEGER,                 -- _ether.seq: gap-free per (src, boot); NULL when not numbered
    parents    TEXT NOT NULL DEFAULT '[]',  -- JSON list of the msg_ids whose handling produced it
    t_sent     REAL,                    -- _ether.t: sender's clock, seconds since the epoch
    t_recorded REAL NOT NULL,           -- recorder's clock when it was received
    data       BLOB,                    -- the payload's arrays and bytes, raw; NULL for plain JSON
    UNIQUE (src, boot, seq)
);
CREATE INDEX IF NOT EXISTS messages_by_topic ON messages (topic, row);
CREATE INDEX IF NOT EXISTS messages_by_id ON messages (msg_id);
CREATE INDEX IF NOT EXISTS messages_by_block_time  -- a time slice of a topic's blocks reads only those
    ON messages (topic, json_extract(payload, '$.t0')) WHERE data IS NOT NULL;
CREATE TABLE IF NOT EXISTS streams (
    src        TEXT NOT NULL,
    boot       TEXT NOT NULL,
    contiguous INTEGER NOT NULL,        -- every seq 1..contiguous is saved
    max_seq    INTEGER NOT NULL,        -- highest seq saved
    first_seen REAL NOT NULL,
    last_seen  REAL NOT NULL,
    PRIMARY KEY (src, boot)
);
CREATE TABLE IF NOT EXISTS gaps (
    src         TEXT NOT NULL,
    boot        TEXT NOT NULL,
    first_seq   INTEGER NOT NULL,
    last_seq    INTEGER NOT NULL,
    detected_at REAL NOT NULL,
    cause       TEXT NOT NULL           -- 'skipped' (a later seq arrived first) or 'tail' (reported at the end)
);
CREATE TABLE IF NOT EXISTS conflicts (
    src        TEXT NOT NULL,           -- the (src, boot, seq) it shares with a row of messages
    boot       TEXT NOT NULL,
    seq        INTEGER NOT NULL,
    topic      TEXT NOT NULL,           -- then as in messages: what this other message said
    payload    TEXT NOT NULL,
    msg_id     TEXT,
    parents    TEXT NOT NULL DEFAULT '[]',
    t_sent     REAL,
    t_recorded REAL NOT NULL,
    data       BLOB                     -- its arrays and bytes, raw; NULL for plain JSON
);
CREATE INDEX IF NOT EXISTS conflicts_by_numbers ON conflicts (src, boot, seq);
CREATE TABLE IF NOT EXISTS logs (
    t          REAL NOT NULL,           -- when it was logged, sender's clock
    src        TEXT NOT NULL,           -- the process: instance name, recorder, broker, a supervisor
    level      TEXT NOT NULL,           -- DEBUG, INFO, WARNING, ERROR, CRITICAL
    levelno    INTEGER NOT NULL,        -- 10, 20, 30, 40, 50 (0: a level logging does not name)
    logger     TEXT NOT NULL,
    message    TEXT NOT NULL,
    traceback  TEXT,
    pid        INTEGER NOT NULL,
    host       TEXT NOT NULL,
    dropped    INTEGER,                 -- on a 'lines dropped' line: how many were not sent
    t_recorded REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS logs_by_time ON logs (t);
CREATE TABLE IF NOT EXISTS processed_reports (
    src        TEXT NOT NULL,           -- the instance that reports what it processed
    boot       TEXT NOT NULL,           -- its report stream: <its boot>-processed
    seq        INTEGER NOT NULL,
    subscribes TEXT NOT NULL,           -- JSON list of the user topic filters it processes
    ranges     TEXT NOT NULL,           -- JSON {src: {boot: [[first, last], ...]}}: what it handled
    t_recorded REAL NOT NULL,
    PRIMARY KEY (src, boot, seq)
);
CREATE TABLE IF NOT EXISTS events (
    t      REAL NOT NULL,
    kind   TEXT NOT NULL,               -- recorder_start, restart, new_boot, gap, gap_filled, forced_end, ...
    src    TEXT,
    boot   TEXT,
    detail TEXT NOT NULL DEFAULT '{}'   -- JSON
);
"""


class StoreError(RuntimeError):
    """A session store that cannot be opened or read (names the file and what to do)."""


@dataclass
class Row:
    """One message as the recorder saves it."""

    topic: str
    payload: str
    msg_id: str | None
    src: str | None
    boot: str | None
    seq: int | None
    parents: list[str]
    t_sent: float | None
    t_recorded: float
    # the data section of a payload with arrays or bytes (``payload_text``)
    data: bytes | memoryview | None = None

    def content(self) -> tuple:
        """What two copies of one message must share (a resend is byte-identical), arrays and bytes too."""
        return (self.topic, self.payload, self.msg_id, json.dumps(self.parents), self.t_sent, self.data)

    def values(self) -> tuple:
        return (self.topic, self.payload, self.msg_id, self.src, self.boot, self.seq, *self.content()[3:])


def same_content(a: tuple, b: tuple) -> bool:
    """Whether two :meth:`Row.content` tuples are equal, a data section compared as bytes (a
    memoryview is compared item by item: 1.3 ms for 800 kB against 0.25 ms for a copy and a compare)."""
    return a[:-1] == b[:-1] and _as_bytes(a[-1]) == _as_bytes(b[-1])


def _as_bytes(data: bytes | memoryview | None) -> bytes | None:
    return data.tobytes() if isinstance(data, memoryview) else data


def payload_text(payload: Any) -> tuple[str, bytes | memoryview | None]:
    """How a payload is stored: its JSON text (references in place of arrays and bytes) and their raw
    bytes, the data section of Ether's binary encoding; (JSON text, None) for a plain JSON payload.
    A data section of one array is a view of it (a frame is not copied before SQLite copies it)."""
    if not arrays.holds_binary(payload):
        return pydantic_core.to_json(payload).decode(), None
    header, parts = arrays.split(payload)
    data = (parts[0] if len(parts) == 1 else b"".join(parts)) if parts else None
    return pydantic_core.to_json(header).decode(), data


def payload_of(row: sqlite3.Row) -> Any:
    """The payload of a stored message, its arrays and bytes back in place (a store of version 1 has
    no ``data`` column)."""
    payload = json.loads(row["payload"])
    data = row["data"] if "data" in row.keys() else None
    return payload if data is None else arrays.join(payload, data)


def connect(path: str | Path, readonly: bool = False) -> sqlite3.Connection:
    """Open a store file; the writer creates the schema, readers only look."""
    path = Path(path)
    if path.is_dir():
        path = path / STORE_FILE
    if readonly:
        if not path.exists():
            raise StoreError(f"{path}: no session store here (expected a folder under ether_data/)")
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30, check_same_thread=False)
    else:
        path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(path, timeout=30, isolation_level=None, check_same_thread=False)
        db.execute(f"PRAGMA page_size={PAGE_SIZE}")  # before WAL: only a new file takes it
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL: survives a killed process, commits fast
        db.executescript(SCHEMA)
        version = db.execute("PRAGMA user_version").fetchone()[0]
        if version == 0:
            db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        elif version != SCHEMA_VERSION:
            raise StoreError(f"{path}: store schema version {version}, this Ether reads {SCHEMA_VERSION}")
    db.row_factory = sqlite3.Row
    return db


class Store:
    """Writes one session store. Only the recorder writes messages; the session writes the manifest."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path) / STORE_FILE if Path(path).suffix != ".sqlite" else Path(path)
        self.db = connect(self.path)

    def close(self) -> None:
        self.db.close()

    # -- manifest ---------------------------------------------------------------------------
    def set_manifest(self, **values: Any) -> None:
        with self.transaction():
            self.db.executemany(
                "INSERT OR REPLACE INTO manifest (key, value) VALUES (?, ?)",
                [(k, json.dumps(v, default=str)) for k, v in values.items()],
            )

    def manifest(self) -> dict[str, Any]:
        return read_manifest(self.db)

    # -- messages ---------------------------------------------------------------------------
    def transaction(self) -> Transaction:
        return Transaction(self.db)

    def insert(self, rows: Iterable[Row]) -> None:
        """Insert inside the caller's transaction; a row already saved (same src, boot, seq) is skipped."""
        self.db.executemany(
            "INSERT OR IGNORE INTO messages"
            " (topic, payload, msg_id, src, boot, seq, parents, t_sent, data, t_recorded)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [(*r.values(), r.t_recorded) for r in rows],
        )

    def saved_content(self, src: str, boot: str, seq: int) -> tuple | None:
        """The :meth:`Row.content` of the saved message numbered (src, boot, seq), if any."""
        return self.db.execute(
            "SELECT topic, payload, msg_id, parents, t_sent, data FROM messages"
            " WHERE src = ? AND boot = ? AND seq = ?",
            (src, boot, seq),
        ).fetchone()

    def conflict(self, row: Row) -> bool:
        """Keep a message that shares its numbers with a saved one but not its content (once); whether
        it was new (a resend of a kept conflict is not)."""
        same = (row.src, row.boot, row.seq, *row.content())  # IS: NULL (no msg_id, no data) matches NULL
        return (
            1
            == self.db.execute(
                "INSERT INTO conflicts (src, boot, seq, topic, payload, msg_id, parents, t_sent, data, t_recorded)"
                " SELECT ?, ?, ?, ?, ?, ?, ?, ?, ?, ? WHERE NOT EXISTS (SELECT 1 FROM conflicts"
                " WHERE src = ? AND boot = ? AND seq = ? AND topic IS ? AND payload IS ? AND msg_id IS ?"
                " AND parents IS ? AND t_sent IS ? AND data IS ?)",
                (*same, row.t_recorded, *same),
            ).rowcount
        )

    def save_stream(
        self, src: str, boot: str, contiguous: int, max_seq: int, first_seen: float, last_seen: float
    ) -> None:
        self.db.execute(
            "INSERT OR REPLACE INTO streams VALUES (?, ?, ?, ?, ?, ?)",
            (src, boot, contiguous, max_seq, first_seen, last_seen),
        )

    def save_gaps(self, src: str, boot: str, gaps: list[tuple[int, int, float, str]]) -> None:
        """Replace the open gaps of one (src, boot) by ``[(first, last, detected_at, cause)]``."""
        self.db.execute("DELETE FROM gaps WHERE src = ? AND boot = ?", (src, boot))
        self.db.executemany(
            "INSERT INTO gaps VALUES (?, ?, ?, ?, ?, ?)", [(src, boot, a, b, t, c) for a, b, t, c in gaps]
        )

    def processed_report(self, src: str, boot: str, seq: int, report: ProcessedReport, t: float) -> None:
        """One instance's report of what it processed, inside the caller's transaction (once)."""
        self.db.execute(
            "INSERT OR IGNORE INTO processed_reports VALUES (?, ?, ?, ?, ?, ?)",
            (src, boot, seq, json.dumps(report.subscribes), json.dumps(report.processed), t),
        )

    def log(self, src: str, line: LogRecord, t_recorded: float) -> None:
        """One log line of process ``src``, inside the caller's transaction."""
        self.db.execute(
            "INSERT INTO logs VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                line.t,
                src,
                line.level,
                LEVELS.get(line.level, 0),
                line.logger,
                line.message,
                line.traceback,
                line.pid,
                line.host,
                line.dropped,
                t_recorded,
            ),
        )

    def event(self, kind: str, src: str | None = None, boot: str | None = None, **detail: Any) -> None:
        self.db.execute(
            "INSERT INTO events VALUES (?, ?, ?, ?, ?)",
            (time.time(), kind, src, boot, json.dumps(detail, default=str)),
        )


class Transaction:
    """``with store.transaction():`` BEGIN … COMMIT (ROLLBACK on error)."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db

    def __enter__(self) -> sqlite3.Connection:
        self.db.execute("BEGIN IMMEDIATE")
        return self.db

    def __exit__(self, exc_type, exc, tb) -> None:
        self.db.execute("ROLLBACK" if exc_type else "COMMIT")


# -- reading ------------------------------------------------------------------------------------


def read_manifest(db: sqlite3.Connection) -> dict[str, Any]:
    return {row[0]: json.loads(row[1]) for row in db.execute("SELECT key, value FROM manifest")}


def open_gaps(db: sqlite3.Connection) -> list[dict[str, Any]]:
    return [dict(r) for r in db.execute("SELECT * FROM gaps ORDER BY src, boot, first_seq")]


def conflicts(db: sqlite3.Connection) -> list[dict[str, Any]]:
    """The conflicting duplicates, oldest first (none in a store written before the table existed)."""
    try:
        return [dict(r) for r in db.execute("SELECT * FROM conflicts ORDER BY rowid")]
    except sqlite3.OperationalError:  # no such table
        return []


def read_logs(
    db: sqlite3.Connection,
    src: str | None = None,
    level: str | None = None,
    since: float | None = None,
    after: int = 0,
) -> list[dict[str, Any]]:
    """Log lines in the order they were logged (``rowid`` > ``after``), of one process ``src``, at
    ``level`` or above, logged at or after ``since``; none in a store written before the table existed."""
    where: list[str] = ["rowid > ?"]
    params: list[Any] = [after]
    if src is not None:
        where.append("src = ?")
        params.append(src)
    if level is not None:
        where.append("levelno >= ?")
        params.append(LEVELS[level.upper()])
    if since is not None:
        where.append("t >= ?")
        params.append(since)
    try:
        rows = db.execute(f"SELECT rowid, * FROM logs WHERE {' AND '.join(where)} ORDER BY t, rowid", params)
        return [dict(r) for r in rows]
    except sqlite3.OperationalError:  # no such table
        return []


def log_sources(db: sqlite3.Connection) -> list[str]:
    """The processes that have lines in the store's ``logs``, by name."""
    try:
        return [r[0] for r in db.execute("SELECT DISTINCT src FROM logs ORDER BY src")]
    except sqlite3.OperationalError:  # no such table
        return []


def missing_count(db: sqlite3.Connection) -> int:
    return db.execute("SELECT COALESCE(SUM(last_seq - first_seq + 1), 0) FROM gaps").fetchone()[0]


def summary(db: sqlite3.Connection) -> dict[str, Any]:
    """Status, times, message count and gaps of one store, for ``ether sessions``."""
    manifest = read_manifest(db)
    return {
        "run_id": manifest.get("run_id"),
        "session": manifest.get("session"),
        "status": manifest.get("status"),
        "started_at": manifest.get("started_at"),
        "stopped_at": manifest.get("stopped_at"),
        "messages": db.execute("SELECT COUNT(*) FROM messages").fetchone()[0],
        "topics": db.execute("SELECT COUNT(DISTINCT topic) FROM messages").fetchone()[0],
        "missing": missing_count(db),
        "unsaved": manifest.get("unsaved", 0),
        "conflicts": len(conflicts(db)),
        # durable, all instances: known unprocessed, and not known to be processed (docs/data.md)
        "unprocessed": sum((manifest.get("unprocessed") or {}).values())
        + sum((manifest.get("unknown_processed") or {}).values()),
    }


def find_stores(root: str | Path) -> list[Path]:
    """Every session store under a data folder, oldest first (run ids start with the start time)."""
    root = Path(root)
    if not root.is_dir():
        return []
    return sorted(p for p in root.glob(f"*/{STORE_FILE}"))
