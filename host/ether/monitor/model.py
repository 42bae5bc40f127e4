"""The monitor's view of a session, fed from the bus on paho's network thread.

Nothing here knows about Textual. Each message costs a dictionary update under a lock; the app asks
for a :class:`Snapshot` on a timer (twice a second), so 2k messages/s never turn into 2k redraws.
Everything comes from the broker: retained statuses (instances, devices, supervisors, recorder),
error events, recorder acknowledgements and the data topics themselves.
"""

from __future__ import annotations

import math
import os
import re
import socket
import threading
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pydantic_core

from ether.contract import arrays
from ether.contract.messages import RecorderCommand, fits, read_reply
from ether.contract.topics import Topic, Topics, matches
from ether.contract.wire import META_KEY, Stamper, decode_object, encode
from ether.data.outbox import LATEST_SUFFIX
from ether.transport.broker import BrokerAddress
from ether.transport.bus import Bus
from ether.transport.requests import Pending, Requester, RequestTimeout
from ether.transport.signing import sign

BEHIND_AFTER = 3.0  # s: a durable message not confirmed saved after this long means the recorder is behind
BACKLOG_BEHIND = 10_000  # messages queued in the recorder, not yet written
BROKER_BEHIND = 2.0  # s: a supervisor that measures its broker this far behind (its status's broker_lag_s)
POLL_EVERY = 1.0  # s between recorder status requests
NOT_ANSWERING_AFTER = 3.0  # s without an answer to a status request
PLOT_POINTS = 120
HISTORY = 50  # messages kept per topic for the payload view
LOG_LINES = 2000
PARSED_TOPICS = 10_000
RATE_SMOOTHING = 1.0  # s: the time constant of the rates shown  # broker topics whose parse is kept
LIVE = ("starting", "ready", "restarting", "paused", "draining")
CONFLICT = "conflict:"  # how the recorder's error events start (recorder.py: _refuse, _believed, _closing)
UNVERIFIED = ("stored as foreign:", "ignored a closing report:")
RUN_LOG = re.compile(r" - (?:Ether:\d+ - )?(DEBUG|INFO|WARNING|ERROR|CRITICAL) - ")


@dataclass(frozen=True)
class InstanceRow:
    name: str
    cls: str = ""
    state: str = "not started"
    host: str = ""
    pid: int | None = None
    restarts: int = 0
    since: float | None = None  # wall clock when this process started
    rate_in: float = 0.0  # what it is being delivered: its topics' rate while it is ready, else 0
    rate_out: float = 0.0
    error: str = ""
    services: dict[str, Any] = field(default_factory=dict)  # service -> {arg: {type, required}} or None
    failed: int = 0  # error events it sent since the monitor started: messages its handlers rejected
    unprocessed: int | None = None  # messages it was meant to process and did not, when the session says


@dataclass(frozen=True)
class DeviceRow:
    name: str
    state: str = "?"
    firmware: str = ""
    platform: str = ""
    boot: str = ""
    dropped: int = 0
    rate_out: float = 0.0
    error: str = ""
    methods: dict[str, dict[str, Any]] = field(default_factory=dict)  # from its schema
    since: float | None = None  # wall clock when the monitor saw this boot of the board online


@dataclass(frozen=True)
class TopicRow:
    topic: str
    count: int
    rate: float
    kind: str  # durable | latest | device | plain (a foreign client's JSON, not numbered)
    recorded: str  # yes | NOT CONFIRMED (for more than BEHIND_AFTER) | NO (no recorder running)
    payload: Any
    source: str = ""
    bytes_rate: float = 0.0
    age: float = 0.0  # s since its last message
    jitter: float | None = None  # s: standard deviation of the gaps between its messages, last tick


@dataclass(frozen=True)
class RecorderView:
    state: str = "absent"  # absent (never announced) | ready | stopped | failed | dead
    pid: int | None = None
    run_dir: str = ""
    saved: int | None = None
    backlog: int | None = None
    missing: int | None = None  # messages in the gap ledger
    gaps: int | None = None  # ranges in the gap ledger
    restarts: int = 0
    size: int | None = None  # bytes of the store, when it is on this machine
    answering: bool = True
    unconfirmed: int = 0  # durable messages seen here that the recorder has not acknowledged
    oldest: float = 0.0  # age in s of the oldest of them
    conflicts: int = 0  # conflict events since the monitor started: a message numbered like a saved one
    unverified: int = 0  # messages stored as foreign: their claimed source was not proved by a signature
    broker_lag: float | None = None  # s, the largest a supervisor reports (when supervisors report it)

    @property
    def condition(self) -> str:
        """Its state as a user must read it: ``ready`` only while it answers and keeps up."""
        if self.state != "ready":
            return self.state
        if not self.answering:
            return "NOT ANSWERING"
        if self.oldest > BEHIND_AFTER or (self.backlog or 0) > BACKLOG_BEHIND:
            return "BEHIND"
        return "ready"


@dataclass(frozen=True)
class LogLine:
    t: float
    level: str  # info | warning | error
    source: str  # monitor | errors | run
    text: str


@dataclass(frozen=True)
class Snapshot:
    session: str
    url: str
    synced: bool  # the retained state of the session has arrived
    instances: tuple[InstanceRow, ...]
    devices: tuple[DeviceRow, ...]
    topics: tuple[TopicRow, ...]
    recorder: RecorderView
    supervisors: tuple[tuple[str, str], ...]  # (name, state)
    problems: tuple[str, ...]  # what the banner says, most serious first
    plots: tuple[tuple[str, tuple[float, ...]], ...]  # ("topic field", values)
    log: tuple[LogLine, ...]  # new lines since the previous snapshot
    history: tuple[str | None, tuple[tuple[float, Any], ...]] = (
        None,
        (),
    )  # the watched topic's last messages

    def instance(self, name: str) -> InstanceRow | None:
        return next((i for i in self.instances if i.name == name), None)

    def device(self, name: str) -> DeviceRow | None:
        return next((d for d in self.devices if d.name == name), None)

    def topic(self, name: str) -> TopicRow | None:
        return next((t for t in self.topics if t.topic == name), None)


class _Stream:
    """One (src, boot) of durable data: the highest seq seen here and the highest the recorder confirmed."""

    def __init__(self) -> None:
        self.last = 0
        self.acked = 0
        self.marks: deque[tuple[int, float]] = deque()  # (seq, arrival) about every 0.1 s, unconfirmed only

    def seen(self, seq: int, now: float) -> None:
        if seq > self.last:
            self.last = seq
            if seq > self.acked and (not self.marks or now - self.marks[-1][1] >= 0.1):
                self.marks.append((seq, now))

    def ack(self, seq: int) -> None:
        self.acked = max(self.acked, seq)
        while self.marks and self.marks[0][0] <= self.acked:
            self.marks.popleft()

    @property
    def pending(self) -> int:
        return max(0, self.last - self.acked)


class _Topic:
    """One data topic's counters, updated per message with plain arithmetic (no allocation but the
    history's entry): the rates, the jitter and the rows are made from them at the snapshot."""

    __slots__ = (
        "count",
        "bytes",
        "payload",
        "history",
        "kind",
        "stream",
        "seq",
        "arrived",
        "gaps",
        "gap_sum",
        "gap_squares",
        "plotted",
    )

    def __init__(self) -> None:
        self.count = 0
        self.bytes = 0
        self.payload: Any = None
        self.history: deque[tuple[float, Any]] = deque(maxlen=HISTORY)  # (monotonic clock, payload)
        self.kind = "plain"
        self.stream: tuple[str, str] | None = None
        self.seq = 0
        self.arrived = 0.0
        self.gaps = 0  # since the last snapshot: how many gaps between messages, their sum and squares
        self.gap_sum = 0.0
        self.gap_squares = 0.0
        self.plotted: list[str] = []

    def arrive(self, payload: Any, size: int, now: float) -> None:
        if self.count:
            gap = now - self.arrived
            self.gaps += 1
            self.gap_sum += gap
            self.gap_squares += gap * gap
        self.count += 1
        self.bytes += size
        self.payload = payload
        self.history.append((now, payload.outline() if isinstance(payload, Frame) else payload))
        self.arrived = now

    def jitter(self) -> float | None:
        """The standard deviation of the gaps between messages since the last call (None: too few)."""
        n, total, squares = self.gaps, self.gap_sum, self.gap_squares
        self.gaps, self.gap_sum, self.gap_squares = 0, 0.0, 0.0
        if n < 2:
            return None
        mean = total / n
        return max(0.0, squares / n - mean * mean) ** 0.5


def _read_data(raw: bytes) -> tuple[Any, tuple[str, str, int] | None]:
    """A data message's payload and its numbering (src, boot, seq), or None when it is not numbered.

    Like :func:`ether.contract.wire.decode`, without building a ``Meta`` (the monitor reads only these
    three, thousands of times a second); malformed metadata counts as none, not JSON is shown as text.
    A binary frame's payload is a :class:`Frame`: its header is read here, its arrays only when shown."""
    try:
        if arrays.is_frame(raw):
            header, data = arrays.sections(raw)
            body = pydantic_core.from_json(bytes(header))
            if isinstance(body, dict):
                meta = body.pop(META_KEY, None)
                return Frame(body, data), _numbering(meta)
        else:
            body = pydantic_core.from_json(raw)
    except ValueError:  # not JSON (ArrayError is one too: a frame whose header runs past its end)
        return bytes(raw[:200]).decode("utf-8", "replace"), None
    if not isinstance(body, dict):
        return body, None
    return body, _numbering(body.pop(META_KEY, None))


def _numbering(meta: Any) -> tuple[str, str, int] | None:
    if not isinstance(meta, dict):
        return None
    src, boot, seq = meta.get("src"), meta.get("boot"), meta.get("seq")
    if isinstance(src, str) and isinstance(boot, str) and src and boot and type(seq) is int and seq > 0:
        return src, boot, seq
    return None


class Frame:
    """A binary message's payload as the monitor keeps it: its header (each array a ``$array``
    reference: dtype and shape) and its data section, decoded only for the message on screen."""

    __slots__ = ("header", "data")

    def __init__(self, header: dict[str, Any], data: memoryview) -> None:
        self.header, self.data = header, data

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Frame) and other.header == self.header and other.data == self.data

    __hash__ = None  # type: ignore[assignment]

    def decoded(self) -> Any:
        """The payload with its arrays (numpy views of the message) and bytes; raises ValueError
        (ArrayError) for a malformed data section, or when numpy is missing."""
        return arrays.join(self.header, self.data)

    def outline(self) -> Frame:
        """The same header without the data section (what the history keeps of a frame)."""
        return Frame(self.header, memoryview(b""))


class SessionModel:
    """Everything the monitor knows about one session; fed by the bus, read by :meth:`snapshot`."""

    def __init__(self, address: BrokerAddress, session: str = "default", data_qos: int = 0) -> None:
        """``data_qos`` 0 (the default): the data topics come on a connection of their own at QoS 0,
        without an acknowledgement each (the broker may drop some for a monitor that falls behind:
        rates and counts are then what the monitor saw); 1: every one, acknowledged."""
        self.address = address
        self.topics = Topics(session)
        self.data_qos = data_qos
        self.name = f"monitor-{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:4]}"
        self.stamper = Stamper(f"monitor:{socket.gethostname()}-{os.getpid()}")
        self.bus: Bus | None = None
        self.data_bus: Bus | None = None  # the QoS 0 connection for the data topics
        self.requester: Requester | None = None
        self.synced = threading.Event()
        self._lock = threading.Lock()
        self._instances: dict[str, dict[str, Any]] = {}
        self._since: dict[str, tuple[Any, float]] = {}  # name -> (pid or boot, first seen alive)
        self._errors: dict[str, str] = {}  # instance or device -> last error
        self._failed: dict[str, int] = {}  # instance or device -> error events it sent
        self._conflicts = 0
        self._unverified = 0
        self._devices: dict[str, dict[str, Any]] = {}  # name -> {"schema": ..., "state": ...}
        self._supervisors: dict[str, dict[str, Any]] = {}
        self._recorder: dict[str, Any] = {}
        self._recorder_polled: dict[str, Any] = {}
        self._topics: dict[str, _Topic] = {}
        self._streams: dict[tuple[str, str], _Stream] = {}
        self._sent: dict[str, int] = {}  # src -> data messages seen
        self._draining: set[str] = set()  # instances that reported their last numbers: ending
        self._plots: dict[tuple[str, str], deque[float]] = {}
        self._log: deque[LogLine] = deque(maxlen=LOG_LINES)
        self._new_log: list[LogLine] = []
        self._rates: dict[str, tuple[int, float]] = {}  # key -> (count at last snapshot, rate)
        self._rate_at = time.monotonic()
        self._matches: dict[tuple[str, str], bool] = {}
        self._parsed: dict[str, Topic | None] = {}  # broker topic -> what it is
        self._poll: Pending | None = None
        self._polled_at = 0.0
        self._answered_at = time.monotonic()
        self._size: tuple[float, int | None] = (0.0, None)
        self.watched: str | None = None  # the topic whose last messages each snapshot carries
        self.changes = 0  # messages received so far (the app takes no new snapshot while it stays)

    # -- connection ---------------------------------------------------------------------------

    def connect(self, timeout: float = 10.0) -> None:
        """Connect, subscribe to the whole session, and wait until its retained state has arrived.
        With this user's key of the broker, what the monitor sends is signed as its own source."""
        from ether.transport.access import BrokerKey, client_address

        key = BrokerKey.find(self.address)
        if key is not None:
            self.stamper.key = key.signing_key(self.topics.session, self.stamper.source)
        address = client_address(self.address, self.topics.session, "monitor")  # it may stop the session
        client_id = f"ether-{self.topics.session}-{self.name}"
        self.bus = Bus(address, client_id=client_id)
        self.bus.connect(timeout)
        self.requester = Requester(self.bus, self.topics, self.stamper)
        system = f"{self.topics.root}/#"
        if self.data_qos == 0:  # a second connection: in the default session '#' also covers ether/
            self.data_bus = Bus(address, client_id=f"{client_id}-data")
            self.data_bus.connect(timeout)
            self.data_bus.subscribe(self.topics.data_all(), self.on_data_message, timeout, qos=0)
            self.bus.subscribe(system, self.on_message, timeout)
        elif self.topics.data_all() == "#":
            self.bus.subscribe("#", self.on_message, timeout)  # two overlapping filters deliver twice
        else:
            for topic_filter in (self.topics.data_all(), system):
                self.bus.subscribe(topic_filter, self.on_message, timeout)
        # Retained messages come right after a subscription's acknowledgement; a message we send after
        # it comes back after them, so its echo says that everything retained has arrived.
        probe = f"{self.topics.replies(self.bus.client_id)}/synced"
        self.bus.subscribe(probe, lambda topic, raw: self.synced.set(), timeout)
        self.bus.publish(probe, b"{}")
        self.synced.wait(timeout)

    def close(self) -> None:
        for bus in (self.data_bus, self.bus):
            if bus is not None:
                bus.close()
        self.bus = self.data_bus = None

    @property
    def url(self) -> str:
        return self.address.url

    # -- network thread: remember, never block -------------------------------------------------

    def on_message(self, topic: str, raw: bytes) -> None:
        where = self._where(topic)
        if where is None:
            return  # another session's, or outside the layout
        self.changes += 1
        if where.kind == "data":
            self._on_data(where.detail, raw)
        else:
            self._on_system(where, raw)

    def on_data_message(self, topic: str, raw: bytes) -> None:
        """The data connection's: in the default session its '#' brings the system topics too, which
        the other connection handles."""
        where = self._where(topic)
        if where is not None and where.kind == "data":
            self.changes += 1
            self._on_data(where.detail, raw)

    def _where(self, topic: str) -> Topic | None:
        where = self._parsed.get(topic, self)  # each topic is parsed once: a data topic carries thousands
        if where is self:
            if len(self._parsed) >= PARSED_TOPICS:
                self._parsed.clear()  # reply topics are one-off: the cache must not grow without end
            where = self._parsed[topic] = self.topics.parse(topic)
        return where  # type: ignore[return-value]

    def _on_data(self, name: str, raw: bytes) -> None:
        now = time.monotonic()
        payload, identity = _read_data(raw)
        with self._lock:
            stats = self._topics.get(name)
            if stats is None:
                stats = self._topics[name] = _Topic()
            stats.arrive(payload, len(raw), now)
            if identity is not None:
                src, boot, seq = identity
                key = (src, boot)
                if boot.endswith(LATEST_SUFFIX):
                    stats.kind = "latest"
                elif src in self._devices:
                    stats.kind = "device"
                else:
                    stats.kind = "durable"
                    stream = self._streams.get(key)
                    if stream is None:
                        stream = self._streams[key] = _Stream()
                    stream.seen(seq, now)
                stats.stream, stats.seq = key, seq
                self._sent[src] = self._sent.get(src, 0) + 1
            else:
                stats.kind, stats.stream = "plain", None
            for path in stats.plotted:
                value = field_value(payload, path)
                if value is not None:
                    self._plots[(name, path)].append(value)

    def _on_system(self, where: Topic, raw: bytes) -> None:
        if not fits(where.kind, decode_object(raw)):
            return  # not a message of the contract (a foreign or hostile sender): nothing to show
        if where.kind == "recorder_ack":
            self._on_ack(where.name, raw)
        elif where.kind == "recorder_status":
            self._on_recorder_status(raw)
        elif where.kind == "recorder_closing":
            self._on_closing(raw)
        elif where.kind in (
            "errors",
            "instance_status",
            "device_schema",
            "device_state",
            "supervisor_status",
        ):
            payload = decode_object(raw)
            if payload is None:
                return
            if where.kind == "errors":
                self._on_error(payload)
            elif where.kind == "instance_status":
                self._on_instance(payload)
            elif where.kind == "supervisor_status":
                self._on_supervisor(where.name, payload)
            else:
                self._on_device(where.name, where.kind.removeprefix("device_"), payload)

    def _on_ack(self, src: str, raw: bytes) -> None:
        acks = decode_object(raw)
        if acks is None:
            return
        with self._lock:
            for boot, seq in acks.items():
                if isinstance(seq, int):
                    stream = self._streams.get((src, boot))
                    if stream is None:
                        stream = self._streams[(src, boot)] = _Stream()
                    stream.ack(seq)

    def _on_closing(self, raw: bytes) -> None:
        """A publisher reports its last numbers at its end: it now waits for the recorder (the drain)."""
        report = decode_object(raw)
        if report is not None and report.get("src"):
            with self._lock:
                self._draining.add(str(report["src"]))

    def _on_recorder_status(self, raw: bytes) -> None:
        status = decode_object(raw)
        if status is None:
            return
        with self._lock:
            before = self._recorder.get("state"), self._recorder.get("pid")
            self._recorder = status
            self._recorder_polled = {}
            self._answered_at = time.monotonic()
            if before != (status.get("state"), status.get("pid")):
                state = status.get("state")
                where = f", saving to {status['run_dir']}" if status.get("run_dir") else ""
                level = "info" if state == "ready" else "error" if state in ("dead", "failed") else "warning"
                self._add_log(level, "monitor", f"recorder {state} (pid {status.get('pid')}{where})")

    def _on_error(self, event: dict[str, Any]) -> None:
        """An error event: a message an instance or board rejected, or one the recorder kept apart (a
        conflict) or stored as foreign (its claimed source not proved: a forgery, or an unsigned sender)."""
        who = str(event.get("instance") or "?")
        method = f" ({event['method']})" if event.get("method") else ""
        reason = str(event.get("reason", ""))
        with self._lock:
            self._errors[who] = reason
            if len(self._failed) < PARSED_TOPICS or who in self._failed:  # names are hostile input
                self._failed[who] = self._failed.get(who, 0) + 1
            if who == "recorder" and reason.startswith(CONFLICT):
                self._conflicts += 1
            elif who == "recorder" and reason.startswith(UNVERIFIED):
                self._unverified += 1
            self._add_log("error", "errors", f"{who} topic '{event.get('topic')}'{method}: {reason}")

    def _on_instance(self, status: dict[str, Any]) -> None:
        name = str(status.get("instance", ""))
        if not name:
            return
        with self._lock:
            before = self._instances.get(name, {})
            self._instances[name] = status
            pid = status.get("pid")
            if self._since.get(name, (None,))[0] != pid:
                self._since[name] = (pid, float(status.get("started") or status.get("t") or time.time()))
                self._draining.discard(name)
            state = status.get("state")
            if (before.get("state"), before.get("pid")) != (state, pid):
                extra = f": {status['error']}" if status.get("error") else ""
                level = "error" if state in ("dead", "failed") else "info"
                self._add_log(level, "monitor", f"instance '{name}' {state} (pid {pid}){extra}")
                if state in ("dead", "failed") and status.get("error"):
                    self._errors[name] = str(status["error"])

    def _on_device(self, name: str, leaf: str, payload: dict[str, Any]) -> None:
        with self._lock:
            device = self._devices.setdefault(name, {})
            before = (device.get("state") or {}).get("state")
            device[leaf] = payload
            boot = payload.get("boot")
            if leaf == "state" and self._since.get(f"device:{name}", (None,))[0] != boot:
                self._since[f"device:{name}"] = (boot, time.time())
            if leaf == "state" and payload.get("state") != before:
                level = "info" if payload.get("state") == "online" else "warning"
                self._add_log(level, "monitor", f"device '{name}' {payload.get('state')}")

    def _on_supervisor(self, name: str, status: dict[str, Any]) -> None:
        with self._lock:
            before = self._supervisors.get(name, {}).get("state")
            self._supervisors[name] = status
            if status.get("state") != before:
                self._add_log("info", "monitor", f"supervisor {name} {status.get('state')}")

    def _add_log(self, level: str, source: str, text: str) -> None:
        line = LogLine(time.time(), level, source, text)
        self._log.append(line)
        self._new_log.append(line)

    # -- any thread ----------------------------------------------------------------------------

    def log_line(self, text: str, source: str = "run") -> None:
        """A line of output from elsewhere (the ``ether run`` process the monitor shows)."""
        found = RUN_LOG.search(text)
        level = (found.group(1).lower() if found else "info").replace("critical", "error")
        with self._lock:
            self._add_log("warning" if level == "warning" else level, source, text.rstrip())

    def plot(self, topic: str, path: str) -> bool:
        """Start (True) or stop (False) keeping the values of a numeric field for a sparkline."""
        self.changes += 1  # the next tick shows it
        with self._lock:
            stats = self._topics.get(topic)
            if stats is None:
                return False
            if path in stats.plotted:
                stats.plotted.remove(path)
                del self._plots[(topic, path)]
                return False
            stats.plotted.append(path)
            self._plots[(topic, path)] = deque(maxlen=PLOT_POINTS)
            value = field_value(stats.payload, path)
            if value is not None:
                self._plots[(topic, path)].append(value)
            return True

    def request(self, topic: str, payload: Any, timeout: float) -> Any:
        """A request over the control plane (blocks: call it from a worker thread)."""
        if self.requester is None:
            raise RequestTimeout("the monitor is not connected")
        return self.requester.request(topic, payload, timeout)

    def publish(self, user_topic: str, payload: Any) -> None:
        """Publish a data message as the monitor (numbered, so a loss shows in the gap ledger; signed,
        so the recorder believes its source)."""
        if self.bus is None:
            raise RequestTimeout("the monitor is not connected")
        body = sign(encode(payload, self.stamper.stamp()), self.stamper.key)
        self.bus.publish(self.topics.data(user_topic), body)

    # -- the app's timer -------------------------------------------------------------------------

    def snapshot(self) -> Snapshot:
        """What the screen shows now; also asks the recorder for its counts about once a second."""
        now = time.monotonic()
        self._poll_recorder(now)
        with self._lock:
            dt = max(now - self._rate_at, 1e-3)
            self._rate_at = now
            topics = tuple(
                self._topic_row(name, stats, now, dt) for name, stats in sorted(self._topics.items())
            )
            rate_of = {t.topic: t.rate for t in topics}
            sent = {src: self._rate(f"src:{src}", n, dt) for src, n in self._sent.items()}
            instances = self._instance_rows(rate_of, sent)
            devices = tuple(self._device_row(n, d, sent) for n, d in sorted(self._devices.items()))
            recorder = self._recorder_view(now)
            supervisors = tuple(sorted((n, str(s.get("state"))) for n, s in self._supervisors.items()))
            plots = tuple((f"{t} {p}", tuple(v)) for (t, p), v in self._plots.items())
            log, self._new_log = tuple(self._new_log), []
            watched = self._topics.get(self.watched) if self.watched else None
            wall = time.time() - now  # the history keeps the monotonic clock: shown as wall clock
            history = (self.watched, tuple((t + wall, p) for t, p in watched.history) if watched else ())
        problems = self._problems(recorder, topics)
        return Snapshot(
            self.topics.session,
            self.url,
            self.synced.is_set(),
            instances,
            devices,
            topics,
            recorder,
            supervisors,
            problems,
            plots,
            log,
            history,
        )

    def _rate(self, key: str, count: int, dt: float) -> float:
        before, rate = self._rates.get(key, (0, 0.0))  # counts start with the monitor: a first burst shows
        now_rate = (count - before) / dt
        if rate == 0.0:
            rate = now_rate
        else:  # smoothed over about RATE_SMOOTHING seconds, whatever the pace of the snapshots
            weight = 1.0 - math.exp(-dt / RATE_SMOOTHING)
            rate += weight * (now_rate - rate)
        if rate < 0.05:
            rate = 0.0
        self._rates[key] = (count, rate)
        return rate

    def _topic_row(self, name: str, stats: _Topic, now: float, dt: float) -> TopicRow:
        rate = self._rate(f"topic:{name}", stats.count, dt)
        state = self._recorder.get("state", "absent")
        if state != "ready":
            recorded = "NO"
        elif stats.kind != "durable" or stats.stream is None:
            recorded = "yes"  # saved on arrival; a latest or device stream's losses show as gaps
        else:  # confirmed, or waiting for its confirmation for less than BEHIND_AFTER
            stream = self._streams.get(stats.stream)
            late = (
                stream is not None
                and stream.pending
                and stream.marks
                and now - stream.marks[0][1] > BEHIND_AFTER
            )
            recorded = "NOT CONFIRMED" if late else "yes"
        source = stats.stream[0] if stats.stream else ""
        return TopicRow(
            name,
            stats.count,
            rate,
            stats.kind,
            recorded,
            stats.payload,
            source,
            self._rate(f"bytes:{name}", stats.bytes, dt),
            now - stats.arrived,
            stats.jitter(),
        )

    def _instance_rows(self, rate_of: dict[str, float], sent: dict[str, float]) -> tuple[InstanceRow, ...]:
        configured = {
            name
            for s in self._supervisors.values()
            if s.get("state") == "running"
            for name in s.get("instances") or ()
        }
        rows = []
        for name in sorted(configured | set(self._instances)):
            status = self._instances.get(name)
            if status is None:
                rows.append(InstanceRow(name))
                continue
            state = str(status.get("state", "?"))
            if state in LIVE and name in self._draining:
                state = "draining"  # stopped working, waiting until the recorder has all its data
            # what it is delivered: nothing while paused (held), stopped or ending
            subscribes = (status.get("subscribes") or ()) if state == "ready" else ()
            rate_in = sum(
                rate for topic, rate in rate_of.items() if any(self._match(f, topic) for f in subscribes)
            )
            rows.append(
                InstanceRow(
                    name,
                    str(status.get("class", "")),
                    state,
                    str(status.get("host", "")),
                    status.get("pid"),
                    int(status.get("restarts") or 0),
                    self._since.get(name, (None, None))[1] if state in LIVE else None,
                    rate_in,
                    sent.get(name, 0.0),
                    self._errors.get(name, ""),
                    dict(status.get("service_args") or {s: None for s in status.get("services") or ()}),
                    self._failed.get(name, 0),
                    self._unprocessed(name, status),
                )
            )
        return tuple(rows)

    def _unprocessed(self, name: str, status: dict[str, Any]) -> int | None:
        """What the instance was meant to process and did not (yet): from its status, or the recorder's
        live count per instance (an instance it does not name has nothing left); None while neither
        says (sessions that do not report it)."""
        polled = {**self._recorder, **self._recorder_polled}.get("unprocessed")
        for value in (status.get("unprocessed"), polled.get(name, 0) if isinstance(polled, dict) else None):
            if type(value) is int and value >= 0:
                return value
        return None

    def _match(self, topic_filter: str, topic: str) -> bool:
        key = (topic_filter, topic)
        found = self._matches.get(key)
        if found is None:
            found = self._matches[key] = matches(topic_filter, topic)
        return found

    def _device_row(self, name: str, device: dict[str, Any], sent: dict[str, float]) -> DeviceRow:
        schema, state = device.get("schema") or {}, device.get("state") or {}
        return DeviceRow(
            name,
            str(state.get("state", "?")),
            str(schema.get("firmware") or ""),
            str(schema.get("platform") or ""),
            str(state.get("boot") or schema.get("boot") or ""),
            int(state.get("dropped") or 0),
            sent.get(name, 0.0),
            self._errors.get(name, ""),
            dict(schema.get("methods") or {}),
            self._since.get(f"device:{name}", (None, None))[1] if state.get("state") == "online" else None,
        )

    def _recorder_view(self, now: float) -> RecorderView:
        status = {**self._recorder, **self._recorder_polled}
        pending = [s for s in self._streams.values() if s.pending]
        oldest = min((s.marks[0][1] for s in pending if s.marks), default=now)
        run_dir = str(status.get("run_dir") or "")
        return RecorderView(
            state=str(status.get("state", "absent")),
            pid=status.get("pid"),
            run_dir=run_dir,
            saved=status.get("saved"),
            backlog=status.get("backlog"),
            missing=status.get("missing"),
            gaps=status.get("gaps"),
            restarts=int(status.get("restarts") or 0),
            size=self._store_size(run_dir, now),
            answering=status.get("state") != "ready" or now - self._answered_at < NOT_ANSWERING_AFTER,
            unconfirmed=sum(s.pending for s in pending),
            oldest=now - oldest,
            conflicts=self._conflicts,
            unverified=self._unverified,
            broker_lag=self._broker_lag(),
        )

    def _broker_lag(self) -> float | None:
        lags = [s.get("broker_lag_s") for s in self._supervisors.values() if s.get("state") == "running"]
        numbers = [float(x) for x in lags if isinstance(x, (int, float)) and not isinstance(x, bool)]
        return max((x for x in numbers if math.isfinite(x) and x >= 0), default=None)

    def _store_size(self, run_dir: str, now: float) -> int | None:
        checked, size = self._size
        if run_dir and now - checked >= 2.0:
            files = [Path(run_dir) / name for name in ("session.sqlite", "session.sqlite-wal")]
            size = sum(f.stat().st_size for f in files if f.exists()) if files[0].exists() else None
            self._size = (now, size)
        return size if run_dir else None

    def _poll_recorder(self, now: float) -> None:
        """Ask the recorder for its counts (saved, backlog, gaps): its retained status is only its state."""
        if self.requester is None or self._recorder.get("state") != "ready":
            return
        poll = self._poll
        if poll is not None and poll.done():
            reply = read_reply(poll.reply(0))
            if reply.ok and isinstance(reply.result, dict):
                with self._lock:
                    self._recorder_polled = {k: v for k, v in reply.result.items() if k != "state"}
                    self._answered_at = now
            self._poll = poll = None
        elif poll is not None and now - self._polled_at > NOT_ANSWERING_AFTER:
            try:
                poll.reply(0)  # forget it: a late answer must not be taken for a new one
            except RequestTimeout:
                pass
            self._poll = poll = None
        if poll is None and now - self._polled_at >= POLL_EVERY:
            self._polled_at = now
            self._poll = self.requester.send(
                self.topics.recorder_control(), RecorderCommand(command="status")
            )

    def _problems(self, recorder: RecorderView, topics: tuple[TopicRow, ...]) -> tuple[str, ...]:
        """The banner: everything that threatens the data-saving guarantee, most serious first."""
        if not self.synced.is_set():
            return ()
        problems = []
        data = [t.topic for t in topics]
        if recorder.state == "absent":
            if data:
                problems.append(
                    f"NOT RECORDED: session '{self.topics.session}' has no recorder; "
                    f"{_some(data)} {'is' if len(data) == 1 else 'are'} not being saved"
                )
        elif recorder.state != "ready":
            problems.append(f"RECORDER {recorder.state.upper()}: new data is NOT being saved")
        elif not recorder.answering:
            problems.append("RECORDER NOT ANSWERING: it may be stuck; new data may not be saved")
        late = [t.topic for t in topics if t.recorded == "NOT CONFIRMED"]
        if recorder.state == "ready" and (
            late or (recorder.backlog or 0) > BACKLOG_BEHIND or recorder.oldest > BEHIND_AFTER
        ):
            where = f" on {_some(late)}" if late else ""
            problems.append(
                f"RECORDER BEHIND: {recorder.unconfirmed} messages{where} not confirmed saved "
                f"(oldest {recorder.oldest:.0f} s), backlog {recorder.backlog or 0}"
            )
        lag = self._broker_lag() or 0.0
        if lag >= BROKER_BEHIND:
            problems.append(f"BROKER BEHIND: {lag:.0f} s; every message is delayed (overloaded)")
        if recorder.missing:
            problems.append(
                f"GAPS: {recorder.missing} messages missing in {recorder.gaps or '?'} "
                "range(s) of the gap ledger (ether sessions / run.gaps)"
            )
        if recorder.conflicts:
            problems.append(
                f"CONFLICTS: {recorder.conflicts} message(s) numbered like saved ones but different: "
                "both kept (run.conflicts); the store will be sealed incomplete"
            )
        if recorder.unverified:
            problems.append(
                f"UNVERIFIED SOURCES: {recorder.unverified} message(s) claimed a source without its "
                "signature (forged, or an unsigned sender): stored as foreign (see the log)"
            )
        return tuple(problems)


def _some(names: list[str], shown: int = 4) -> str:
    more = f" and {len(names) - shown} more" if len(names) > shown else ""
    return ", ".join(f"'{n}'" for n in names[:shown]) + more


def numeric_fields(payload: Any, prefix: str = "") -> list[str]:
    """Dotted paths to the numbers in a payload (a bare number is ``root``), for the plot picker."""
    if isinstance(payload, bool):
        return []
    if isinstance(payload, (int, float)):
        return [prefix or "root"]
    if isinstance(payload, dict):
        found = []
        for key, value in payload.items():
            found += numeric_fields(value, f"{prefix}.{key}" if prefix else str(key))
        return found
    return []


def field_value(payload: Any, path: str) -> float | None:
    value = payload
    if not (path == "root" and isinstance(payload, (int, float))):
        for part in path.split("."):
            if not isinstance(value, dict) or part not in value:
                return None
            value = value[part]
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)
