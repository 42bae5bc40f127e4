"""The session's side of recording: the run folder and manifest, the recorder process, the drain.

A session ends in this order: instances save and stop (each waits until the recorder has its data),
the script's own messages are drained, the recorder commits and exits, then the manifest is sealed
``complete`` -- or ``incomplete`` with the count of messages that never reached the store.
"""

from __future__ import annotations

import logging
import os
import shutil
import socket
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

from ether.config import Config
from ether.contract.messages import (
    RANGES_LIMIT,
    RecorderCommand,
    RecorderStatus,
    SupervisorStatus,
    read_reply,
)
from ether.contract.topics import Topics
from ether.contract.wire import Meta, Stamper, WireError, decode, decode_object, encode
from ether.data import processed, provenance
from ether.data.outbox import DataPublisher
from ether.data.recorder import journal
from ether.data.recorder.joined import JoinedSupervisors
from ether.data.recorder.process import RecorderNotReady, RecorderProcess
from ether.data.recorder.store import (
    COMPLETE,
    CRASHED,
    FAILED,
    INCOMPLETE,
    RUNNING,
    SCHEMA_VERSION,
    Store,
    StoreError,
    conflicts,
    connect,
    find_stores,
    read_manifest,
)
from ether.processes import alive
from ether.transport.access import BrokerKey
from ether.transport.broker import BrokerAddress
from ether.transport.bus import Bus
from ether.transport.requests import Pending, Requester, RequestTimeout
from ether.transport.waiting import Deadline

log = logging.getLogger("ether")

FORCED_GRACE = 2.0  # a forced quit: how long the recorder has to stop before it is taken for stuck


class Recording:
    def __init__(self, config: Config, topics: Topics) -> None:
        self.config, self.topics = config, topics
        self.settings = config.recorder
        self.run_id = ""
        self.run_dir: Path | None = None
        self.process: RecorderProcess | None = None
        self.data: DataPublisher | None = None
        self.ended = False
        self.recorded = False  # a recorder (ours or another supervisor's) serves the session
        self.recorder_run: str | None = None  # the run folder our data goes to (ours, or the joined one)
        self.joined: JoinedSupervisors | None = None  # supervisors recording into ours: the seal waits
        self.unsaved_ranges: dict[str, list[tuple[int, int]]] = {}  # at the end: boot -> outbox leftovers
        self.requester: Requester | None = None
        self.forced = threading.Event()  # a forced quit was asked for (the monitor's)

    def begin(self) -> None:
        """Seal sessions that crashed, create this run's folder and manifest, start the recorder process."""
        if not self.settings.enabled:
            return
        root = self.settings.root
        seal_crashed(root)
        self.run_id = f"{time.strftime('%Y%m%d-%H%M%S')}-{self.topics.session}-{os.urandom(3).hex()}"
        self.run_dir = root / self.run_id
        self.settings.run_dir = str(self.run_dir)
        store = Store(self.run_dir)
        store.set_manifest(
            schema_version=SCHEMA_VERSION,
            run_id=self.run_id,
            session=self.topics.session,
            status=RUNNING,
            started_at=time.time(),
            pid=os.getpid(),
            **provenance.manifest(self.config),
        )
        store.close()
        self.process = RecorderProcess(self.topics, str(self.run_dir))
        self.process.launch()

    def attach(
        self,
        address: BrokerAddress,
        bus: Bus,
        requester: Requester,
        stamper: Stamper,
        timeout: float,
        key: BrokerKey,
        shared_broker: bool = False,
        supervisor: str = "",
    ) -> None:
        """Connect the script's publisher and wait for the recorder to be ready (its login, its
        script's signing key and the recorder's secret derive from ``key``).

        On a shared broker another supervisor of the session may already record it: then we join that
        recorder (our outbox waits for its acknowledgements) and our store keeps only our manifest.
        When we record, the supervisors that join us (``supervisor`` is our own name) are followed, so
        that our seal waits for their data.
        """
        stamper.key = key.signing_key(self.topics.session, stamper.source)  # its requests are signed too
        self.requester = requester
        self.data = DataPublisher(bus, self.topics, stamper, self.settings)
        other = self._recorder_answer(bus, requester, timeout) if self.process and shared_broker else None
        if self.process is not None and other is not None:
            where = other.get("run_dir")
            log.info(
                "Session '%s' is already recorded (to %s); joining that recorder", self.topics.session, where
            )
            self.process.abandon()
            self.process = None
            self.recorded = True
            self.recorder_run = where
            if self.run_dir is None:
                raise RuntimeError("the recording has not begun: call begin() first")
            Store(self.run_dir).set_manifest(recorded_by=other)
        if self.process is not None:
            self.recorder_run = str(self.run_dir)
            with bus.subscribing(timeout):  # the spec goes out at once; its subscriptions' acks after
                self.joined = JoinedSupervisors(bus, self.topics, supervisor, self.recorder_run)
                bus.subscribe(self.topics.recorder_control(), self._on_recorder_control)
                self.process.attach(address, bus, requester, key)
            self.process.wait_ready(timeout)
            self.recorded = True
            log.info("Recording session '%s' to %s", self.topics.session, self.run_dir)
        self.data.attach()

    def _recorder_answer(self, bus: Bus, requester: Requester, timeout: float) -> dict | None:
        """The status of the recorder that already records this session on this shared broker, as it
        answers a status request; None if the broker holds no 'ready' status of one.

        A retained message is sent right after the subscription is acknowledged, and a message we send
        ourselves afterwards arrives after it: once our own echo is back we know what was there. A
        'ready' is believed until that recorder answers or its status changes (a killed recorder's Last
        Will may come late: then there is none); on a busy machine an answer may take many seconds.
        Neither within ``timeout`` is an error, not a second store: each would hold half the session."""
        statuses: list[dict] = []
        asked: list[Pending] = []
        lock = threading.Lock()
        echoed = threading.Event()
        probe = f"{self.topics.replies(bus.client_id)}/probe"

        def on_status(topic: str, raw: bytes) -> None:
            status = decode_object(raw)
            if status is None:
                return
            with lock:
                statuses.append(status)
                if asked and status.get("state") != "ready":
                    asked[0].abandon()  # it is gone: no answer will come

        with bus.subscribing(timeout):
            bus.subscribe(probe, lambda topic, raw: echoed.set())
            bus.subscribe(self.topics.recorder_status(), on_status)
        bus.publish(probe, b"{}")
        echoed.wait(timeout)
        with lock:
            announced = statuses[-1] if statuses else {}
            if announced.get("state") != "ready":
                return None
            asked.append(requester.send(self.topics.recorder_control(), RecorderCommand(command="status")))
        try:
            reply = asked[0].reply(timeout)
        except RequestTimeout:
            raise RecorderNotReady(
                f"session '{self.topics.session}' has a recorder (pid {announced.get('pid')}, store"
                f" {announced.get('run_dir')}) that says it is ready but did not answer within {timeout:g} s;"
                " if it is gone, clear its stale status (an empty retained message on"
                f" {self.topics.recorder_status()}) and start again"
            ) from None
        if reply is None:
            log.info("The recorder of session '%s' is gone; recording it here", self.topics.session)
            return None
        other = read_reply(reply)
        return other.result if other.ok else None

    def note(self, kind: str, **detail: Any) -> None:
        """An event of the session itself (e.g. ``broker_restarted``) in the store, written at once:
        it needs no broker."""
        if self.run_dir is None:
            return
        store = Store(self.run_dir)
        try:
            with store.transaction():
                store.event(kind, None, None, **detail)
        finally:
            store.close()

    def publish(self, topic: str, payload: Any) -> Meta:
        if self.data is None:
            raise RuntimeError("the recording is not attached: open the session first")
        return self.data.publish(topic, payload)

    def end(
        self,
        supervisor,
        timeout: float,
        failure: str | None = None,
        via_broker: bool = True,
        drain: bool = True,
    ) -> dict[str, int | None]:
        """Stop the instances (each drains its outbox), drain ours, stop the recorder, seal the manifest
        (as ``failed``, with the reason, when the session could not start). ``via_broker=False`` (a
        broker far behind, or gone): the instances are stopped through their lifeline, all at once, and
        drain while ours does; ``drain=False`` (the broker is gone): nothing waits for it. What is not
        saved stays in the outboxes, and the seal counts it."""
        if self.ended:
            return {}
        self.ended = True
        codes: dict[str, int | None] = {}
        running = supervisor.running() if supervisor.bus is not None else []
        # one drain timeout for every step that waits on data (not one each): Ctrl-C ends in about it
        drained = Deadline(self.settings.drain_timeout if drain else 0.0)
        if not via_broker:
            supervisor.release(running)  # each saves, cleans up and drains on its own, meanwhile
        if self.data is not None:  # first, so that instances can catch up on the script's messages
            if self.data.pending:
                log.info("Waiting for the recorder to save %d messages of this script", self.data.pending)
            self.data.drain(drained.remaining if self.recorded else 0.0)
        if supervisor.bus is not None:
            if self.recorded and not failure and via_broker:
                log.info("Letting every instance finish the messages published to it")
                supervisor.finish_inputs(running, drained.remaining)
            log.info("Stopping instances: save_all -> cleanup -> exit, each waits until its data is saved")
            # every instance (none restarts now): each one's exit code
            codes = supervisor.close(timeout, ask=via_broker, grace=drained.remaining)
        joined = self.joined.wait_stopped(drained.remaining) if self.joined else {}
        if self.process is not None:
            if not self.forced.is_set():  # a forced quit stops the recorder at once, as asked
                self._commit_received(timeout)
            self.process.stop(FORCED_GRACE if self.forced.is_set() else timeout)
        if self.data is not None:
            self.data.close()
        if self.run_dir is not None:
            seal(self.run_dir, codes, FAILED if failure else None, failure, joined)
            self.unsaved_ranges = outbox_ranges(self.run_dir)
        return codes

    def _on_recorder_control(self, topic: str, raw: bytes) -> None:
        """A forced quit sent to our recorder: journal it at once (a stuck recorder writes nothing),
        then make sure the recorder stops (network thread: hand off)."""
        try:
            command = RecorderCommand.read(decode(raw)[0])
        except WireError:
            return
        if command is None or command.command != "shutdown" or not command.forced_by or self.run_dir is None:
            return
        if self.forced.is_set():
            return
        self.forced.set()
        journal.note(
            self.run_dir,
            "forced_quit",
            by=command.forced_by,
            unconfirmed=command.unconfirmed,
            noted_by="session",
        )
        threading.Thread(target=self._stop_forced, name="ether-forced-quit", daemon=True).start()

    def _stop_forced(self) -> None:
        """Give the recorder FORCED_GRACE to stop as told; a stuck one is killed, and its publishers
        are told it stopped (they stop waiting for confirmations; their outboxes keep what is unsaved)."""
        process = self.process
        if process is None or process.wait_stopped(FORCED_GRACE):
            return
        log.error(
            "The recorder did not stop within %g s of the forced quit: it is stuck; killing it", FORCED_GRACE
        )
        process.stop(0)
        if self.requester is not None:
            stopped = RecorderStatus(state="stopped", pid=process.pid or 0)
            self.requester.bus.publish(self.topics.recorder_status(), encode(stopped.payload()), retain=True)

    def _commit_received(self, timeout: float) -> None:
        """Ask our recorder, through the broker, to commit what the broker took before this request.
        The broker passes messages on in the order it took them, so every last status and closing
        report it acknowledged -- an instance's ``stopped`` sent just before it exited, a joined
        supervisor's -- is then in the store (closing the recorder's stdin alone orders nothing)."""
        if self.requester is None or self.process is None or not self.process.ready():
            return
        try:
            reply = read_reply(
                self.requester.request(
                    self.topics.recorder_control(), RecorderCommand(command="barrier"), timeout
                )
            )
        except RequestTimeout:
            reply = None
        if reply is None or not reply.ok:
            log.warning("The recorder did not confirm, within %g s, that it saved what it was sent", timeout)


def unsaved_in_outboxes(run_dir: Path) -> dict[str, int]:
    """Messages publishers sent but the recorder never confirmed, per outbox file. Empty outboxes
    are deleted: only the evidence of unsaved data stays beside the store. An unconfirmed processed
    report is not counted: its instance's ledger is in the same file, read by the seal."""
    left: dict[str, int] = {}
    for path in sorted((run_dir / "outbox").glob("*.sqlite")):
        try:
            db = sqlite3.connect(path, timeout=10)
            n = db.execute(
                "SELECT COUNT(*) FROM outbox WHERE boot NOT LIKE ?", (f"%{processed.REPORTS_SUFFIX}",)
            ).fetchone()[0]
            db.close()
        except sqlite3.Error:
            continue
        if n:
            left[path.stem] = n
        else:
            for leftover in (path, Path(f"{path}-wal"), Path(f"{path}-shm")):
                leftover.unlink(missing_ok=True)
            shutil.rmtree(path.with_suffix(".bodies"), ignore_errors=True)  # its large bodies (outbox.Bodies)
    if not left and (run_dir / "outbox").is_dir() and not any((run_dir / "outbox").iterdir()):
        (run_dir / "outbox").rmdir()
    return left


def outbox_ranges(run_dir: Path) -> dict[str, list[tuple[int, int]]]:
    """What the outboxes of a run still hold, per boot (a boot is one source's): the span from its
    lowest to its highest seq. Whoever counts what is unsaved subtracts what its store holds of a span
    (acknowledged, hence stored), so a span is as exact as the ranges and always fits a status."""
    spans: dict[str, list[tuple[int, int]]] = {}
    for path in sorted((run_dir / "outbox").glob("*.sqlite")):
        try:
            db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)
            rows = db.execute("SELECT boot, MIN(seq), MAX(seq) FROM outbox GROUP BY boot").fetchall()
            db.close()
        except sqlite3.Error:
            continue
        for boot, low, high in rows:
            if len(spans) < RANGES_LIMIT:
                spans[boot] = [(low, high)]
    return spans


def seal(
    run_dir: Path,
    codes: dict[str, int | None],
    status: str | None = None,
    error: str | None = None,
    joined: dict[str, SupervisorStatus] | None = None,
) -> str:
    """Write stop time, status (and why it failed) and what is missing into the manifest; returns the
    status. ``complete`` only when nothing is unsaved (here or in the outboxes of a supervisor that
    joined us), every joined supervisor stopped in time, no durable message is missing from the store,
    no two messages claim the same numbers (conflicts), and every subscriber instance, of any host,
    is known to have processed every durable message on its topics."""
    journal.merge(run_dir)  # what the session recorded because the recorder could not
    left_unprocessed = processed.account(run_dir)  # before the outboxes that hold the ledgers go
    left = unsaved_in_outboxes(run_dir)
    unprocessed = {name: u.durable for name, u in left_unprocessed.items() if u.durable}
    unknown = {name: u.unknown for name, u in left_unprocessed.items() if u.unknown}
    store = Store(run_dir)
    try:
        with store.transaction():
            not_drained = _account_joined(store, joined or {}, left)
        unsaved = sum(left.values())
        last = store.db.execute("SELECT MAX(t_recorded) FROM messages").fetchone()[0]
        missing = store.db.execute(
            "SELECT COALESCE(SUM(last_seq - first_seq + 1), 0) FROM gaps WHERE boot NOT LIKE ?",
            (f"%{processed.LATEST_SUFFIX}",),
        ).fetchone()[0]
        conflicting = len(conflicts(store.db))
        status = status or (
            COMPLETE
            if not (unsaved or missing or unprocessed or unknown or conflicting or not_drained)
            else INCOMPLETE
        )
        with store.transaction():
            if unsaved:
                store.event("forced_end", None, None, unsaved=unsaved, by_source=left)
                log.error(
                    "The session ended with %d messages NOT saved (recorded in %s): %s",
                    unsaved,
                    run_dir,
                    left,
                )
            for name, u in left_unprocessed.items():
                store.event(
                    "unprocessed",
                    name,
                    None,
                    durable=u.durable,
                    latest=u.latest,
                    unknown=u.unknown,
                    ranges=u.ranges,
                )
                if u.durable:
                    log.error(
                        "Instance '%s' never processed %d saved messages: %s", name, u.durable, u.ranges
                    )
                if u.unknown:
                    log.error(
                        "Instance '%s' may not have processed %d saved messages: its last reports of what"
                        " it processed never reached the store: %s",
                        name,
                        u.unknown,
                        u.ranges,
                    )
            _note_stopped(store, codes)
            store.event("sealed", None, None, status=status, **({"error": error} if error else {}))
        saved = store.db.execute("SELECT COUNT(*) FROM messages").fetchone()[0]
        store.set_manifest(
            status=status,
            stopped_at=time.time() if status != CRASHED else (last or store.manifest().get("started_at")),
            last_saved_at=last,
            saved=saved,
            unsaved=unsaved,
            missing=missing,
            unprocessed=unprocessed,
            unknown_processed=unknown,
            conflicts=conflicting,
            not_drained=not_drained,
            forced_quit=journal.forced_quits(store),
            instance_exit_codes=codes,
            **({"error": error} if error else {}),
        )
    finally:
        store.close()
    log.info("%s", seal_line(run_dir))
    return status


def _account_joined(store: Store, joined: dict[str, SupervisorStatus], left: dict[str, int]) -> list[str]:
    """What the supervisors that joined our recorder left unsaved: a stopped one's outbox leftovers
    that the store does not hold are added to ``left`` (as ``<supervisor>/<boot>``); one that did not
    stop in time (still running, or dead) is recorded with the last seqs saved of its sources, since
    what it sent after them cannot be known here. Returns the names of those that did not stop."""
    not_drained = []
    for name, status in sorted(joined.items()):
        if status.state != "stopped":
            not_drained.append(name)
            saved = {
                src: dict(
                    store.db.execute("SELECT boot, max_seq FROM streams WHERE src = ?", (src,)).fetchall()
                )
                for src in [*status.instances, f"main:{name}"]
            }
            store.event(
                "joined_not_drained", name, None, host=status.host, state=status.state, last_saved=saved
            )
            log.error(
                "Supervisor '%s' (%s) was still %s when the recording ended: what its instances (%s) sent"
                " after their last saved messages is not in the store",
                name,
                status.host,
                status.state,
                ", ".join(status.instances) or "none",
            )
            continue
        unsaved = {}
        for boot, ranges in (status.unsaved or {}).items():
            n = sum(_not_stored(store, boot, first, last) for first, last in ranges)
            if n:
                unsaved[f"{name}/{boot}"] = n
        left.update(unsaved)
        store.event(
            "joined_stopped",
            name,
            None,
            host=status.host,
            instances=status.instances,
            unsaved=unsaved,
            outbox_spans=status.unsaved or {},
        )
    return not_drained


def _not_stored(store: Store, boot: str, first: int, last: int) -> int:
    """How many of the seqs ``first..last`` of ``boot`` the store does not hold (a report stream's
    messages are kept as processed reports)."""
    if first > last:
        return 0
    table = "processed_reports" if boot.endswith(processed.REPORTS_SUFFIX) else "messages"
    held = store.db.execute(
        f"SELECT COUNT(*) FROM {table} WHERE boot = ? AND seq BETWEEN ? AND ?", (boot, first, last)
    ).fetchone()[0]
    return last - first + 1 - held


def _note_stopped(store: Store, codes: dict[str, int | None]) -> None:
    """An instance's own 'stopped' status can reach the broker after the recorder stopped listening:
    the supervisor, which saw it exit, records the stop instead."""
    for name, code in codes.items():
        row = store.db.execute(
            "SELECT kind FROM events WHERE src = ? AND kind LIKE 'instance_%' ORDER BY rowid DESC LIMIT 1",
            (name,),
        ).fetchone()
        if row is None or row[0] != "instance_stopped":
            store.event("instance_stopped", name, None, exit_code=code, noted_by="supervisor")


def seal_line(run_dir: Path) -> str:
    """The one line a person reads at the end: how the session was sealed and what is missing."""
    db = connect(run_dir, readonly=True)
    try:
        m = read_manifest(db)
    finally:
        db.close()
    problems = [
        f"{m[key]} {what}"
        for key, what in (
            ("unsaved", "unsaved"),
            ("missing", "missing from the store"),
            ("conflicts", "conflicting duplicates"),
        )
        if m.get(key)
    ]
    problems += [f"supervisor {name} did not finish its data" for name in m.get("not_drained") or []]
    problems += [
        f"a forced quit by {f.get('by')} with {f.get('unconfirmed')} unconfirmed"
        for f in m.get("forced_quit") or []
    ]
    problems += [f"{n} not processed by {name}" for name, n in (m.get("unprocessed") or {}).items()]
    problems += [
        f"{n} not known to be processed by {name} (its reports stopped)"
        for name, n in (m.get("unknown_processed") or {}).items()
    ]
    detail = f" ({'; '.join(problems)})" if problems else ""
    return f"Session {m.get('run_id')} sealed {m.get('status')}: {m.get('saved', 0)} messages saved{detail} in {run_dir}"


def seal_crashed(root: Path) -> list[Path]:
    """Stores left ``running`` by a process of this host that no longer exists are sealed ``crashed``."""
    sealed = []
    for path in find_stores(root):
        try:
            db = connect(path, readonly=True)
            manifest = read_manifest(db)
            db.close()
        except (sqlite3.Error, StoreError):
            continue
        if manifest.get("status") != RUNNING or manifest.get("host") != socket.gethostname():
            continue
        if alive(manifest.get("pid")):
            continue
        seal(path.parent, {}, CRASHED)
        log.warning("Session %s did not end cleanly; sealed it as crashed", path.parent.name)
        sealed.append(path.parent)
    return sealed
