"""The recorder process: subscribes to every data topic, saves each message once, acknowledges it.

Messages are queued by paho's network thread and written by one writer thread in batches: whatever
arrived while the previous batch was committing is the next batch, so latency stays low at low rates
and commits stay few at high rates. Acknowledgements go out only after the commit.
"""

from __future__ import annotations

import logging
import os
import queue
import sys
import threading
import time
from dataclasses import dataclass
from typing import Any

from ether import exits
from ether.contract.messages import RecorderAck, RecorderClosing, RecorderCommand, RecorderStatus, ok, refused
from ether.contract.topics import Topic, Topics
from ether.contract.wire import Meta, Stamper, WireError, decode, decode_object, encode
from ether.data.recorder.clocks import DeviceClocks
from ether.data.recorder.ledger import Ledger
from ether.data.recorder.store import Row, Store, payload_text
from ether.logs import setup_logging
from ether.processes import on_lifeline_cut, read_spec
from ether.transport.broker import BrokerAddress, BrokerError
from ether.transport.bus import Bus, Will
from ether.transport.requests import answer

log = logging.getLogger("ether.recorder")

BATCH = 5000
ACK_INTERVAL = 0.02  # acknowledgements are coalesced: at most one per source per 20 ms
RECORDED = ("data", "errors", "recorder_closing", "instance_status", "device_schema")  # topic kinds saved


@dataclass
class RecorderSpec:
    """What the session sends the recorder process on stdin (one JSON line)."""

    broker: dict[str, Any]
    session: str
    run_dir: str
    restarts: int = 0


class _Barrier:
    """A request that is answered when the writer reaches it: everything queued before is committed."""

    def __init__(self, request: Meta | None, then_stop: bool = False, forced: dict | None = None) -> None:
        self.request, self.then_stop, self.forced = request, then_stop, forced


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
        self._clocks = DeviceClocks()
        self._acks: dict[str, dict[str, int]] = {}  # committed, not yet announced
        self._acked_at = 0.0
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
        try:
            payload, meta = decode(raw)
        except WireError:
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
            answer(self.bus, self.stamper, meta, ok(self.status("ready")))
        else:
            forced = None
            if control.command == "shutdown" and control.forced_by:  # a forced quit (the monitor's): at once
                forced = {"by": control.forced_by, "unconfirmed": control.unconfirmed}
            self.inbox.put(_Barrier(meta, then_stop=control.command == "shutdown", forced=forced))
            if forced:
                self.forcing = True  # after the put: the writer then finds this request in its queue

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
        ).payload()

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
            batch = [item]
            while len(batch) < BATCH:
                try:
                    batch.append(self.inbox.get_nowait())
                except queue.Empty:
                    break
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
            self.send_acks(force=bool(barriers))
            for barrier in barriers:
                answer(self.bus, self.stamper, barrier.request, ok(self.status("ready")))
                if barrier.then_stop:
                    self.finished.set()

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
        not_written = len(batch) - len(barriers)
        with self.store.transaction():
            for barrier in barriers:
                if barrier.forced:
                    self.store.event("forced_quit", None, None, not_written=not_written, **barrier.forced)
        log.warning(
            "recorder: stopping now (a forced quit); %d messages received were not written", not_written
        )
        for barrier in barriers:
            answer(self.bus, self.stamper, barrier.request, ok(self.status("stopped")))
        self.finished.set()

    def commit(self, items: list[tuple[str, bytes, float]]) -> None:
        rows: list[Row] = []
        touched: dict[str, dict[str, int]] = {}
        with self.store.transaction():
            for topic, raw, now in items:
                where = self.topics.parse(topic)
                if where.kind in ("data", "errors"):
                    row = self._row(topic, raw, now, touched)
                    if row is not None:
                        rows.append(row)
                else:
                    self._system(where, raw, now)
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
        for src, boots in acks.items():
            self.bus.publish(self.topics.recorder_ack(src), encode(RecorderAck(boots).payload()))

    def _row(self, topic: str, raw: bytes, now: float, touched: dict[str, dict[str, int]]) -> Row | None:
        user_topic = self.topics.user_topic(topic) if self.topics.is_data(topic) else topic
        try:
            payload, meta = decode(raw)
        except WireError:  # neither JSON nor Ether's binary encoding: kept as it came, as bytes
            payload, meta = bytes(raw), None
        text, data = payload_text(payload)
        if meta is None:
            return Row(user_topic, text, None, None, None, None, [], None, now, data)
        seq = meta.seq if meta.seq > 0 and meta.src and meta.boot else None
        if seq is not None:
            stream, new_boot = self.ledger.stream(meta.src, meta.boot, now)
            if new_boot:  # a source seen with another boot before has restarted: a discontinuity
                earlier = [b for b in self.ledger.boots_of(meta.src) if b != meta.boot]
                self.store.event("new_boot", meta.src, meta.boot, first_seq=seq, earlier_boots=earlier)
            is_new, opened, filled = stream.add(seq, now)
            touched.setdefault(meta.src, {})[meta.boot] = 0
            for gap in opened:
                log.warning(
                    "recorder: %s (boot %s) skipped seq %d..%d", meta.src, meta.boot, gap.first, gap.last
                )
                self.store.event(
                    "gap", meta.src, meta.boot, first_seq=gap.first, last_seq=gap.last, topic=user_topic
                )
            for gap in filled:
                self.store.event("gap_filled", meta.src, meta.boot, seq=seq, gap=[gap.first, gap.last])
            if not is_new:
                return None
            if meta.src in self._devices:
                self._clock(meta, now)
        return Row(
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

    def _clock(self, meta: Meta, now: float) -> None:
        """A board stamps readings with its own clock: record its offset to this host's (see clocks)."""
        detail = self._clocks.observe(meta.src, meta.boot, meta.t, now, meta.seq)
        if detail is not None:
            self.store.event("device_clock", meta.src, meta.boot, **detail)

    def _system(self, where: Topic, raw: bytes, now: float) -> None:
        payload = decode_object(raw)
        if payload is None:
            return
        if where.kind == "recorder_closing":
            closing = RecorderClosing.read(payload)
            if closing is None:
                log.warning("recorder: ignoring a malformed closing report %r", payload)
                return
            src = closing.src
            for boot, last in closing.boots.items():
                stream, _ = self.ledger.stream(src, boot, now)
                gap = stream.expect_until(last, now)
                if gap is not None:
                    log.warning("recorder: %s (boot %s) lost its last %d messages", src, boot, gap.size)
                    self.store.event(
                        "gap", src, boot, first_seq=gap.first, last_seq=gap.last, cause=gap.cause
                    )
                    self.store.save_stream(
                        src, boot, stream.contiguous, stream.max_seq, stream.first_seen, now
                    )
                    self.store.save_gaps(
                        src, boot, [(g.first, g.last, g.detected_at, g.cause) for g in stream.gaps]
                    )
            self.store.event("closing", src, None, boots=closing.boots)
        elif where.kind == "device_schema":
            device = payload.get("device") or where.name
            self._devices.add(device)
            self.store.event("device_schema", device, payload.get("boot"), schema=payload)
        elif where.kind == "instance_status" and "instance" in payload:  # restarts and deaths are data
            name, state = str(payload["instance"]), payload.get("state")
            key = (state, payload.get("pid"), payload.get("restarts"))
            if (
                state in ("ready", "restarting", "dead", "failed", "stopped")
                and self._seen_status.get(name) != key
            ):
                self._seen_status[name] = key
                detail = {
                    k: payload.get(k)
                    for k in ("pid", "restarts", "exit_code", "error", "class")
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
    store = Store(spec.run_dir)
    recorder = Recorder(spec, bus, store)
    store.db.execute("BEGIN")
    store.event("recorder_start", "recorder", recorder.stamper.boot, pid=os.getpid(), restarts=spec.restarts)
    store.db.execute("COMMIT")
    writer = threading.Thread(target=recorder.write, name="ether-recorder-writer", daemon=True)
    writer.start()
    filters = [topics.data_all()]
    if filters != ["#"]:  # '#' already covers the rest; overlapping filters would deliver twice
        filters += [topics.errors(), topics.instance_status_all(), topics.device_schema_all()]
        filters += [topics.recorder_closing(), topics.recorder_control(), topics.recorder_resend()]
    for topic_filter in filters:
        bus.subscribe(topic_filter, recorder.on_message)
    recorder.announce("ready")
    log.info("recorder ready: saving session data to %s", spec.run_dir)

    # the session's end (or death) is our signal to commit everything and stop
    on_lifeline_cut(lambda: recorder.inbox.put(_Barrier(None, then_stop=True)))
    recorder.finished.wait()
    writer.join(10)
    recorder.announce("failed" if recorder.failed else "stopped")
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
