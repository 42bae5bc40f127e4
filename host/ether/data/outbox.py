"""Publishing data messages: stamp, keep durable ones in an outbox on disk until the recorder has them.

A message of a ``durable`` stream is written to the publisher's outbox file *before* it is sent, and
deleted when the recorder acknowledges it (``{boot: seq}`` on ``ether/<s>/recorder/ack/<src>``).
Writing is a group commit: ``publish`` queues the message and returns; the outbox's writer thread
writes everything queued since its last round (and deletes what was acknowledged) in one
transaction, then sends it, in seq order. So a message is on disk before any process can receive
it; a kill -9 loses at most what was queued and never sent (a handler's input is then not marked
processed either, and is handled again). What is not acknowledged is sent again -- to the recorder
only, on ``ether/<s>/recorder/resend/<topic>``, with a bounded window of messages the broker has not
confirmed -- when acknowledgements stall (a reconnect, a recorder restart) and, by the next process
of the same instance, after a kill. The broker is not trusted to redeliver (amqtt
0.12.1 does not). A ``latest`` stream is sent at QoS 0 with its own sequence (boot ``<boot>-latest``),
so its losses show in the recorder's gap ledger without holding back the durable stream's acks.
A subscriber's processed marks are reported the same way, in a durable stream of their own (boot
``<boot>-processed``, ``data/processed``), so the store of record knows them whatever host it is on.
Every message, and the closing report, is signed with the stamper's key (``transport/signing``).
"""

from __future__ import annotations

import logging
import os
import shutil
import sqlite3
import threading
import time
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ether.contract.messages import (
    ContractError,
    ErrorEvent,
    RecorderAck,
    RecorderClosing,
    RecorderStatus,
    parse,
)
from ether.contract.topics import Topics
from ether.contract.wire import Meta, Stamper, WireError, decode, encode
from ether.data.processed import LATEST_SUFFIX, REPORT_INTERVAL, REPORTS_SUFFIX, Processed, numbered
from ether.data.recorder.settings import LATEST, RecorderSettings
from ether.data.recorder.store import PAGE_SIZE, Transaction
from ether.processes import backoff
from ether.transport.broker import BrokerError
from ether.transport.bus import Bus, PayloadTooLarge
from ether.transport.signing import seal, sign
from ether.transport.waiting import Deadline

log = logging.getLogger("ether.outbox")

RESEND_AFTER = 1.0  # seconds without acknowledgement progress before unacknowledged messages are resent
RESEND_MAX_WAIT = 30.0  # resends that bring no progress back off up to this
RESEND_WINDOW = 1000  # resent messages the recorder has not acknowledged yet: a backlog never floods it
SEND_WINDOW = 2000  # live messages sent that the broker has not confirmed yet
WINDOW_BYTES = 64 * 2**20  # ... and their bytes
CONFIRM_TIMEOUT = 10.0  # a resend round stops when the recorder confirms nothing for this long
QUEUE_MESSAGES = 10_000  # published, not yet sent: publish() waits for room beyond this
QUEUE_BYTES = 64 * 2**20
SPOOL_FROM = 64 * 2**10  # a body of this many bytes or more is kept in the outbox's body files
SEGMENT_BYTES = 64 * 2**20  # ... each file up to about this size; deleted once all it holds is acknowledged
RECENT_HANDLED = 4096  # with no recorder, numbered messages remembered as handled (copies are dropped)
HOLD_SECONDS = 1.0  # a handler's first publication waits this long for it to return, then all is sent on

Message = tuple[Meta, str, bytes]  # (meta, broker topic, signed body)


class Bodies:
    """The outbox's large bodies (arrays, frames), appended to numbered files in ``<outbox>.bodies/``
    beside the SQLite file, which keeps where each one is: a megabyte written once to a file costs a
    fifth of an SQLite BLOB (written to the WAL, then to the database, then freed). Written before
    the row that names it commits, so it survives a kill -9 as the row does (the page cache)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        found = [int(p.name) for p in folder.iterdir() if p.name.isdigit()] if folder.is_dir() else []
        self.files = sorted(found)  # segments on disk (an earlier process's too)
        self.segment = max(found, default=0) + 1  # this process appends to files of its own
        self._fd: int | None = None
        self._size = 0

    def append(self, body: bytes) -> tuple[int, int]:
        """Write one body; returns (segment, offset). OSError (e.g. a full disk) as ``os.write``."""
        if self._fd is None or self._size >= SEGMENT_BYTES:
            self._rotate()
        assert self._fd is not None
        offset = self._size
        view = memoryview(body)
        while view:
            view = view[os.write(self._fd, view) :]
        self._size += len(body)
        return self.segment, offset

    def _rotate(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self.segment += 1
        self.folder.mkdir(exist_ok=True)
        self._fd = os.open(self.folder / str(self.segment), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        self._size = 0
        self.files.append(self.segment)

    def read(self, segment: int, offset: int, size: int) -> bytes | None:
        """One body; None if its file is gone or short (it cannot be sent again)."""
        try:
            with open(self.folder / str(segment), "rb") as f:
                f.seek(offset)
                body = f.read(size)
        except OSError:
            return None
        return body if len(body) == size else None

    def keep_from(self, oldest: int | None) -> None:
        """Delete the files before segment ``oldest`` (the oldest a row names; None: no row names one),
        except the one being written."""
        for segment in [s for s in self.files if s != self.segment and (oldest is None or s < oldest)]:
            (self.folder / str(segment)).unlink(missing_ok=True)
            self.files.remove(segment)

    def close(self, empty: bool) -> None:
        """Close the file being written; with ``empty`` (no row names a body), delete the folder."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        if empty:
            shutil.rmtree(self.folder, ignore_errors=True)


class Outbox:
    """An SQLite file of messages sent but not yet acknowledged by the recorder, per (boot, seq);
    bodies from SPOOL_FROM bytes on in its ``Bodies``. One connection shared by threads: ``lock``
    is held for each use, ``transaction()`` holds it."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.lock = threading.RLock()
        self.db = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=30)
        self.db.execute(f"PRAGMA page_size={PAGE_SIZE}")  # as the store's: arrays write faster
        self.db.execute("PRAGMA synchronous=OFF")  # survives a killed process; a power cut is not our case
        self.db.execute("PRAGMA journal_mode=WAL")  # after: switching under FULL syncs (~30 ms a start)
        self.db.execute(
            "CREATE TABLE IF NOT EXISTS outbox"
            " (boot TEXT, seq INTEGER, topic TEXT, body BLOB, PRIMARY KEY (boot, seq))"
        )
        self.db.execute(  # where a body kept in the body files is (its outbox row's body is NULL)
            "CREATE TABLE IF NOT EXISTS spooled (boot TEXT, seq INTEGER, segment INTEGER,"
            " offset INTEGER, size INTEGER, PRIMARY KEY (boot, seq))"
        )
        oldest = self.db.execute("SELECT MIN(segment) FROM spooled").fetchone()[0]
        self.bodies = Bodies(path.with_suffix(".bodies"))
        self.bodies.keep_from(oldest)  # files only acknowledged bodies were in (a killed process's)
        self._spooled = oldest is not None  # whether a row may name a body file
        self.acked: dict[str, int] = {}  # boot -> highest acknowledged seq
        self.last: dict[str, int] = {}  # boot -> highest seq written
        for boot, low, high in self.db.execute("SELECT boot, MIN(seq), MAX(seq) FROM outbox GROUP BY boot"):
            self.acked[boot], self.last[boot] = low - 1, high
        self._deleted = dict(self.acked)  # boot -> seq up to which the rows are deleted

    def add(self, messages: list[Message]) -> None:
        """Keep messages until acknowledged (inside the caller's transaction, if any); a large body
        is written to the body files first (OSError if it cannot be)."""
        rows: list[tuple[str, int, str, bytes | None]] = []
        spooled: list[tuple[str, int, int, int, int]] = []
        for meta, topic, body in messages:
            if len(body) >= SPOOL_FROM:
                segment, offset = self.bodies.append(body)
                spooled.append((meta.boot, meta.seq, segment, offset, len(body)))
                rows.append((meta.boot, meta.seq, topic, None))  # the spooled row says where it is
            else:
                rows.append((meta.boot, meta.seq, topic, body))
        if spooled:
            self._spooled = True
            self.db.executemany("INSERT OR REPLACE INTO spooled VALUES (?, ?, ?, ?, ?)", spooled)
        self.db.executemany("INSERT OR REPLACE INTO outbox VALUES (?, ?, ?, ?)", rows)
        for meta, _, _ in messages:
            self.last[meta.boot] = meta.seq
            self.acked.setdefault(meta.boot, meta.seq - 1)
            self._deleted.setdefault(meta.boot, meta.seq - 1)

    def ack(self, boot: str, seq: int) -> bool:
        """Forget what the recorder has of one boot, up to ``seq`` (its rows are deleted by the next
        ``delete_acknowledged``); an acknowledgement of more than was written (or of nothing new)
        is not believed."""
        if boot not in self.last or not self.acked[boot] < seq <= self.last[boot]:
            return False
        self.acked[boot] = seq
        return True

    @property
    def deletions_due(self) -> bool:
        return self.acked != self._deleted

    def delete_acknowledged(self) -> None:
        """Delete the rows acknowledged since the last call (inside the caller's transaction, if any)."""
        for boot, seq in list(self.acked.items()):
            if self._deleted.get(boot, seq) < seq:
                self.db.execute("DELETE FROM outbox WHERE boot = ? AND seq <= ?", (boot, seq))
                if self._spooled:
                    self.db.execute("DELETE FROM spooled WHERE boot = ? AND seq <= ?", (boot, seq))
                self._deleted[boot] = seq

    def drop_bodies(self) -> None:
        """Delete the body files whose every body was acknowledged (after the deletion committed)."""
        if len(self.bodies.files) > 1:
            with self.lock:
                self.bodies.keep_from(self.db.execute("SELECT MIN(segment) FROM spooled").fetchone()[0])

    @property
    def pending(self) -> int:
        return sum(self.last[b] - self.acked[b] for b in self.last)

    def unacknowledged(self, limit: int, after: dict[str, int]) -> list[tuple[str, int, str, bytes]]:
        """Up to ``limit`` (boot, seq, topic, body) not acknowledged, in seq order per boot, each
        boot's beyond ``after[boot]`` when given (a resend's position)."""
        rows: list[tuple[str, int, str, bytes]] = []
        with self.lock:
            for boot, acked in list(self.acked.items()):
                if len(rows) >= limit:
                    break
                for seq, topic, body, segment, offset, size in self.db.execute(
                    "SELECT o.seq, o.topic, o.body, s.segment, s.offset, s.size FROM outbox o"
                    " LEFT JOIN spooled s ON s.boot = o.boot AND s.seq = o.seq"
                    " WHERE o.boot = ? AND o.seq > ? ORDER BY o.seq LIMIT ?",
                    (boot, max(acked, after.get(boot, acked)), limit - len(rows)),
                ):
                    if body is None and segment is not None:
                        body = self.bodies.read(segment, offset, size)
                    if body is None:  # its body file is gone: the recorder's gap ledger tells
                        log.error("outbox %s: the body of (%s, %d) is lost", self.path, boot, seq)
                        continue
                    rows.append((boot, seq, topic, body))
        return rows

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        with self.lock, Transaction(self.db) as db:
            yield db

    def close(self) -> None:
        with self.lock:
            self.delete_acknowledged()
            empty = self.db.execute("SELECT 1 FROM spooled LIMIT 1").fetchone() is None
            self.db.close()
        self.bodies.close(empty)


class _Window:
    """Messages handed to paho whose broker acknowledgement has not come: at most ``size`` of them
    (and ``WINDOW_BYTES``) at a time, so a backlog flows at the broker's pace and paho's 16-bit
    message ids never run out."""

    def __init__(self, bus: Bus, size: int) -> None:
        self.bus, self.size = bus, size
        self.sent: deque[tuple[Any, int]] = deque()  # (paho info, bytes)
        self.bytes = 0

    def room(self, closed: threading.Event) -> None:
        """Wait until one more message may be sent (or ``closed``: the rest goes without waiting)."""
        while self.sent and self.bus.acknowledged(self.sent[0][0]):
            self.bytes -= self.sent.popleft()[1]
        while (len(self.sent) >= self.size or self.bytes > WINDOW_BYTES) and not closed.is_set():
            if self.bus.wait_published(self.sent[0][0], 1.0):  # a second at most: then look at closed
                self.bytes -= self.sent.popleft()[1]

    def send(self, topic: str, body: bytes) -> Any:
        info = self.bus.publish(topic, body)
        self.sent.append((info, len(body)))
        self.bytes += len(body)
        return info


@dataclass
class _Hold:
    """What the running handler has published, waiting for it to return (``DataPublisher.handling``)."""

    messages: list[Message] = field(default_factory=list)
    bytes: int = 0
    since: float = 0.0  # monotonic time of the first

    def add(self, message: Message) -> None:
        if not self.messages:
            self.since = time.monotonic()
        self.messages.append(message)
        self.bytes += len(message[2])

    def overdue(self) -> bool:
        """Held HOLD_SECONDS, or as much as the outbox queue takes."""
        if not self.messages:
            return False
        full = len(self.messages) >= QUEUE_MESSAGES or self.bytes >= QUEUE_BYTES
        return full or time.monotonic() - self.since > HOLD_SECONDS


class DataPublisher:
    """Stamps and publishes the data messages of one source (an instance, or the tapping script)."""

    def __init__(self, bus: Bus, topics: Topics, stamper: Stamper, settings: RecorderSettings) -> None:
        self.bus, self.topics, self.stamper, self.settings = bus, topics, stamper, settings
        self.latest = Stamper(stamper.source)
        self.latest.boot = stamper.boot + LATEST_SUFFIX
        self.reports = Stamper(stamper.source)  # what it processed: written by the outbox writer only
        self.reports.boot = stamper.boot + REPORTS_SUFFIX
        self.outbox: Outbox | None = None
        self.processed: Processed | None = None  # what this source handled, beside its outbox
        self._lock = threading.Lock()
        self._held = threading.local()  # .hold: what the running handler published (a _Hold)
        self._warned_long_handler = False
        self._changed = threading.Condition(self._lock)  # acks, the queue, the recorder's state
        self._queue: list[tuple[list[Message], Meta | None]] = []  # (messages, processed mark) to write
        self._unwritten = 0  # messages queued, not yet on disk
        self._unsent = self._unsent_bytes = 0  # messages queued, not yet handed to paho
        self._marking: set[tuple[str, str, int]] = set()  # processed marks queued, not yet on disk
        self._progress = time.monotonic()
        self._stalled_resends = 0
        self._closed = threading.Event()
        self._resending = threading.Lock()
        self._resend_again = False
        self._recorder_boot: str | None = None
        self._recorder_state: str | None = None  # 'stopped': it will not come back to confirm
        self.last_durable = self.last_latest = self.last_report = 0
        self._reported_at = 0.0  # when the writer last reported processed marks (monotonic)
        self._report_now = False  # a drain: report every mark at once
        self._reporting = False  # the writer's round reports marks: until they are sent
        self._last_sent: Any = None  # the last durable message's paho info: has the broker got it?
        self._writer: threading.Thread | None = None
        self._left_before = 0  # unacknowledged messages an earlier process of this source left
        self._recent: dict[tuple[str, str, int], None] = {}  # handled with no ledger, oldest first
        if settings.enabled and settings.run_dir:
            name = stamper.source.replace(":", "-").replace("/", "-")
            self.outbox = Outbox(Path(settings.run_dir) / "outbox" / f"{name}.sqlite")
            self.processed = Processed(self.outbox.db)
            self._left_before = self.outbox.pending
            self._writer = threading.Thread(
                target=self._write, args=(self.outbox,), name="ether-outbox-writer", daemon=True
            )
            self._writer.start()

    def attach(self) -> None:
        """Listen for acknowledgements; resend what a previous process of this source left unacknowledged."""
        if self.outbox is None:
            return
        with self.bus.subscribing():  # both in place before a resend
            self.bus.subscribe(self.topics.recorder_ack(self.stamper.source), self._on_ack)
            self.bus.subscribe(self.topics.recorder_status(), self._on_recorder_status)
        if self._left_before:  # paced by the recorder: in the background, not holding up the start
            log.info(
                "%s: resending %d unsaved messages from before a restart",
                self.stamper.source,
                self._left_before,
            )
            threading.Thread(target=self.resend, name="ether-outbox-resend", daemon=True).start()
        threading.Thread(
            target=self._watch_acks, args=(self.outbox,), name="ether-outbox", daemon=True
        ).start()

    def subscribed(self, user_topics: list[str]) -> None:
        """Keep the topic filters this source processes (and is accounted for) in its ledger; its
        first processed report names them."""
        if self.outbox is None or self.processed is None:
            return
        with self.outbox.transaction():
            self.processed.subscribe(user_topics)
        with self._changed:
            self._changed.notify_all()

    def publish(self, topic: str, payload: Any, parents: list[str] | None = None) -> Meta:
        """Publish one data message on a broker topic; durable ones are on disk before they are sent."""
        if self.settings.policy(self.topics.user_topic(topic)) == LATEST:
            meta, body = self._stamped(self.latest, topic, payload, parents)
            self.last_latest = meta.seq
            self.bus.publish(topic, body, qos=0)
            return meta
        with self._lock:  # seq order == outbox order == send order
            hold: _Hold | None = getattr(self._held, "hold", None)
            if hold is not None and hold.overdue():
                self._send_on(hold)
                hold = None  # from now on sent as if published outside a handler
            if hold is None and self.outbox is not None:
                self._changed.wait_for(self._room)
            meta, body = self._stamped(self.stamper, topic, payload, parents)
            self.last_durable = meta.seq
            if hold is not None:
                hold.add((meta, topic, body))
            elif self.outbox is not None:
                self._enqueue([(meta, topic, body)], None)
            else:
                self._last_sent = self.bus.publish(topic, body)
        return meta

    def _stamped(
        self, stamper: Stamper, topic: str, payload: Any, parents: list[str] | None
    ) -> tuple[Meta, bytes]:
        """The next numbered message; one that cannot be sent (not JSON, oversized) raises before it
        is kept or sent, and its number is taken back, so the sequence stays gap-free."""
        meta = stamper.stamp(parents)
        key = self.stamper.key  # the latest stream's too: one source
        try:
            body = encode(payload, meta, None if key is None else lambda text, data: seal(text, data, key))
            self.bus.check_size(topic, body)
        except (WireError, PayloadTooLarge):
            stamper.unstamp(meta)
            raise
        return meta, body

    def _room(self) -> bool:
        """Whether the queue takes one more message (the caller holds the lock)."""
        return self._closed.is_set() or (self._unsent < QUEUE_MESSAGES and self._unsent_bytes < QUEUE_BYTES)

    def _enqueue(self, messages: list[Message], mark: Meta | None) -> None:
        """Hand messages (and a handled message's mark) to the writer (the caller holds the lock)."""
        if self._closed.is_set():
            raise RuntimeError(f"{self.stamper.source}: the outbox is closed: nothing more can be published")
        self._queue.append((messages, mark))
        self._unwritten += len(messages)
        self._unsent += len(messages)
        self._unsent_bytes += sum(len(body) for _, _, body in messages)
        if mark is not None:
            self._marking.add((mark.src, mark.boot, mark.seq))
            if self.processed is not None:
                self.processed.marking(mark)
        self._changed.notify_all()

    def _write(self, outbox: Outbox) -> None:
        """The writer thread: each round writes what was queued since the last one, and deletes
        what was acknowledged, in one transaction; then sends it in order, within the send window."""
        window = _Window(self.bus, SEND_WINDOW)
        while True:
            with self._lock:
                self._changed.wait_for(
                    lambda: (
                        self._queue or self._closed.is_set() or outbox.deletions_due or self._report_due()
                    ),
                    self._report_wait(),
                )
                units, self._queue = self._queue, []
                if not units and self._closed.is_set():
                    return
                self._reporting = self._report_due()
            try:
                self._write_round(outbox, window, units)
            except Exception:  # a bug must not stop every later message: they stay in the outbox
                log.exception("%s: the outbox writer failed a round", self.stamper.source)

    def _write_round(
        self, outbox: Outbox, window: _Window, units: list[tuple[list[Message], Meta | None]]
    ) -> None:
        messages = [m for unit, _ in units for m in unit]
        report: Message | None = None
        try:
            with outbox.transaction():
                outbox.add(messages)
                if self.processed is not None:
                    self.processed.mark([mark for _, mark in units if mark is not None])
                if self._reporting:
                    report = self._take_report(outbox)
                outbox.delete_acknowledged()
            outbox.drop_bodies()
        except (sqlite3.Error, OSError) as exc:  # e.g. a full disk: sent anyway, and said so
            log.error(
                "%s: %d messages could not be kept in the outbox %s (%s); sent without it: a kill"
                " before the recorder has them loses them",
                self.stamper.source,
                len(messages),
                outbox.path,
                exc,
            )
        with self._lock:
            self._unwritten -= len(messages)
            for _, mark in units:
                if mark is not None:
                    self._marking.discard((mark.src, mark.boot, mark.seq))
        for _, topic, body in messages:
            window.room(self._closed)
            try:
                info = window.send(topic, body)
            except BrokerError as exc:  # kept in the outbox: the resend brings it to the recorder
                log.warning("%s: %s", self.stamper.source, exc)
                info = None
            with self._lock:
                self._last_sent = info or self._last_sent
                self._unsent -= 1
                self._unsent_bytes -= len(body)
                self._changed.notify_all()
        if report is not None:  # after the messages whose marks it reports
            window.room(self._closed)
            try:
                window.send(report[1], report[2])
            except BrokerError as exc:  # kept in the outbox: the resend brings it to the recorder
                log.warning("%s: %s", self.stamper.source, exc)
        with self._lock:
            self._reporting = False
            self._changed.notify_all()

    def _report_due(self) -> bool:
        """Whether the writer should report processed marks now (the caller holds the lock)."""
        if self.processed is None or not self.processed.due:
            return False
        return self._report_now or time.monotonic() - self._reported_at >= REPORT_INTERVAL

    def _report_wait(self) -> float | None:
        """How long the writer may wait for work before marks are due to be reported."""
        if self.processed is None or not self.processed.due:
            return None
        return max(0.0, REPORT_INTERVAL - (time.monotonic() - self._reported_at))

    def _take_report(self, outbox: Outbox) -> Message | None:
        """The marks not reported yet as the next message of the report stream, kept in the outbox
        (inside the writer's transaction, which also takes them out of the ledger's ``unreported``)."""
        assert self.processed is not None
        self._reported_at = time.monotonic()
        report = self.processed.take_report(self.stamper.source)
        if report is None:
            return None
        meta = self.reports.stamp()
        topic = self.topics.instance_processed(self.stamper.source)
        body = sign(encode(report.payload(), meta), self.stamper.key)
        outbox.add([(meta, topic, body)])
        self.last_report = meta.seq
        return meta, topic, body

    def flush(self, timeout: float) -> bool:
        """Wait until every durable message published so far is written, sent and acknowledged by
        the broker (not necessarily by the recorder); False if that took longer than ``timeout``."""
        deadline = Deadline(timeout)
        with self._changed:
            if not self._changed.wait_for(lambda: not self._unsent, deadline.remaining):
                return False
            last = self._last_sent
        return last is None or self.bus.wait_published(last, deadline.remaining)

    def seen(self, meta: Meta | None) -> bool:
        """Whether this message was handled here before (by this process or an earlier one). With no
        ledger (no recorder), whether it is one of the last RECENT_HANDLED handled: a broker sends a
        copy per matching subscription, and the copies come close together."""
        if not numbered(meta):
            return False
        if self.processed is None or self.outbox is None:
            key = (meta.src, meta.boot, meta.seq)
            with self._lock:
                if key in self._recent:
                    return True
                self._recent[key] = None
                if len(self._recent) > RECENT_HANDLED:
                    del self._recent[next(iter(self._recent))]
            return False
        with self._lock:
            if (meta.src, meta.boot, meta.seq) in self._marking:
                return True
        if self.processed.new(meta):  # a live message, as almost all are: no lookup on disk
            return False
        with self.outbox.lock:
            return self.processed.seen(meta)

    def _send_on(self, hold: _Hold) -> None:
        """A handler still running HOLD_SECONDS after its first publication (a loop), or holding as
        much as the queue takes: what it held is sent, and what it publishes from now on is not held
        (the caller holds the lock)."""
        if not self._warned_long_handler:
            self._warned_long_handler = True
            log.warning(
                "%s: a handler is still running %g s after it first published (or has published %d"
                " messages); its messages are sent on without waiting for it to return (if the"
                " instance dies before it returns, its input is handled again and they are sent"
                " again). A long loop belongs in @ether_start or a periodic publisher (docs/data.md)",
                self.stamper.source,
                HOLD_SECONDS,
                len(hold.messages),
            )
        self._send_held(hold.messages, None)
        hold.messages = []
        self._held.hold = None

    def _send_held(self, held: list[Message], mark: Meta | None) -> None:
        """What a handler held (and its input's processed mark) to the outbox writer, or, with no
        outbox, to the broker (the caller holds the lock)."""
        if self.outbox is not None:
            if held or mark is not None:
                self._changed.wait_for(self._room)
                self._enqueue(held, mark)
        else:
            for _, topic, body in held:
                self._last_sent = self.bus.publish(topic, body)

    @contextmanager
    def handling(self, meta: Meta | None) -> Iterator[None]:
        """Handle one message as a transaction: what the handler publishes is held, then written to
        the outbox together with the message's processed mark, then sent. A kill -9 in between keeps
        all of it (sent again from the outbox) or none of it (the message is handled again). A
        handler that runs on HOLD_SECONDS after its first publication sends on (``_send_on``)."""
        hold = self._held.hold = _Hold()
        try:
            yield
        finally:
            self._held.hold = None
            with self._lock:  # what it held (nothing if it was sent on), with its input's mark
                mark = meta if numbered(meta) and self.processed is not None else None
                self._send_held(hold.messages, mark)

    # -- acknowledgements ---------------------------------------------------------------------
    def _on_ack(self, topic: str, raw: bytes) -> None:
        if self.outbox is None:
            return
        try:
            acks = parse(RecorderAck, decode(raw)[0]).root
        except (WireError, ContractError) as exc:
            self._refused(topic, f"ignored an acknowledgement: {exc}")
            return
        with self._changed:
            if self._closed.is_set():  # a late acknowledgement after the outbox file was closed
                return
            progressed = False
            for boot, seq in acks.items():
                if self.outbox.ack(boot, seq):
                    progressed = True
            if progressed:
                self._progress = time.monotonic()
                self._stalled_resends = 0
                self._changed.notify_all()  # the writer deletes the rows; drain may be done

    def _refused(self, topic: str, reason: str) -> None:
        """A system message that does not fit the contract: an error event, and nothing else happens."""
        log.warning("%s: %s", self.stamper.source, reason)
        event = ErrorEvent(instance=self.stamper.source, topic=topic, reason=reason)
        self.bus.publish(self.topics.errors(), encode(event.payload(), self.stamper.control()))

    def _on_recorder_status(self, topic: str, raw: bytes) -> None:
        try:
            status = parse(RecorderStatus, decode(raw)[0])
        except (WireError, ContractError) as exc:
            self._refused(topic, f"ignored a recorder status: {exc}")
            return
        with self._changed:
            self._recorder_state = status.state
            self._changed.notify_all()
        if status.state == "ready":
            boot, self._recorder_boot = self._recorder_boot, status.boot
            if boot != self._recorder_boot and self.pending:  # a (re)started recorder: send again at once
                self._stalled_resends = 0
                threading.Thread(target=self.resend, name="ether-outbox-resend", daemon=True).start()

    def _watch_acks(self, outbox: Outbox) -> None:
        """Resend when acknowledgements stall while messages wait (a lost connection or recorder);
        while resends bring nothing back, wait twice as long before the next one."""
        while not self._closed.wait(RESEND_AFTER / 2):
            with self._lock:
                if self._sending():  # still on its way (e.g. megabytes of arrays): not a stall
                    self._progress = time.monotonic()
                stalled = outbox.pending and time.monotonic() - self._progress > self._resend_wait()
                away = self._recorder_state not in (None, "ready")  # it resends to us once back
            if stalled and not away:
                self.resend()
                self._stalled_resends += 1

    def _sending(self) -> bool:
        """Whether paho, connected, is still handing our queued or last durable message to the broker."""
        last = self._last_sent
        return self.bus.connected and (
            self._unsent > 0 or (last is not None and not self.bus.acknowledged(last))
        )

    def _resend_wait(self) -> float:
        return backoff(self._stalled_resends + 1, RESEND_AFTER, RESEND_MAX_WAIT)

    def resend(self) -> None:
        """Send what the recorder has not acknowledged again, to the recorder only, one round at a
        time (a request during a round makes one more round after it). Never raises: what a round
        could not send waits for the next."""
        if self.outbox is None:
            return
        if not self._resending.acquire(blocking=False):
            self._resend_again = True
            return
        try:
            again = True
            while again and not self._closed.is_set():
                self._resend_again = False
                sent = self._resend_round(self.outbox)
                if sent:
                    log.info("%s: resent %d unacknowledged messages", self.stamper.source, sent)
                again = self._resend_again
        except Exception:  # e.g. the outbox closed under us at the end: the next process resends
            if not self._closed.is_set():
                log.exception("%s: a resend round failed; the next one retries", self.stamper.source)
        finally:
            self._resending.release()

    def _resend_round(self, outbox: Outbox) -> int:
        """One pass over the unacknowledged messages, with end-to-end flow control: a message is
        resent only once the recorder has acknowledged all but RESEND_WINDOW of those before it, so
        the broker never queues more than that for the recorder (amqtt drops a delivery its
        subscriber does not acknowledge within 5 s). Stops when the recorder confirms nothing for
        CONFIRM_TIMEOUT (e.g. one of the window was lost): the next round starts from there."""
        after: dict[str, int] = {}
        sent = 0
        self._progress = time.monotonic()
        while not self._closed.is_set():
            rows = outbox.unacknowledged(RESEND_WINDOW, after)
            if not rows:
                break
            for boot, seq, topic, body in rows:
                if not self._resend_room(outbox, boot, seq):
                    log.warning(
                        "%s: the recorder confirmed no resent message for %.0f s; resending later",
                        self.stamper.source,
                        CONFIRM_TIMEOUT,
                    )
                    return sent
                try:
                    self.bus.publish(self.topics.recorder_resend(topic), body)
                except BrokerError as exc:
                    log.warning("%s: resending stopped (%s); resending later", self.stamper.source, exc)
                    return sent
                after[boot] = seq
                sent += 1
        return sent

    def _resend_room(self, outbox: Outbox, boot: str, seq: int) -> bool:
        """Wait until the recorder has acknowledged all but RESEND_WINDOW messages before ``seq``;
        False once it has acknowledged nothing for CONFIRM_TIMEOUT."""
        with self._changed:
            while not (self._closed.is_set() or seq - outbox.acked[boot] <= RESEND_WINDOW):
                if time.monotonic() - self._progress > CONFIRM_TIMEOUT:
                    return False
                self._changed.wait(CONFIRM_TIMEOUT)  # acknowledgements notify
            return True

    @property
    def pending(self) -> int:
        with self._lock:
            return self._pending()

    def _pending(self) -> int:
        """Durable messages not yet acknowledged: written and sent, or still queued (caller holds the lock)."""
        return (self.outbox.pending + self._unwritten) if self.outbox else 0

    def drain(self, timeout: float, closing: bool = True) -> int:
        """Send what is queued, tell the recorder our last seqs (when ``closing``: this source sends
        no more), then wait (logging progress) until every durable message is acknowledged. Returns
        how many are still unsaved (they stay in the outbox file)."""
        deadline = Deadline(timeout)
        with self._changed:  # our data and what we processed first, then the closing report
            self._changed.wait_for(lambda: not self._unsent, deadline.remaining)
            self._report_now = True
            self._changed.notify_all()
            self._changed.wait_for(
                lambda: not self._reporting and not (self.processed and self.processed.due),
                deadline.remaining,
            )
            self._report_now = False
            last = {
                self.stamper.boot: self.last_durable,
                self.latest.boot: self.last_latest,
                self.reports.boot: self.last_report,
            }
        report = RecorderClosing(src=self.stamper.source, boots={b: s for b, s in last.items() if s})
        if closing and report.boots and self.settings.enabled:
            body = sign(encode(report.payload(), self.stamper.control()), self.stamper.key)
            self.bus.publish(self.topics.recorder_closing(), body)  # after our data
        announced = time.monotonic()
        with self._changed:
            while self.outbox is not None and self._pending() and not deadline.expired:
                if self._recorder_state == "stopped":  # e.g. the session died: nobody will confirm
                    break
                self._changed.wait(min(1.0, deadline.remaining))
                if time.monotonic() - announced > 2.0 and self._pending():
                    log.info(
                        "%s: waiting for the recorder to save %d messages",
                        self.stamper.source,
                        self._pending(),
                    )
                    announced = time.monotonic()
            left = self._pending()
        if left and self.outbox is not None:
            log.error(
                "%s: %d messages not confirmed saved by the recorder after %.0f s; they stay in %s",
                self.stamper.source,
                left,
                timeout,
                self.outbox.path,
            )
        return left

    def close(self) -> None:
        """Write what is still queued, stop the writer, close the outbox file."""
        with self._changed:
            self._closed.set()
            self._changed.notify_all()
        if self._writer is not None:
            self._writer.join()
        if self.outbox is not None:
            self.outbox.close()
