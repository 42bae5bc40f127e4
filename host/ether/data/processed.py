"""What a subscriber instance has processed, and what it missed: catch-up and accounting (docs/data.md).

Each instance keeps, in its outbox file, the (src, boot, seq) of every numbered message it handled
and the topics it subscribes to. Handling a message is one transaction: its processed mark and the
messages its handler published commit together, so a kill -9 either keeps both or neither.
What the session store holds on those topics and the instance has not processed is what it missed:
it catches up on it from the store (at start, and at the session's end), and the seal counts the
rest per instance.

Its marks also go to the store of record, whichever host the instance runs on: the outbox writer
turns the marks not reported yet into a :class:`ProcessedReport`, a durable message of the
instance's own report stream (boot ``<boot>-processed``), written to the outbox in the same
transaction as it takes them from the ``unreported`` table. So each mark on disk is either still
unreported or in a report the outbox keeps until the recorder has it. The seal counts, per instance,
what the store holds on its topics beyond what its ledger here or its reports say it processed
(:func:`account`); when an instance's reports are incomplete (its host was lost before its last
ones arrived) that count is ``unknown``, never taken as processed.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeGuard

from ether.contract.messages import RANGES_LIMIT, ProcessedReport
from ether.contract.topics import matches, unshared
from ether.contract.wire import SEQ_LIMIT, Meta
from ether.data.recorder.store import STORE_FILE, connect, payload_of

LATEST_SUFFIX = "-latest"  # the boot suffix of a `latest` stream's own sequence (docs/data.md)
REPORTS_SUFFIX = "-processed"  # the boot suffix of an instance's stream of processed reports
REPORT_INTERVAL = 0.25  # seconds: how long marks may wait on disk before they are reported
HIGH_LIMIT = 10_000  # (src, boot) pairs whose highest processed seq is kept in memory

SCHEMA = """
CREATE TABLE IF NOT EXISTS processed (
    src TEXT NOT NULL, boot TEXT NOT NULL, seq INTEGER NOT NULL, PRIMARY KEY (src, boot, seq)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS subscribed (topic TEXT PRIMARY KEY) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS unreported (
    src TEXT NOT NULL, boot TEXT NOT NULL, seq INTEGER NOT NULL, PRIMARY KEY (src, boot, seq)
) WITHOUT ROWID;
"""


class Processed:
    """The processed ledger of one instance, in its outbox database (the caller commits)."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db
        db.executescript(SCHEMA)
        # something to report: marks an earlier process of this instance kept but did not report
        self.due = db.execute("SELECT 1 FROM unreported LIMIT 1").fetchone() is not None
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
        self.due = self.due or bool(user_topics)  # its first report says what it is meant to process

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
        keys = [(m.src, m.boot, m.seq) for m in metas]
        self.db.executemany("INSERT OR IGNORE INTO processed VALUES (?, ?, ?)", keys)
        self.db.executemany("INSERT OR IGNORE INTO unreported VALUES (?, ?, ?)", keys)
        self.due = self.due or bool(keys)

    def take_report(self, instance: str) -> ProcessedReport | None:
        """The next report of what was marked and not reported yet (at most RANGES_LIMIT ranges),
        those marks taken out of ``unreported`` (inside the caller's transaction, which also keeps
        the report); None when there is nothing to report."""
        if not self.due:
            return None
        ranges: dict[str, dict[str, list[tuple[int, int]]]] = {}
        count = 0
        for src, boot, seq in self.db.execute(
            "SELECT src, boot, seq FROM unreported ORDER BY src, boot, seq"
        ):
            spans = ranges.setdefault(src, {}).setdefault(boot, [])
            if spans and spans[-1][1] + 1 == seq:
                spans[-1] = (spans[-1][0], seq)
                continue
            if count == RANGES_LIMIT or len(ranges) > RANGES_LIMIT:
                if not spans:
                    del ranges[src][boot]
                    if not ranges[src]:
                        del ranges[src]
                break
            spans.append((seq, seq))
            count += 1
        else:
            self.due = False
        for src, boots in ranges.items():
            for boot, spans in boots.items():
                self.db.executemany(
                    "DELETE FROM unreported WHERE src = ? AND boot = ? AND seq BETWEEN ? AND ?",
                    [(src, boot, a, b) for a, b in spans],
                )
        subscribes = [t for (t,) in self.db.execute("SELECT topic FROM subscribed ORDER BY topic")]
        if not subscribes and not ranges:
            return None
        return ProcessedReport(instance=instance, subscribes=subscribes[:RANGES_LIMIT], processed=ranges)


def numbered(meta: Meta | None) -> TypeGuard[Meta]:
    """A message the ledger can account for: it names its source, boot and sequence number."""
    return meta is not None and meta.seq > 0 and bool(meta.src) and bool(meta.boot)


@dataclass
class Missed:
    """A stored message an instance has not processed, rebuilt as it was sent."""

    topic: str  # the user's topic
    payload: Any
    meta: Meta


def _unprocessed(run_dir: Path, ledger: Path) -> Iterator[sqlite3.Row]:
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
    rows = db.execute(
        "SELECT topic, payload, data, msg_id, src, boot, seq, parents, t_sent FROM messages m"
        f" WHERE topic IN ({','.join('?' * len(topics))}) AND seq IS NOT NULL"
        f" AND boot NOT LIKE '%{LATEST_SUFFIX}'"
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
        for r in _unprocessed(run_dir, ledger)
    ]


@dataclass
class Unprocessed:
    """What one instance is not known to have processed: counts and seq ranges per (src, boot)."""

    durable: int = 0  # known not processed
    latest: int = 0  # a `latest` stream may lose samples: counted, but not a reason for `incomplete`
    unknown: int = 0  # durable, not reported processed by an instance whose reports are incomplete
    ranges: dict[str, dict[str, list[list[int]]]] = field(default_factory=dict)  # src -> boot -> [[a, b]]


@dataclass
class Handled:
    """What one instance processed, as merged seq ranges per (src, boot), and the filters it processes."""

    filters: set[str] = field(default_factory=set)
    spans: dict[tuple[str, str], list[tuple[int, int]]] = field(default_factory=dict)
    exact: bool = False  # its ledger is here, or its reports all reached the store

    def add(self, src: str, boot: str, first: int, last: int) -> None:
        self.spans.setdefault((src, boot), []).append((first, last))

    def merge(self) -> None:
        for key, spans in self.spans.items():
            merged: list[tuple[int, int]] = []
            for a, b in sorted(spans):
                if merged and a <= merged[-1][1] + 1:
                    merged[-1] = (merged[-1][0], max(b, merged[-1][1]))
                else:
                    merged.append((a, b))
            self.spans[key] = merged

    def not_handled(self, src: str, boot: str) -> list[tuple[int, int]]:
        """The seq ranges of (src, boot) between and around its merged handled ranges."""
        gaps, next_seq = [], 1
        for a, b in self.spans.get((src, boot), ()):
            if a > next_seq:
                gaps.append((next_seq, a - 1))
            next_seq = max(next_seq, b + 1)
        return [*gaps, (next_seq, SEQ_LIMIT - 1)]


def handled(run_dir: Path, db: sqlite3.Connection) -> dict[str, Handled]:
    """Per instance, what it processed: from the ledgers in this run's outbox folder (the instances
    of this host) and from the processed reports in the store ``db`` (the instances of every host);
    the topics it processes also from its stored ``instance_ready`` status."""
    result: dict[str, Handled] = {}
    for ledger in sorted((run_dir / "outbox").glob("*.sqlite")):
        try:
            mine = sqlite3.connect(f"file:{ledger}?mode=ro", uri=True, timeout=10)
            try:
                filters = [t for (t,) in mine.execute("SELECT topic FROM subscribed")]
                marks = mine.execute("SELECT src, boot, seq FROM processed").fetchall()
            finally:
                mine.close()
        except sqlite3.Error:  # an outbox of a source that subscribes to nothing has no ledger tables
            continue
        if not filters:
            continue
        mine_handled = result.setdefault(ledger.stem, Handled(exact=True))
        mine_handled.filters.update(filters)
        for src, boot, seq in marks:
            mine_handled.add(src, boot, seq, seq)
    try:
        reports = db.execute("SELECT src, subscribes, ranges FROM processed_reports").fetchall()
    except sqlite3.OperationalError:  # a store written before instances reported
        reports = []
    for instance, subscribes, ranges in reports:
        reported = result.setdefault(instance, Handled())
        reported.filters.update(json.loads(subscribes))
        for src, boots in json.loads(ranges).items():
            for boot, spans in boots.items():
                for a, b in spans:
                    reported.add(src, boot, a, b)
    for instance, detail in db.execute("SELECT src, detail FROM events WHERE kind = 'instance_ready'"):
        # its status names its topics: an instance killed before its first report is accounted too
        filters = json.loads(detail).get("subscribes") or []
        if isinstance(filters, list) and instance:
            accounted = {f for f in filters if isinstance(f, str) and unshared(f) == f}
            if accounted:
                result.setdefault(instance, Handled()).filters.update(accounted)
    for instance, reported in result.items():
        reported.merge()
        reported.exact = reported.exact or _reports_complete(db, instance)
    return result


def _reports_complete(db: sqlite3.Connection, instance: str) -> bool:
    """Whether every report of ``instance`` is in the store: no report stream of it has a gap, and
    its last one's closing report (sent after its last report) arrived."""
    boots = db.execute(
        "SELECT boot FROM streams WHERE src = ? AND boot LIKE ? ORDER BY first_seen",
        (instance, f"%{REPORTS_SUFFIX}"),
    ).fetchall()
    if not boots:
        return False
    if db.execute(
        "SELECT 1 FROM gaps WHERE src = ? AND boot LIKE ? LIMIT 1", (instance, f"%{REPORTS_SUFFIX}")
    ).fetchone():
        return False
    last = boots[-1][0]
    closings = db.execute("SELECT detail FROM events WHERE kind = 'closing' AND src = ?", (instance,))
    return any(last in json.loads(detail).get("boots", {}) for (detail,) in closings)


def account(run_dir: Path) -> dict[str, Unprocessed]:
    """Per subscriber instance of any host, what the store holds on its topics that it is not known
    to have processed: what the seal records, and the one place to ask while a session runs (an
    instance of another host counts as ``unknown`` until its last report and closing arrive)."""
    store = run_dir / STORE_FILE
    if not store.exists():
        return {}
    db = connect(store, readonly=True)
    try:
        instances = handled(run_dir, db)
        stored = [t for (t,) in db.execute("SELECT DISTINCT topic FROM messages")]
        result: dict[str, Unprocessed] = {}
        for name, done in sorted(instances.items()):
            topics = [t for t in stored if any(matches(f, t) for f in done.filters)]
            if not topics:
                continue
            on_topics = f"topic IN ({','.join('?' * len(topics))})"
            streams = db.execute(
                f"SELECT DISTINCT src, boot FROM messages WHERE {on_topics} AND seq IS NOT NULL", topics
            )
            left = Unprocessed()
            for src, boot in sorted((r[0], r[1]) for r in streams):
                for first, last in done.not_handled(src, boot):  # only the rows outside its ranges are read
                    for (seq,) in db.execute(
                        f"SELECT seq FROM messages WHERE src = ? AND boot = ? AND seq BETWEEN ? AND ?"
                        f" AND {on_topics} ORDER BY seq",
                        (src, boot, first, last, *topics),
                    ):
                        if boot.endswith(LATEST_SUFFIX):
                            left.latest += 1
                        elif done.exact:
                            left.durable += 1
                        else:
                            left.unknown += 1
                        ranges = left.ranges.setdefault(src, {}).setdefault(boot, [])
                        if ranges and ranges[-1][1] + 1 == seq:
                            ranges[-1][1] = seq
                        else:
                            ranges.append([seq, seq])
            if left.ranges:
                result[name] = left
        return result
    finally:
        db.close()
