"""The session's side of recording: the run folder and manifest, the recorder process, the drain.

A session ends in this order: instances save and stop (each waits until the recorder has its data),
the script's own messages are drained, the recorder commits and exits, then the manifest is sealed
``complete`` -- or ``incomplete`` with the count of messages that never reached the store.
"""

from __future__ import annotations

import logging
import os
import socket
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

from ether.config import Config
from ether.contract.messages import RecorderCommand, read_reply
from ether.contract.topics import Topics
from ether.contract.wire import Meta, Stamper, decode_object
from ether.data import processed, provenance
from ether.data.outbox import DataPublisher
from ether.data.recorder.process import RecorderProcess
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
from ether.transport.requests import Requester, RequestTimeout

log = logging.getLogger("ether")

PROBE_TIMEOUT = 1.0  # on a shared broker: how long to listen for a recorder already running


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
    ) -> None:
        """Connect the script's publisher and wait for the recorder to be ready (its login, its
        script's signing key and the recorder's secret derive from ``key``).

        On a shared broker another supervisor of the session may already record it: then we join that
        recorder (our outbox waits for its acknowledgements) and our store keeps only our manifest.
        """
        stamper.key = key.signing_key(self.topics.session, stamper.source)  # its requests are signed too
        self.data = DataPublisher(bus, self.topics, stamper, self.settings)
        if self.process is not None and shared_broker and self._recorder_announced(bus):
            try:  # a retained 'ready' may be stale (a killed recorder's Last Will comes late): ask it
                other = read_reply(
                    requester.request(
                        self.topics.recorder_control(), RecorderCommand(command="status"), PROBE_TIMEOUT
                    )
                )
            except RequestTimeout:
                other = None
            if other is not None and other.ok:
                where = other.result.get("run_dir")
                log.info(
                    "Session '%s' is already recorded (to %s); joining that recorder",
                    self.topics.session,
                    where,
                )
                self.process.abandon()
                self.process = None
                self.recorded = True
                if self.run_dir is None:
                    raise RuntimeError("the recording has not begun: call begin() first")
                Store(self.run_dir).set_manifest(recorded_by=other.result)
        if self.process is not None:
            self.process.attach(address, bus, requester, key)
            self.process.wait_ready(timeout)
            self.recorded = True
            log.info("Recording session '%s' to %s", self.topics.session, self.run_dir)
        self.data.attach()

    def _recorder_announced(self, bus: Bus) -> bool:
        """Whether the broker holds a retained 'ready' status of a recorder of this session.

        A retained message is sent right after the subscription is acknowledged; a message we send
        ourselves afterwards arrives after it, so once our own echo is back we know what was there."""
        seen: list[dict] = []
        echoed = threading.Event()
        probe = f"{self.topics.replies(bus.client_id)}/probe"

        def on_status(topic: str, raw: bytes) -> None:
            status = decode_object(raw)
            if status is not None:
                seen.append(status)

        bus.subscribe(probe, lambda topic, raw: echoed.set())
        bus.subscribe(self.topics.recorder_status(), on_status)
        bus.publish(probe, b"{}")
        echoed.wait(PROBE_TIMEOUT)
        return bool(seen) and seen[-1].get("state") == "ready"

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
        if not via_broker:
            supervisor.release(running)  # each saves, cleans up and drains on its own, meanwhile
        if self.data is not None:  # first, so that instances can catch up on the script's messages
            if self.data.pending:
                log.info("Waiting for the recorder to save %d messages of this script", self.data.pending)
            self.data.drain(self.settings.drain_timeout if self.recorded and drain else 0)
        if supervisor.bus is not None:
            if self.recorded and not failure and via_broker:
                log.info("Letting every instance finish the messages published to it")
                supervisor.finish_inputs(running, self.settings.drain_timeout)
            log.info("Stopping instances: save_all -> cleanup -> exit, each waits until its data is saved")
            grace = self.settings.drain_timeout if drain else 0.0
            codes = supervisor.stop(running, timeout, ask=via_broker, grace=grace)
        if self.process is not None:
            self.process.stop(timeout)
        if self.data is not None:
            self.data.close()
        if self.run_dir is not None:
            seal(self.run_dir, codes, FAILED if failure else None, failure)
        return codes


def unsaved_in_outboxes(run_dir: Path) -> dict[str, int]:
    """Messages publishers sent but the recorder never confirmed, per outbox file. Empty outboxes
    are deleted: only the evidence of unsaved data stays beside the store."""
    left: dict[str, int] = {}
    for path in sorted((run_dir / "outbox").glob("*.sqlite")):
        try:
            db = sqlite3.connect(path, timeout=10)
            n = db.execute("SELECT COUNT(*) FROM outbox").fetchone()[0]
            db.close()
        except sqlite3.Error:
            continue
        if n:
            left[path.stem] = n
        else:
            for leftover in (path, Path(f"{path}-wal"), Path(f"{path}-shm")):
                leftover.unlink(missing_ok=True)
    if not left and (run_dir / "outbox").is_dir() and not any((run_dir / "outbox").iterdir()):
        (run_dir / "outbox").rmdir()
    return left


def seal(
    run_dir: Path, codes: dict[str, int | None], status: str | None = None, error: str | None = None
) -> str:
    """Write stop time, status (and why it failed) and what is missing into the manifest; returns the
    status. ``complete`` only when nothing is unsaved, no durable message is missing from the store,
    no two messages claim the same numbers (conflicts), and every subscriber instance processed every
    durable message on its topics."""
    left_unprocessed = processed.account(run_dir)  # before the outboxes that hold the ledgers go
    left = unsaved_in_outboxes(run_dir)
    unsaved = sum(left.values())
    unprocessed = {name: u.durable for name, u in left_unprocessed.items() if u.durable}
    store = Store(run_dir)
    try:
        last = store.db.execute("SELECT MAX(t_recorded) FROM messages").fetchone()[0]
        missing = store.db.execute(
            "SELECT COALESCE(SUM(last_seq - first_seq + 1), 0) FROM gaps WHERE boot NOT LIKE ?",
            (f"%{processed.LATEST_SUFFIX}",),
        ).fetchone()[0]
        conflicting = len(conflicts(store.db))
        status = status or (
            COMPLETE if not (unsaved or missing or unprocessed or conflicting) else INCOMPLETE
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
                store.event("unprocessed", name, None, durable=u.durable, latest=u.latest, ranges=u.ranges)
                if u.durable:
                    log.error(
                        "Instance '%s' never processed %d saved messages: %s", name, u.durable, u.ranges
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
            conflicts=conflicting,
            instance_exit_codes=codes,
            **({"error": error} if error else {}),
        )
    finally:
        store.close()
    log.info("%s", seal_line(run_dir))
    return status


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
    problems += [f"{n} not processed by {name}" for name, n in (m.get("unprocessed") or {}).items()]
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
