"""Supervisors that joined this session's recorder (another process or host): whom the seal waits for.

A supervisor that joins a running recorder names its run folder in its retained status
(``recorder_run``). At its end the recorder's own session keeps the recorder running until every such
supervisor has stopped -- its instances drained, its last status naming the seq ranges its outboxes
still hold -- bounded by the drain timeout. The seal records what it did not get (docs/data.md).
"""

from __future__ import annotations

import logging
import threading

from ether.contract.messages import ContractError, SupervisorStatus, parse
from ether.contract.topics import Topics
from ether.contract.wire import WireError, decode
from ether.transport.bus import Bus
from ether.transport.waiting import Deadline, wait_until

log = logging.getLogger("ether.recorder")


class JoinedSupervisors:
    """The latest status of every other supervisor that records into ``run_dir``."""

    def __init__(self, bus: Bus, topics: Topics, own_name: str, run_dir: str) -> None:
        self.bus, self.topics, self.own_name, self.run_dir = bus, topics, own_name, run_dir
        self.statuses: dict[str, SupervisorStatus] = {}
        self._changed = threading.Condition()
        self._echo = f"{topics.replies(bus.client_id)}/joined"
        self._echoed = threading.Event()
        bus.subscribe(topics.supervisor_status("+"), self._on_status)
        bus.subscribe(self._echo, lambda topic, raw: self._echoed.set())

    def _on_status(self, topic: str, raw: bytes) -> None:
        try:
            status = parse(SupervisorStatus, decode(raw)[0])
        except (WireError, ContractError):
            return  # not a status of the contract: nobody to wait for
        if status.name == self.own_name or topic != self.topics.supervisor_status(status.name):
            return
        with self._changed:
            # once joined, every later status counts (its Last Will 'dead' names no recorder run)
            before = self.statuses.get(status.name)
            if before is not None and late_will(before.state, status.state, before.pid, status.pid):
                return
            if status.name in self.statuses or status.recorder_run == self.run_dir:
                self.statuses[status.name] = status
                self._changed.notify_all()

    def running(self) -> list[str]:
        with self._changed:
            return sorted(n for n, s in self.statuses.items() if s.state == "running")

    def wait_stopped(self, timeout: float) -> dict[str, SupervisorStatus]:
        """Wait until no joined supervisor is running (at most ``timeout``); return every one's status.

        First a message to ourselves: the broker passes on messages in the order it took them, so once
        it is back, every status the broker took before it has reached us (a supervisor that joined a
        moment ago, its status still on its way, is not missed)."""
        deadline = Deadline(timeout)
        self._echoed.clear()
        self.bus.publish(self._echo, b"{}")
        if not self._echoed.wait(deadline.remaining):
            log.warning("the broker did not pass on our own message within %.0f s", timeout)
        waiting = self.running()
        if waiting:
            log.info(
                "Waiting up to %.0f s for the joined supervisors %s to save their data",
                timeout,
                ", ".join(waiting),
            )
            wait_until(self._changed, lambda: not self.running(), deadline.remaining)
        with self._changed:
            return dict(self.statuses)


def late_will(before: str, now: str, pid_before: int | None, pid_now: int | None) -> bool:
    """A Last Will ``dead`` that follows its process's own ``stopped``: the process ended cleanly
    (under load a broker now and then still sends the will of such a client: amqtt, Mosquitto); not believed."""
    return before == "stopped" and now == "dead" and pid_before == pid_now
