"""Publishing data messages: stamp, keep durable ones in an outbox on disk until the recorder has them.

A message of a ``durable`` stream is written to the publisher's outbox file *before* it is sent, and
deleted when the recorder acknowledges it (``{boot: seq}`` on ``ether/<s>/recorder/ack/<src>``). What
is not acknowledged is sent again -- to the recorder only, on ``ether/<s>/recorder/resend/<topic>`` --
when acknowledgements stall (a reconnect, a recorder restart) and, by the next process of the same
instance, after a kill. The broker is not trusted to redeliver (amqtt
0.12.1 does not). A ``latest`` stream is sent at QoS 0 with its own sequence (boot ``<boot>-latest``),
so its losses show in the recorder's gap ledger without holding back the durable stream's acks.
Every message, and the closing report, is signed with the stamper's key (``transport/signing``).
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
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
from ether.data.processed import LATEST_SUFFIX, Processed, numbered
from ether.data.recorder.settings import LATEST, RecorderSettings
from ether.data.recorder.store import PAGE_SIZE, Transaction
from ether.processes import backoff
from ether.transport.bus import Bus, PayloadTooLarge
from ether.transport.signing import sign
from ether.transport.waiting import Deadline

log = logging.getLogger("ether.outbox")

RESEND_AFTER = 1.0  # seconds without acknowledgement progress before unacknowledged messages are resent
RESEND_MAX_WAIT = 30.0  # resends that bring no progress back off up to this
RESEND_CHUNK = 20000


class Outbox:
    """An SQLite file of messages sent but not yet acknowledged by the recorder, per (boot, seq)."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.db = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=30)
        self.db.execute(f"PRAGMA page_size={PAGE_SIZE}")  # as the store's: arrays write faster
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=OFF")  # survives a killed process; a power cut is not our case
        self.db.execute(
            "CREATE TABLE IF NOT EXISTS outbox"
            " (boot TEXT, seq INTEGER, topic TEXT, body BLOB, PRIMARY KEY (boot, seq))"
        )
        self.acked: dict[str, int] = {}  # boot -> highest acknowledged seq
        self.last: dict[str, int] = {}  # boot -> highest seq written
        for boot, low, high in self.db.execute("SELECT boot, MIN(seq), MAX(seq) FROM outbox GROUP BY boot"):
            self.acked[boot], self.last[boot] = low - 1, high

    def add(self, meta: Meta, topic: str, body: bytes) -> None:
        """Keep one message until acknowledged (inside the caller's transaction, if any)."""
        self.db.execute(
            "INSERT OR REPLACE INTO outbox VALUES (?, ?, ?, ?)", (meta.boot, meta.seq, topic, body)
        )
        self.last[meta.boot] = meta.seq
        self.acked.setdefault(meta.boot, meta.seq - 1)

    def ack(self, boot: str, seq: int) -> bool:
        """Forget what the recorder has of one boot, up to ``seq``; an acknowledgement of more than
        was written (or of nothing new) is not believed."""
        if boot not in self.last or not self.acked[boot] < seq <= self.last[boot]:
            return False
        self.acked[boot] = seq
        self.db.execute("DELETE FROM outbox WHERE boot = ? AND seq <= ?", (boot, seq))
        return True

    @property
    def pending(self) -> int:
        return sum(self.last[b] - self.acked[b] for b in self.last)

    def unacknowledged(self, limit: int) -> list[tuple[str, bytes]]:
        rows: list[tuple[str, bytes]] = []
        for boot, acked in list(self.acked.items()):
            if len(rows) >= limit:
                break
            rows += self.db.execute(
                "SELECT topic, body FROM outbox WHERE boot = ? AND seq > ? ORDER BY seq LIMIT ?",
                (boot, acked, limit - len(rows)),
            ).fetchall()
        return rows

    def transaction(self) -> Transaction:
        return Transaction(self.db)

    def close(self) -> None:
        self.db.close()


class DataPublisher:
    """Stamps and publishes the data messages of one source (an instance, or the tapping script)."""

    def __init__(self, bus: Bus, topics: Topics, stamper: Stamper, settings: RecorderSettings) -> None:
        self.bus, self.topics, self.stamper, self.settings = bus, topics, stamper, settings
        self.latest = Stamper(stamper.source)
        self.latest.boot = stamper.boot + LATEST_SUFFIX
        self.outbox: Outbox | None = None
        self.processed: Processed | None = None  # what this source handled, beside its outbox
        if settings.enabled and settings.run_dir:
            name = stamper.source.replace(":", "-").replace("/", "-")
            self.outbox = Outbox(Path(settings.run_dir) / "outbox" / f"{name}.sqlite")
            self.processed = Processed(self.outbox.db)
        self._lock = threading.Lock()
        self._held = threading.local()  # the messages a handler published, sent once it has returned
        self._acked = threading.Condition(self._lock)
        self._progress = time.monotonic()
        self._stalled_resends = 0
        self._closed = threading.Event()
        self._recorder_boot: str | None = None
        self._recorder_state: str | None = None  # 'stopped': it will not come back to confirm
        self.last_durable = self.last_latest = 0
        self._last_sent: Any = None  # the last durable message's paho info: has the broker got it?

    def attach(self) -> None:
        """Listen for acknowledgements; resend what a previous process of this source left unacknowledged."""
        if self.outbox is None:
            return
        self.bus.subscribe(self.topics.recorder_ack(self.stamper.source), self._on_ack)
        self.bus.subscribe(self.topics.recorder_status(), self._on_recorder_status)
        if self.outbox.pending:
            log.info(
                "%s: resending %d unsaved messages from before a restart",
                self.stamper.source,
                self.outbox.pending,
            )
            self.resend()
        threading.Thread(
            target=self._watch_acks, args=(self.outbox,), name="ether-outbox", daemon=True
        ).start()

    def publish(self, topic: str, payload: Any, parents: list[str] | None = None) -> Meta:
        """Publish one data message on a broker topic; durable ones are on disk before they are sent."""
        if self.settings.policy(self.topics.user_topic(topic)) == LATEST:
            meta, body = self._stamped(self.latest, topic, payload, parents)
            self.last_latest = meta.seq
            self.bus.publish(topic, body, qos=0)
            return meta
        with self._lock:  # seq order == outbox order == send order
            meta, body = self._stamped(self.stamper, topic, payload, parents)
            self.last_durable = meta.seq
            held = getattr(self._held, "messages", None)
            if held is not None:
                held.append((meta, topic, body))
                return meta
            if self.outbox is not None:
                self.outbox.add(meta, topic, body)
            self._last_sent = self.bus.publish(topic, body)
        return meta

    def _stamped(
        self, stamper: Stamper, topic: str, payload: Any, parents: list[str] | None
    ) -> tuple[Meta, bytes]:
        """The next numbered message; one that cannot be sent (not JSON, oversized) raises before it
        is kept or sent, and its number is taken back, so the sequence stays gap-free."""
        meta = stamper.stamp(parents)
        try:
            body = sign(encode(payload, meta), self.stamper.key)  # the latest stream's too: one source
            self.bus.check_size(topic, body)
        except (WireError, PayloadTooLarge):
            stamper.unstamp(meta)
            raise
        return meta, body

    def seen(self, meta: Meta | None) -> bool:
        """Whether this message was handled here before (by this process or an earlier one)."""
        if self.processed is None or not numbered(meta):
            return False
        with self._lock:
            return self.processed.seen(meta)

    @contextmanager
    def handling(self, meta: Meta | None) -> Iterator[None]:
        """Handle one message as a transaction: what the handler publishes is held, then written to
        the outbox together with the message's processed mark, then sent. A kill -9 in between keeps
        all of it (sent again from the outbox) or none of it (the message is handled again)."""
        held: list[tuple[Meta, str, bytes]] = []
        self._held.messages = held
        try:
            yield
        finally:
            self._held.messages = None
            with self._lock:
                if self.outbox is not None and (held or numbered(meta)):
                    with self.outbox.transaction():
                        for m, topic, body in held:
                            self.outbox.add(m, topic, body)
                        if numbered(meta) and self.processed is not None:
                            self.processed.mark(meta)
                for _, topic, body in held:
                    self._last_sent = self.bus.publish(topic, body)

    # -- acknowledgements ---------------------------------------------------------------------
    def _on_ack(self, topic: str, raw: bytes) -> None:
        if self.outbox is None:
            return
        try:
            acks = parse(RecorderAck, decode(raw)[0]).root
        except (WireError, ContractError) as exc:
            self._refused(topic, f"ignored an acknowledgement: {exc}")
            return
        with self._acked:
            if self._closed.is_set():  # a late acknowledgement after the outbox file was closed
                return
            progressed = False
            for boot, seq in acks.items():
                if self.outbox.ack(boot, seq):
                    progressed = True
            if progressed:
                self._progress = time.monotonic()
                self._stalled_resends = 0
                self._acked.notify_all()

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
        with self._acked:
            self._recorder_state = status.state
            self._acked.notify_all()
        if status.state == "ready":
            boot, self._recorder_boot = self._recorder_boot, status.boot
            if boot != self._recorder_boot and self.pending:  # a (re)started recorder: send again at once
                self._stalled_resends = 0
                threading.Thread(target=self.resend, daemon=True).start()

    def _watch_acks(self, outbox: Outbox) -> None:
        """Resend when acknowledgements stall while messages wait (a lost connection or recorder);
        while resends bring nothing back, wait twice as long before the next one."""
        while not self._closed.wait(RESEND_AFTER / 2):
            with self._lock:
                if self._sending():  # still on its way (e.g. megabytes of arrays): not a stall
                    self._progress = time.monotonic()
                stalled = outbox.pending and time.monotonic() - self._progress > self._resend_wait()
            if stalled:
                self.resend()
                self._stalled_resends += 1

    def _sending(self) -> bool:
        """Whether paho, connected, is still handing our last durable message to the broker."""
        last = self._last_sent
        return last is not None and self.bus.connected and not last.is_published()

    def _resend_wait(self) -> float:
        return backoff(self._stalled_resends + 1, RESEND_AFTER, RESEND_MAX_WAIT)

    def resend(self) -> None:
        with self._lock:
            if self.outbox is None:
                return
            rows = self.outbox.unacknowledged(RESEND_CHUNK)
            self._progress = time.monotonic()
        for topic, body in rows:
            self.bus.publish(self.topics.recorder_resend(topic), body)
        if rows:
            log.info("%s: resent %d unacknowledged messages", self.stamper.source, len(rows))

    @property
    def pending(self) -> int:
        with self._lock:
            return self.outbox.pending if self.outbox else 0

    def drain(self, timeout: float, closing: bool = True) -> int:
        """Tell the recorder our last seqs (when ``closing``: this source sends no more), then wait
        (logging progress) until every durable message is acknowledged. Returns how many are still
        unsaved (they stay in the outbox file)."""
        with self._lock:
            last = {self.stamper.boot: self.last_durable, self.latest.boot: self.last_latest}
        report = RecorderClosing(src=self.stamper.source, boots={b: s for b, s in last.items() if s})
        if closing and report.boots and self.settings.enabled:
            body = sign(encode(report.payload(), self.stamper.control()), self.stamper.key)
            self.bus.publish(self.topics.recorder_closing(), body)  # after our data
        deadline = Deadline(timeout)
        announced = time.monotonic()
        with self._acked:
            while self.outbox is not None and self.outbox.pending and not deadline.expired:
                if self._recorder_state == "stopped":  # e.g. the session died: nobody will confirm
                    break
                self._acked.wait(min(1.0, deadline.remaining))
                if time.monotonic() - announced > 2.0 and self.outbox.pending:
                    log.info(
                        "%s: waiting for the recorder to save %d messages",
                        self.stamper.source,
                        self.outbox.pending,
                    )
                    announced = time.monotonic()
            left = self.outbox.pending if self.outbox else 0
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
        self._closed.set()
        if self.outbox is not None:
            with self._lock:
                self.outbox.close()
