"""The recorder process: subscribes to every data topic, saves each message once, acknowledges it.

Messages are queued by paho's network thread and written by one writer thread in batches: whatever
arrived while the previous batch was committing is the next batch, so latency stays low at low rates
and commits stay few at high rates. Acknowledgements go out only after the commit.

Every message is hostile until checked: metadata outside the limits (or a seq too far ahead to be
true) makes it foreign, a system message that does not fit its model is ignored, an oversized one is
not kept; each is an event in the store and an error event on the bus, and never costs the batch.
A second message with the numbers of a saved one but other content is kept as a conflict.
"""

from __future__ import annotations

import logging
import os
import queue
import sqlite3
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ether import exits
from ether.contract import arrays
from ether.contract.messages import (
    ClockReply,
    ContractError,
    DeviceSchema,
    ErrorEvent,
    InstanceStatus,
    LogRecord,
    Message,
    ProcessedReport,
    RecorderAck,
    RecorderClosing,
    RecorderCommand,
    RecorderStatus,
    ok,
    parse,
    refused,
)
from ether.contract.topics import Topic, Topics
from ether.contract.wire import Meta, MetaError, Stamper, WireError, decode, encode
from ether.data.processed import LATEST_SUFFIX, REPORTS_SUFFIX, account, numbered
from ether.data.recorder.clocks import DeviceClocks
from ether.data.recorder.joined import late_will
from ether.data.recorder.ledger import Ledger, Stream
from ether.data.recorder.store import Row, Store, payload_text, same_content
from ether.logs import error_event_limit, setup_logging
from ether.processes import on_lifeline_cut, read_spec
from ether.transport.broker import BrokerAddress, BrokerError
from ether.transport.bus import Bus, Will
from ether.transport.log_publishing import publish_logs, stop_publishing_logs
from ether.transport.requests import answer
from ether.transport.signing import Sources

log = logging.getLogger("ether.recorder")
UNPROCESSED_EVERY = 2.0  # seconds between live counts of what instances have not processed
UNPROCESSED_SHARE = 9.0  # ... and at least this many times as long as the last count took

BATCH = 5000
BATCH_BYTES = 16 * 2**20  # ... or this many bytes: arrays in a backlog are acknowledged as they are written
COMMIT_EVERY = 0.005  # under load, a commit at most this often: a message then waits for the next
ACK_INTERVAL = 0.02  # acknowledgements are coalesced: at most one per source per 20 ms
RECORDED = (  # the kinds saved
    "data",
    "errors",
    "recorder_closing",
    "instance_status",
    "instance_processed",
    "device_schema",
    "log",
)
SYSTEM: dict[str, type[Message]] = {
    "log": LogRecord,
    "recorder_closing": RecorderClosing,
    "instance_status": InstanceStatus,
    "device_schema": DeviceSchema,
}


@dataclass
class RecorderSpec:
    """What the session sends the recorder process on stdin (one JSON line)."""

    broker: dict[str, Any]
    session: str
    run_dir: str
    restarts: int = 0
    secret: str = ""  # hex: the broker key, to check each message's src (``transport/signing``)


class _Barrier:
    """A request that is answered when the writer reaches it: everything queued before is committed."""

    def __init__(self, request: Meta | None, then_stop: bool = False, forced: dict | None = None) -> None:
        self.request, self.then_stop, self.forced = request, then_stop, forced


@dataclass
class _HostClock:
    """A supervisor's measured clock offset, to be recorded."""

    report: RecorderCommand
    t: float


@dataclass
class _Oversized:
    """A message the bus refused for its size: only its topic and size are kept."""

    topic: str
    size: int
    t: float


def _size(item: object) -> int:
    """The bytes of a received message in the writer's queue (0 for a barrier and the like)."""
    return len(item[1]) if isinstance(item, tuple) else 0


class Recorder:
    def __init__(self, spec: RecorderSpec, bus: Bus, store: Store) -> None:
        self.spec, self.bus, self.store = spec, bus, store
        self.topics = Topics(spec.session)
        self.stamper = Stamper("recorder")
        self.inbox: queue.SimpleQueue = queue.SimpleQueue()
        self.ledger = Ledger()
        self.finished = threading.Event()
        self.failed = False
        self.saved = 0
        self.missing = self.gaps = 0  # what the gap ledger holds now: messages, ranges
        self.forcing = False
        self._seen_status: dict[str, tuple] = {}
        self._devices: set[str] = set()  # sources that announced a device schema: boards
        self.sources = Sources(bytes.fromhex(spec.secret) if spec.secret else None, spec.session)
        self._clocks = DeviceClocks()
        self.error_limit = error_event_limit()
        self._acks: dict[str, dict[str, int]] = {}  # committed, not yet announced
        self._acked_at = 0.0
        self._committed_at = float("-inf")  # monotonic
        self._barrier_queued = threading.Event()  # ends the wait for more of a batch
        self._batch: dict[tuple[str, str, int], Row] = {}  # the numbered rows of the batch being written
        self.since = store.manifest().get("started_at") or time.time()  # the session's start
        self.unprocessed: dict[str, int] | None = None  # the last live count (count_unprocessed)
        self._asked_at = float("-inf")  # when our status was last asked for (monotonic)
        bus.on_oversized = lambda topic, size: self.inbox.put(_Oversized(topic, size, time.time()))
        self._load()

    def _load(self) -> None:
        """Pick up where a killed recorder left off: streams and open gaps from the store."""
        from ether.data.recorder.ledger import Gap

        db = self.store.db
        for r in db.execute("SELECT * FROM streams"):
            stream, _ = self.ledger.stream(r["src"], r["boot"], r["first_seen"])
            stream.max_seq, stream.last_seen = r["max_seq"], r["last_seen"]
        for r in db.execute("SELECT * FROM gaps ORDER BY first_seq"):
            stream, _ = self.ledger.stream(r["src"], r["boot"], r["detected_at"])
            stream.gaps.append(Gap(r["first_seq"], r["last_seq"], r["detected_at"], r["cause"]))
        self.saved = db.execute("SELECT COUNT(*) FROM messages").fetchone()[0]
        self._count_gaps()

    def _count_gaps(self) -> None:
        gaps = [g for stream in self.ledger.streams.values() for g in stream.gaps]
        self.missing, self.gaps = sum(g.size for g in gaps), len(gaps)

    # -- network thread: queue only --------------------------------------------------------
    def on_message(self, topic: str, raw: bytes) -> None:
        where = self.topics.parse(topic)
        if where is not None and where.kind == "recorder_resend":  # saved under its original topic
            topic = where.detail
            where = self.topics.parse(topic)
        if where is None:
            return
        if where.kind == "recorder_control":
            self.on_control(raw)
        elif where.kind in RECORDED:
            self.inbox.put((topic, raw, time.time()))

    def on_control(self, raw: bytes) -> None:
        received = time.time()  # a clock exchange's receive time: first thing
        try:
            payload, meta = decode(raw)
        except WireError as exc:  # not answered: its reply_to cannot be trusted
            detail = {"sender": exc.src, "field": exc.field} if isinstance(exc, MetaError) else {}
            self._report(self.topics.recorder_control(), f"ignored a request: {exc}", **detail)
            return
        control = RecorderCommand.read(payload)
        if control is None:
            what = payload.get("command") if isinstance(payload, dict) else payload
            answer(
                self.bus,
                self.stamper,
                meta,
                refused("unknown_command", f"recorder: unknown command {what!r}"),
            )
        elif control.command == "status":
            self._asked_at = time.monotonic()
            answer(self.bus, self.stamper, meta, ok(self.status("ready")))
        elif control.command in ("clock", "clock_offset"):
            self.on_clock(control, meta, received)
        else:
            forced = None
            if control.command == "shutdown" and control.forced_by:  # a forced quit (the monitor's): at once
                forced = {"by": control.forced_by, "unconfirmed": control.unconfirmed}
            self.barrier(_Barrier(meta, then_stop=control.command == "shutdown", forced=forced))
            if forced:
                self.forcing = True  # after the put: the writer then finds this request in its queue

    def on_clock(self, control: RecorderCommand, meta: Meta | None, received: float) -> None:
        """A supervisor's clock exchange (``runtime/hostclock``): answered at once with our receive and
        send times; its result, a ``clock_offset``, is recorded as a ``host_clock`` event."""
        if control.command == "clock":
            answer(
                self.bus, self.stamper, meta, ok(ClockReply(received=received, sent=time.time()).payload())
            )
            return
        if control.offset is None or control.delay is None or not control.supervisor:
            problem = "recorder: clock_offset needs offset, delay and supervisor"
            answer(self.bus, self.stamper, meta, refused("validation", problem))
            return
        self.inbox.put(_HostClock(control, received))
        answer(self.bus, self.stamper, meta, ok())

    def status(self, state: str) -> dict[str, Any]:
        """The recorder's status now, as a JSON object (announced, and the result of status requests)."""
        return RecorderStatus(
            state=state,
            pid=os.getpid(),
            boot=self.stamper.boot,
            run_dir=self.spec.run_dir,
            saved=self.saved,
            backlog=self.inbox.qsize(),
            missing=self.missing,
            gaps=self.gaps,
            restarts=self.spec.restarts,
            t=time.time(),
            unprocessed=self.unprocessed,
        ).payload()

    def count_unprocessed(self) -> None:
        """A thread: while someone polls our status (the monitor does), count every few seconds what
        each subscriber instance has not processed (yet) of the store, as the seal would. A count
        reads every ledger and report, so it grows with the session: the pause after one is at least
        ``UNPROCESSED_SHARE`` times as long as it took, which keeps it under a tenth of a core."""
        pause = UNPROCESSED_EVERY
        while not self.finished.wait(pause):
            if time.monotonic() - self._asked_at > 3 * UNPROCESSED_EVERY:
                continue
            started = time.monotonic()
            try:
                counts = account(Path(self.spec.run_dir))
            except sqlite3.Error as exc:  # a ledger being created, a busy store: the next round counts
                log.debug("recorder: no live unprocessed count this time (%s)", exc)
                continue
            self.unprocessed = {name: left.durable + left.unknown for name, left in counts.items()}
            pause = max(UNPROCESSED_EVERY, UNPROCESSED_SHARE * (time.monotonic() - started))

    def announce(self, state: str) -> None:
        if not self.bus.publish_and_wait(
            self.topics.recorder_status(), encode(self.status(state)), retain=True
        ):
            log.warning("recorder: the broker did not confirm our status '%s'", state)

    # -- writer thread -----------------------------------------------------------------------
    def write(self) -> None:
        while not self.finished.is_set():
            try:
                item = self.inbox.get(timeout=ACK_INTERVAL if self._acks else None)
            except queue.Empty:
                self.send_acks()
                continue
            batch = self._gather(item)
            if self.forcing or any(isinstance(b, _Barrier) and b.forced for b in batch):
                self.stop_forced(batch)
                return
            barriers = [b for b in batch if isinstance(b, _Barrier)]
            try:
                self.commit([b for b in batch if not isinstance(b, _Barrier)])
            except Exception:  # unacknowledged, so publishers resend to the restarted recorder
                log.exception("recorder: could not write a batch of %d messages; exiting", len(batch))
                self.failed = True
                self.finished.set()
                return
            self._committed_at = time.monotonic()
            self.send_acks(force=bool(barriers))
            for barrier in barriers:
                answer(self.bus, self.stamper, barrier.request, ok(self.status("ready")))
                if barrier.then_stop:
                    self.finished.set()

    def barrier(self, barrier: _Barrier) -> None:
        self.inbox.put(barrier)
        self._barrier_queued.set()

    def _gather(self, item) -> list:
        """The next batch: ``item`` and what arrives until ``COMMIT_EVERY`` after the last commit (at
        once after a quiet spell, or for a barrier). Publishers hold each message until acknowledged,
        and the acknowledgements go out every ``ACK_INTERVAL`` anyway: one commit per message (each
        costs a dozen writes) when the messages come one by one would buy nothing. The writer waits
        for the deadline, not for each message (a thread wake-up per message)."""
        self._barrier_queued.clear()  # a barrier queued before is found by draining the queue
        batch = [item]
        size = _size(item)
        deadline = self._committed_at + COMMIT_EVERY
        while len(batch) < BATCH and size < BATCH_BYTES and not isinstance(batch[-1], _Barrier):
            try:
                batch.append(self.inbox.get_nowait())
                size += _size(batch[-1])
                continue
            except queue.Empty:
                wait = deadline - time.monotonic()
            if wait <= 0:
                break
            self._barrier_queued.wait(wait)
            deadline = float("-inf")  # take what came meanwhile (up to a barrier), then commit
        return batch

    def stop_forced(self, batch: list) -> None:
        """A forced quit: stop now, without writing what still waits here, and record that, with the count.
        None of it was acknowledged: instances keep it in their outboxes and the session counts it as
        unsaved when it seals."""
        while True:
            try:
                batch.append(self.inbox.get_nowait())
            except queue.Empty:
                break
        self.send_acks()  # what is on disk is saved: its publishers must not count it as unsaved
        barriers = [b for b in batch if isinstance(b, _Barrier)]
        not_written = self._kinds([b for b in batch if not isinstance(b, _Barrier)])
        with self.store.transaction():
            for barrier in barriers:
                if barrier.forced:
                    self.store.event("forced_quit", None, None, not_written=not_written, **barrier.forced)
        log.warning(
            "recorder: stopping now (a forced quit); not written: %d durable messages (kept in their"
            " publishers' outboxes), %d of `latest` streams or foreign clients (kept nowhere), %d system"
            " messages (statuses, closing reports, errors)",
            not_written["durable"],
            not_written["dropped"],
            not_written["system"],
        )
        for barrier in barriers:
            answer(self.bus, self.stamper, barrier.request, ok(self.status("stopped")))
        self.finished.set()

    def _kinds(self, items: list) -> dict[str, int]:
        """What a forced quit leaves unwritten, by who still has it: ``durable`` (numbered data: the
        publisher's outbox keeps it until acknowledged, so the seal counts it as unsaved), ``dropped``
        (a `latest` stream's or a foreign client's: kept nowhere) and ``system`` (everything else)."""
        counts = {"durable": 0, "dropped": 0, "system": 0}
        for item in items:
            if isinstance(item, _Oversized):
                continue  # never kept anyway (an `oversized` event says so when it is written)
            topic, raw, _ = item
            where = self.topics.parse(topic)
            if where is None or where.kind != "data":
                counts["system"] += 1
                continue
            try:
                meta = decode(raw)[1]
            except WireError:
                meta = None
            durable = meta is not None and meta.seq > 0 and meta.src and not meta.boot.endswith(LATEST_SUFFIX)
            counts["durable" if durable else "dropped"] += 1
        return counts

    def commit(self, items: list) -> None:
        rows: list[Row] = []
        touched: dict[str, dict[str, int]] = {}
        self._batch = {}
        with self.store.transaction():
            for item in items:
                if isinstance(item, _HostClock):
                    r = item.report
                    detail = {
                        "offset": r.offset,
                        "delay": r.delay,
                        "host": r.host,
                        "sources": r.sources or [],
                    }
                    self.store.event("host_clock", r.supervisor, None, t_recorder=item.t, **detail)
                    continue
                if isinstance(item, _Oversized):
                    topic = self.topics.user_topic(item.topic)
                    self._refuse("oversized", topic, self.bus.oversized(topic, item.size), size=item.size)
                    continue
                topic, raw, now = item
                try:
                    self._take(topic, raw, now, rows, touched)
                except Exception as exc:  # a bug must cost this message its metadata, never the batch
                    log.exception("recorder: could not read a message on %s; saving it as foreign", topic)
                    self._refuse("unreadable", topic, f"{type(exc).__name__}: {exc}")
                    rows.append(self._foreign(topic, raw, now))
            self.store.insert(rows)
            for src, boots in touched.items():
                for boot in boots:
                    s = self.ledger.streams[(src, boot)]
                    boots[boot] = s.contiguous
                    self.store.save_stream(src, boot, s.contiguous, s.max_seq, s.first_seen, s.last_seen)
                    self.store.save_gaps(
                        src, boot, [(g.first, g.last, g.detected_at, g.cause) for g in s.gaps]
                    )
        self.saved += len(rows)
        self._count_gaps()
        for src, boots in touched.items():
            self._acks.setdefault(src, {}).update(boots)

    def send_acks(self, force: bool = True) -> None:
        """Tell publishers what is on disk (so they can forget it), at most every ACK_INTERVAL."""
        now = time.monotonic()
        if not self._acks or (not force and now - self._acked_at < ACK_INTERVAL):
            return
        acks, self._acks, self._acked_at = self._acks, {}, now
        for src, boots in acks.items():  # QoS 0: each ack covers all before it, and a lost one is
            # made good by the next, or by the publisher's resend, which the recorder acknowledges again
            self.bus.publish(self.topics.recorder_ack(src), encode(RecorderAck(boots).payload()), qos=0)

    def _take(self, topic: str, raw: bytes, now: float, rows: list[Row], touched: dict) -> None:
        where = self.topics.parse(topic)
        assert where is not None  # on_message queues only topics of the session
        if where.kind in ("data", "errors"):
            row = self._row(topic, raw, now, touched)
            if row is not None:
                rows.append(row)
        elif where.kind == "instance_processed":
            self._processed(topic, where, raw, now, touched)
        else:
            self._system(topic, where, raw, now)

    def _refuse(self, kind: str, topic: str, reason: str, **detail: Any) -> None:
        """Record why a message was refused or kept as foreign (an event, in the batch's transaction)
        and say so on the error topic; ``detail``: sender, field, size, message_id, as known."""
        self.store.event(kind, detail.get("sender"), None, topic=topic, reason=reason, **detail)
        self._report(topic, f"{kind}: {reason}", **detail)

    def _report(self, topic: str, reason: str, **detail: Any) -> None:
        """Log a refusal and publish it as an error event (callable from any thread); beyond the rate
        limit only counted, the next one sent says how many were not (the store's events keep all)."""
        if not self.error_limit.allow():
            return
        sender = detail.get("sender")
        log.warning("recorder: on %r from %s: %s", topic, sender or "an unknown sender", reason)
        suppressed = self.error_limit.take_refused() or None
        event = ErrorEvent(instance="recorder", topic=topic, reason=reason, suppressed=suppressed, **detail)
        self.bus.publish(self.topics.errors(), encode(event.payload(), self.stamper.control()))

    def _foreign(self, topic: str, raw: bytes, now: float, payload: Any = None) -> Row:
        """A message without (valid) metadata: its payload (JSON, arrays and bytes), or, when it is
        neither JSON nor Ether's binary encoding, its bytes as they came."""
        user_topic = self.topics.user_topic(topic) if self.topics.is_data(topic) else topic
        if payload is None:
            try:
                payload, _ = decode(raw)
            except WireError as exc:
                payload = exc.payload if isinstance(exc, MetaError) else bytes(raw)
        try:
            text, data = payload_text(payload)
        except ValueError:  # e.g. a payload pydantic cannot write back as JSON
            text, data = payload_text(bytes(raw))
        return Row(user_topic, text, None, None, None, None, [], None, now, data)

    def _row(self, topic: str, raw: bytes, now: float, touched: dict[str, dict[str, int]]) -> Row | None:
        user_topic = self.topics.user_topic(topic) if self.topics.is_data(topic) else topic
        try:
            payload, meta = decode(raw)
        except MetaError as exc:  # foreign, with an error event naming the field
            self._refuse("bad_metadata", user_topic, str(exc), sender=exc.src, field=exc.field)
            return self._foreign(topic, raw, now, exc.payload)
        except WireError as exc:  # neither JSON nor Ether's binary encoding: kept as it came, as bytes
            if arrays.is_frame(raw):  # it claims to be Ether's binary encoding but is not
                self._refuse("bad_frame", user_topic, str(exc))
            return self._foreign(topic, raw, now, bytes(raw))
        if meta is not None and meta.src and self.topics.is_data(topic):
            meta = self._believed(raw, meta, user_topic)
        if meta is None:
            return self._foreign(topic, raw, now, payload)
        seq = meta.seq if meta.seq > 0 and meta.src and meta.boot else None
        known = self.ledger.streams.get((meta.src, meta.boot)) if seq is not None else None
        implausible = known.implausible(seq, now) if known is not None and seq is not None else None
        if implausible:
            why = f"'_ether.seq' {implausible}"
            self._refuse("bad_metadata", user_topic, why, sender=meta.src, field="seq", message_id=meta.id)
            return self._foreign(topic, raw, now, payload)
        text, data = payload_text(payload)
        row = Row(
            user_topic,
            text,
            meta.id or None,
            meta.src or None,
            meta.boot or None,
            seq,
            meta.parents,
            meta.t,
            now,
            data,
        )
        if seq is not None:
            key = (meta.src, meta.boot, seq)
            if not self._numbered(meta, user_topic, now, touched):
                self._duplicate(key, row)
                return None
            self._batch[key] = row
            if meta.src in self._devices:
                self._clock(meta, now)
        return row

    def _numbered(self, meta: Meta, user_topic: str, now: float, touched: dict[str, dict[str, int]]) -> bool:
        """Account for one numbered message in its stream (gaps opened and filled, a new boot; it is
        acknowledged with the batch); whether it is new (not a resend of a saved one)."""
        stream, new_boot = self.ledger.stream(meta.src, meta.boot, now)
        if new_boot and not meta.boot.endswith(REPORTS_SUFFIX):  # a restart: a discontinuity
            earlier = [b for b in self.ledger.boots_of(meta.src) if b != meta.boot]
            self.store.event("new_boot", meta.src, meta.boot, first_seq=meta.seq, earlier_boots=earlier)
        is_new, opened, filled = stream.add(meta.seq, now)
        touched.setdefault(meta.src, {})[meta.boot] = 0
        for gap in opened:
            log.warning("recorder: %s (boot %s) skipped seq %d..%d", meta.src, meta.boot, gap.first, gap.last)
            self.store.event(
                "gap", meta.src, meta.boot, first_seq=gap.first, last_seq=gap.last, topic=user_topic
            )
        for gap in filled:
            self.store.event("gap_filled", meta.src, meta.boot, seq=meta.seq, gap=[gap.first, gap.last])
        return is_new

    def _processed(self, topic: str, where: Topic, raw: bytes, now: float, touched: dict) -> None:
        """An instance's report of what it processed (numbered, signed, its own name in the topic):
        kept once, acknowledged like data; ignored, with an error event, if it does not fit."""
        try:
            payload, meta = decode(raw)
            report = parse(ProcessedReport, payload)
        except (WireError, ContractError) as exc:
            sender = exc.src if isinstance(exc, MetaError) else None
            self._refuse(
                "bad_system_message", topic, str(exc), sender=sender, field=getattr(exc, "field", None)
            )
            return
        if not numbered(meta) or meta.src != where.name or report.instance != where.name:
            reason = f"a processed report must be numbered and come from '{where.name}' itself"
            self._refuse("bad_system_message", topic, reason, sender=meta.src if meta else None, field="src")
            return
        problem = self.sources.problem(raw, meta.src)
        implausible = (
            self.ledger.streams.get((meta.src, meta.boot)) or Stream(meta.src, meta.boot)
        ).implausible(meta.seq, now, since=self.since)
        if problem or implausible:
            self._refuse("bad_system_message", topic, f"ignored a processed report: {problem or implausible}")
            return
        if self._numbered(meta, topic, now, touched):
            self.store.processed_report(meta.src, meta.boot, meta.seq, report, now)

    def _duplicate(self, key: tuple[str, str, int], row: Row) -> None:
        """A second message numbered like a saved one: a resend (identical: dropped) or a conflict (kept)."""
        first = self._batch.get(key)
        saved = first.content() if first is not None else self.store.saved_content(*key)
        if saved is None or same_content(tuple(saved), row.content()):
            return
        if not self.store.conflict(row):
            return  # this conflict is kept already: its resend is not a new one
        self._refuse(
            "conflict",
            row.topic,
            f"a second message numbered ({row.src}, {row.boot}, {row.seq}) differs from the saved one;"
            " both are kept (conflicts)",
            sender=row.src,
            field="seq",
            message_id=row.msg_id,
        )

    def _believed(self, raw: bytes, meta: Meta, user_topic: str) -> Meta | None:
        """``meta`` if its src is verified; else None (the message is stored as foreign) and an error
        event that names the claimed source."""
        problem = self.sources.problem(raw, meta.src)
        if problem is None:
            return meta
        claimed = {"claimed_src": meta.src, "claimed_boot": meta.boot, "claimed_seq": meta.seq}
        self.store.event("unverified_source", None, None, topic=user_topic, reason=problem, **claimed)
        self._report(user_topic, f"stored as foreign: {problem}")
        return None

    def _clock(self, meta: Meta, now: float) -> None:
        """A board stamps readings with its own clock: record its offset to this host's (see clocks)."""
        detail = self._clocks.observe(meta.src, meta.boot, meta.t, now, meta.seq)
        if detail is not None:
            self.store.event("device_clock", meta.src, meta.boot, **detail)

    def _system(self, topic: str, where: Topic, raw: bytes, now: float) -> None:
        """A closing report, an instance status or a device schema: checked against its model, ignored
        (with an error event) if it does not fit or claims the impossible."""
        try:
            payload, _ = decode(raw)
            message: Message = parse(SYSTEM[where.kind], payload)
        except (WireError, ContractError) as exc:
            sender = exc.src if isinstance(exc, MetaError) else None
            self._refuse(
                "bad_system_message", topic, str(exc), sender=sender, field=getattr(exc, "field", None)
            )
            return
        if isinstance(message, LogRecord):  # the broker let only its process publish on log/<name>
            self.store.log(where.name, message, now)
        elif isinstance(message, RecorderClosing):
            self._closing(topic, message, raw, now)
        elif isinstance(message, DeviceSchema):
            self._devices.add(message.device)
            self.sources.note(where.kind, message.device)
            self.store.event("device_schema", message.device, message.boot, schema=payload)
        elif isinstance(message, InstanceStatus):  # restarts and deaths are data
            self.sources.note(where.kind, message.instance)
            self._instance_status(message, payload)

    def _closing(self, topic: str, closing: RecorderClosing, raw: bytes, now: float) -> None:
        """A publisher's last numbers, if it signed them: what the recorder did not get of them is
        lost at the tail."""
        src = closing.src
        problem = self.sources.problem(raw, src)
        if problem is not None:
            self.store.event("unverified_source", None, None, topic=topic, reason=problem, claimed_src=src)
            self._report(topic, f"ignored a closing report: {problem}")
            return
        for boot, last in closing.boots.items():
            probe = self.ledger.streams.get((src, boot)) or Stream(src, boot)
            implausible = probe.implausible(last, now, since=self.since)
            if implausible:
                reason = f"closing report of ({src}, {boot}): {implausible}; ignored"
                self._refuse("bad_system_message", topic, reason, sender=src, field=f"boots.{boot}")
                return
        for boot, last in closing.boots.items():
            stream, _ = self.ledger.stream(src, boot, now)
            gap = stream.expect_until(last, now)
            if gap is not None:
                log.warning("recorder: %s (boot %s) lost its last %d messages", src, boot, gap.size)
                self.store.event("gap", src, boot, first_seq=gap.first, last_seq=gap.last, cause=gap.cause)
                self.store.save_stream(src, boot, stream.contiguous, stream.max_seq, stream.first_seen, now)
                self.store.save_gaps(
                    src, boot, [(g.first, g.last, g.detected_at, g.cause) for g in stream.gaps]
                )
        self.store.event("closing", src, None, boots=closing.boots)

    def _instance_status(self, status: InstanceStatus, payload: dict) -> None:
        """An instance's start, restart, death, failure or stop (once per state, pid and restart)."""
        name, state = status.instance, status.state
        key = (state, status.pid, status.restarts)
        seen = self._seen_status.get(name)
        if seen is not None and late_will(seen[0], state, seen[1], status.pid) and seen[2] == status.restarts:
            return
        if (
            state in ("ready", "restarting", "dead", "failed", "stopped")
            and self._seen_status.get(name) != key
        ):
            self._seen_status[name] = key
            detail = {
                k: payload.get(k)
                for k in ("pid", "restarts", "exit_code", "error", "class", "subscribes")
                if k in payload
            }
            self.store.event(f"instance_{state}", name, None, **detail)


def record(spec: RecorderSpec) -> int:
    topics = Topics(spec.session)
    dead = encode(RecorderStatus(state="dead", pid=os.getpid()).payload())
    bus = Bus(
        BrokerAddress(**spec.broker),
        client_id=f"ether-{spec.session}-recorder-{os.getpid()}",
        will=Will(topics.recorder_status(), dead),
    )
    try:
        bus.connect()
    except BrokerError as exc:
        log.error("recorder: %s", exc)
        return exits.NO_BROKER
    logs = publish_logs(bus, topics.log("recorder"))
    store = Store(spec.run_dir)
    recorder = Recorder(spec, bus, store)
    store.db.execute("BEGIN")
    store.event("recorder_start", "recorder", recorder.stamper.boot, pid=os.getpid(), restarts=spec.restarts)
    store.db.execute("COMMIT")
    writer = threading.Thread(target=recorder.write, name="ether-recorder-writer", daemon=True)
    writer.start()
    threading.Thread(
        target=recorder.count_unprocessed, name="ether-recorder-unprocessed", daemon=True
    ).start()
    filters = [topics.data_all()]
    if filters != ["#"]:  # '#' already covers the rest; overlapping filters would deliver twice
        filters += [topics.errors(), topics.instance_status_all(), topics.device_schema_all()]
        filters.append(topics.pattern("instance_processed"))
        filters.append(topics.pattern("log"))
        filters += [topics.recorder_closing(), topics.recorder_control(), topics.recorder_resend()]
    with bus.subscribing():
        for topic_filter in filters:
            bus.subscribe(topic_filter, recorder.on_message)
    recorder.announce("ready")
    log.info("recorder ready: saving session data to %s", spec.run_dir)

    # the session's end (or death) is our signal to commit everything and stop
    on_lifeline_cut(lambda: recorder.barrier(_Barrier(None, then_stop=True)))
    recorder.finished.wait()
    writer.join(10)
    recorder.announce("failed" if recorder.failed else "stopped")
    stop_publishing_logs(logs)
    bus.close()
    store.close()
    return exits.FAILED if recorder.failed else exits.OK


def main() -> None:
    setup_logging(whole_process=True)
    spec = read_spec()
    if spec is None:  # the session ended (or chose another recorder) before it sent our spec
        sys.exit(exits.NO_BROKER)
    code = record(RecorderSpec(**spec))
    sys.stdout.flush()
    os._exit(code)
