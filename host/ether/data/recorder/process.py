"""The recorder's process, supervised by the session: started first, restarted if it dies, stopped last."""

from __future__ import annotations

import logging
import threading
from dataclasses import asdict
from pathlib import Path

from ether import exits
from ether.contract.messages import RecorderStatus
from ether.contract.topics import Topics
from ether.contract.wire import decode_object, encode
from ether.data.recorder import journal
from ether.data.recorder.recorder import RecorderSpec
from ether.processes import Child, backoff
from ether.transport.access import BrokerKey
from ether.transport.broker import BrokerAddress
from ether.transport.bus import Bus
from ether.transport.permissions import Login
from ether.transport.requests import Requester
from ether.transport.waiting import Deadline, wait_until

log = logging.getLogger("ether.recorder")

# the session's data waits in the publishers' outboxes while the recorder is down: retry soon
BACKOFF, MAX_BACKOFF = 0.2, 2.0
WILL_TIMEOUT = 10.0  # how long the broker may take to publish a killed recorder's Last Will


class RecorderNotReady(RuntimeError):
    """The recorder did not start; the session refuses to run unrecorded (set recorder: {enabled: false})."""


class RecorderProcess:
    def __init__(self, topics: Topics, run_dir: str) -> None:
        self.topics, self.run_dir = topics, run_dir
        self.child: Child | None = None
        self.address: BrokerAddress | None = None
        self.requester: Requester | None = None
        self.key: BrokerKey | None = None
        self.restarts = 0
        self.status: dict = {}
        self._changed = threading.Condition()
        self._stopping = threading.Event()

    @property
    def pid(self) -> int | None:
        return self.child.pid if self.child else None

    def launch(self) -> None:
        """Start the process; it imports while the broker comes up and waits for its spec on stdin."""
        child = self.child = Child("the recorder", "ether.data.recorder.recorder")
        if self.address is not None and self.requester is not None:
            self._send_spec()
        child.on_exit(lambda code: self._watch(child, code))

    def attach(self, address: BrokerAddress, bus: Bus, requester: Requester, key: BrokerKey) -> None:
        """Send the spec: the recorder's own login and the secret that checks every source."""
        self.address, self.requester, self.key = address, requester, key
        bus.subscribe(self.topics.recorder_status(), self._on_status)
        self._send_spec()

    def _send_spec(self) -> None:
        if self.child is None or self.address is None or self.key is None:
            return
        login = Login("recorder", self.topics.session, "recorder")
        broker = self.key.address(self.address, login).to_dict()
        spec = RecorderSpec(broker, self.topics.session, self.run_dir, self.restarts, self.key.secret.hex())
        self.child.send(asdict(spec))  # if it died already, _watch restarts it

    def _on_status(self, topic: str, raw: bytes) -> None:
        status = decode_object(raw)
        if status is not None and RecorderStatus.read(status) is not None:
            with self._changed:
                self.status = status
                self._changed.notify_all()

    def ready(self) -> bool:
        return self.status.get("state") == "ready" and self.status.get("pid") == self.pid

    def wait_ready(self, timeout: float) -> None:
        if not wait_until(self._changed, self.ready, timeout):
            raise RecorderNotReady(
                f"the recorder (store {self.run_dir}) was not ready within {timeout:g} s;"
                " see its log above, or run without recording (recorder: {enabled: false})"
            )

    def wait_stopped(self, timeout: float) -> bool:
        """Wait until the recorder has exited (``timeout`` at most); whether it has."""
        child = self.child
        return child is None or wait_until(self._changed, lambda: not child.running(), timeout)

    def _watch(self, child: Child, code: int) -> None:
        with self._changed:
            self._changed.notify_all()
        if self._stopping.is_set() or child is not self.child:
            return
        if code == exits.OK:  # it was told to stop (a forced quit): a restart would undo that
            log.warning("the recorder was stopped by a shutdown command; the session is no longer recorded")
            if self.requester is not None:  # in case its own last word was lost (or its Last Will won):
                stopped = RecorderStatus(state="stopped", pid=child.pid)  # publishers must stop waiting
                topic = self.topics.recorder_status()
                self.requester.bus.publish(topic, encode(stopped.payload()), retain=True)
            return
        self.restarts += 1
        delay = Deadline(backoff(self.restarts, BACKOFF, MAX_BACKOFF))
        log.warning(
            "the recorder exited with code %s; restarting it in %.1f s (restart %d)",
            code,
            delay.remaining,
            self.restarts,
        )
        self._announce_dead(child, code, delay)
        if self._stopping.wait(delay.remaining):
            return
        journal.merge(Path(self.run_dir))  # the recorder_dead event, before the next recorder writes
        self.launch()

    def _announce_dead(self, child: Child, code: int, delay: Deadline) -> None:
        """A recorder that died unasked: the journal keeps a ``recorder_dead`` event, and unless its
        last word was ``failed``, its retained status says ``dead`` with its exit code, even if its
        Last Will was never set or was lost. Ours
        goes after its Last Will (a recorder that announced itself had set one: waited for up to
        WILL_TIMEOUT; otherwise until the restart is due), so the broker keeps ours; not when our link
        is down, and not again after a reconnect: a new recorder may be ready by then."""
        journal.note(
            Path(self.run_dir),
            "recorder_dead",
            "recorder",
            pid=child.pid,
            exit_code=code,
            restarts=self.restarts,
        )
        bus = self.requester.bus if self.requester is not None else None
        if bus is None or not bus.connected:  # not attached (or abandoned): not ours; or no broker to tell
            return

        def last_word() -> str | None:  # its own final status ('failed', 'stopped') or its Last Will
            state = self.status.get("state") if self.status.get("pid") == child.pid else None
            return state if state in ("dead", "failed", "stopped") else None

        announced = self.status.get("pid") == child.pid
        wait_until(
            self._changed,
            lambda: self._stopping.is_set() or last_word() is not None,
            WILL_TIMEOUT if announced else delay.remaining,
        )
        if last_word() in ("failed", "stopped"):  # it said why it ended: that stays its status
            return
        dead = RecorderStatus(state="dead", pid=child.pid, exit_code=code, restarts=self.restarts - 1)
        bus.publish(self.topics.recorder_status(), encode(dead.payload()), retain=True, again=False)

    def abandon(self) -> None:
        """Another recorder serves the session: let ours exit before it connects (no spec on stdin)."""
        self._stopping.set()
        if self.child is not None:
            self.child.cut_lifeline()

    def stop(self, timeout: float) -> int | None:
        """Close its stdin: it commits everything it received, then exits (terminate/kill if it does not).

        A pipe, not a broker message, so the recorder stops cleanly even when the broker is unwell."""
        self._stopping.set()
        with self._changed:  # a watcher waiting for a dead recorder's Last Will stops waiting
            self._changed.notify_all()
        return self.child.stop(timeout) if self.child is not None else None
