"""Supervisor: one process per instance; readiness from retained status, restarts by policy, ordered stop.

Readiness is what an instance announces on its retained status topic, matched by process id so a
stale status left on an external broker is never mistaken for a fresh one.
"""

from __future__ import annotations

import logging
import sys
import threading
from dataclasses import asdict, dataclass, field
from typing import Any

from ether import exits
from ether.config import Config, EtherInstanceConfig
from ether.contract.messages import InstanceCommand, InstanceStatus, OkReply, read_reply
from ether.contract.topics import Topics
from ether.contract.wire import decode_object, encode
from ether.forkserver import AVAILABLE as FORKING
from ether.forkserver import ForkServer
from ether.processes import Child, backoff
from ether.runtime.instance import LaunchSpec
from ether.transport.access import BrokerKey
from ether.transport.broker import BrokerAddress
from ether.transport.bus import Bus
from ether.transport.permissions import Login
from ether.transport.requests import Pending, Requester, RequestTimeout
from ether.transport.waiting import Deadline, wait_until

log = logging.getLogger("ether.supervisor")

SHUTDOWN_STEPS = ("save_all", "cleanup", "shutdown")
UNREACHABLE_GRACE = 2.0  # seconds an instance gets to exit when no broker can carry its shutdown steps


class InstanceStartError(RuntimeError):
    """An instance could not be started (its class raised, or it never became ready)."""


@dataclass
class Managed:
    """One instance under supervision."""

    config: EtherInstanceConfig
    child: Child | None = None
    restarts: int = 0
    status: dict[str, Any] = field(default_factory=dict)
    stopping: bool = False
    gave_up: bool = False

    @property
    def pid(self) -> int | None:
        return self.child.pid if self.child else None

    def running(self) -> bool:
        return self.child is not None and self.child.running()

    @property
    def state(self) -> str:
        """What the current process announced; if it has exited, what its exit means."""
        heard = self.status.get("state") if self.status.get("pid") == self.pid else None
        if self.child is not None and not self.child.running():
            if heard in ("failed", "restarting", "stopped"):
                return heard
            return "stopped" if self.child.process.returncode == exits.OK else "dead"
        return heard or "starting"


class Supervisor:
    """Launches, watches and stops the instances of one config."""

    def __init__(self, config: Config, topics: Topics) -> None:
        self.config, self.topics = config, topics
        self.instances: dict[str, Managed] = {}
        self.address: BrokerAddress | None = None
        self.bus: Bus | None = None
        self.requester: Requester | None = None
        self.key: BrokerKey | None = None
        self._changed = threading.Condition()
        self._closing = threading.Event()
        self._forks: ForkServer | None = None  # started with the first instance (Linux)
        self._forking = threading.Lock()

    # -- wiring ------------------------------------------------------------------------------

    def attach(self, address: BrokerAddress, bus: Bus, requester: Requester, key: BrokerKey) -> None:
        """Start listening to instance statuses; spawned processes get the broker address now, each
        with its own login and signing key derived from ``key``."""
        self.address, self.bus, self.requester, self.key = address, bus, requester, key
        bus.subscribe(self.topics.instance_status_all(), self._on_status)
        for managed in self.instances.values():
            if managed.running():
                self._send_spec(managed)

    def _on_status(self, topic: str, raw: bytes) -> None:
        status = decode_object(raw)
        if status is None or InstanceStatus.read(status) is None:  # not a status of the contract
            return
        with self._changed:
            managed = self.instances.get(status["instance"])
            if managed is not None and status.get("pid") == managed.pid:
                managed.status = status
            self._changed.notify_all()

    # -- launching ---------------------------------------------------------------------------

    def spawn(self, instance: EtherInstanceConfig) -> Managed:
        """Start the process; it imports while the broker comes up, and waits for its launch spec."""
        if instance.name in self.instances and not self.instances[instance.name].gave_up:
            if self.instances[instance.name].running():
                raise ValueError(f"an instance named '{instance.name}' is already running")
        managed = self.instances.get(instance.name) or Managed(instance)
        managed.config, managed.stopping, managed.gave_up = instance, False, False
        self.instances[instance.name] = managed
        self._start_process(managed)
        return managed

    def _start_process(self, managed: Managed) -> None:
        child = Child(f"instance '{managed.config.name}'", "ether.runtime.instance", forks=self.prepare())
        managed.child = child
        if self.address is not None:
            self._send_spec(managed)
        child.on_exit(lambda code: self._watch(managed, child, code))

    def prepare(self) -> ForkServer | None:
        """The fork server the instance processes start from, started now if it is not running (it
        is ready for its first fork about as soon as a new interpreter would be)."""
        with self._forking:
            if FORKING and (self._forks is None or not self._forks.running()):
                if self._forks is not None:  # it died (and its forks with it)
                    self._forks.close(0)
                self._forks = ForkServer()
            return self._forks

    def _send_spec(self, managed: Managed) -> None:
        c, child, key, session = managed.config, managed.child, self.key, self.topics.session
        if child is None or self.address is None or key is None:
            return
        spec = LaunchSpec(
            name=c.name,
            class_path=c.class_path,
            args=c.args,
            kwargs=c.constructor_kwargs,
            registry=self.config.registry,
            broker=key.address(self.address, Login("instance", session, c.name)).to_dict(),
            session=session,
            sys_path=[p for p in sys.path if p],
            config_dir=self.config.directory,
            restarts=managed.restarts,
            recording=self.config.recorder.for_instance(),
            key=key.signing_key(session, c.name).hex(),
            secret=key.secret.hex(),
            worker=c.worker,
            workers=c.workers,
            schedule=[entry.model_dump(exclude_none=True) for entry in c.schedule],
        )
        child.send(asdict(spec))  # if it died already, _watch handles it

    def wait_ready(self, names: list[str], timeout: float) -> None:
        """Return when every named instance is ready; raise InstanceStartError on failure or timeout."""

        def settled() -> bool:
            return all(
                self.instances[n].state in ("ready", "failed") or self.instances[n].gave_up for n in names
            )

        done = wait_until(self._changed, settled, timeout)
        failed = {
            n: self.instances[n]
            for n in names
            if self.instances[n].state == "failed" or self.instances[n].gave_up
        }
        if failed:
            reasons = "; ".join(
                f"'{n}' ({m.config.class_path}): {m.status.get('error', 'exited')}" for n, m in failed.items()
            )
            raise InstanceStartError(f"instance failed to start: {reasons}")
        if not done:
            late = [n for n in names if self.instances[n].state != "ready"]
            raise InstanceStartError(f"instances not ready after {timeout:g} s: {', '.join(late)}")

    # -- watching and restarting ---------------------------------------------------------------

    def _watch(self, managed: Managed, child: Child, code: int) -> None:
        if managed.child is not child:
            return
        with self._changed:
            self._changed.notify_all()
        if managed.stopping or self._closing.is_set():
            return
        if code == exits.INIT_FAILED:  # its 'failed' status (with the reason) may still be on its way
            wait_until(self._changed, lambda: managed.status.get("state") == "failed", 2.0)
        policy, name = managed.config.restart, managed.config.name
        wanted = policy == "always" or (policy == "on-failure" and code != exits.OK)
        if not wanted or managed.restarts >= managed.config.max_restarts:
            why = "its restart policy is 'no'" if policy == "no" else f"it restarted {managed.restarts} times"
            if wanted:
                log.error("instance '%s' exited with code %s; giving up: %s", name, code, why)
            else:
                log.info("instance '%s' exited with code %s", name, code)
            with self._changed:
                managed.gave_up = code != exits.OK
                self._changed.notify_all()
            return
        managed.restarts += 1
        delay = backoff(managed.restarts, managed.config.backoff)
        log.warning(
            "instance '%s' exited with code %s; restart %d of %d in %.2g s",
            name,
            code,
            managed.restarts,
            managed.config.max_restarts,
            delay,
        )
        self._announce(managed, "restarting", exit_code=code)
        if self._closing.wait(delay):  # the session is ending: do not restart
            return
        self._start_process(managed)

    def _announce(self, managed: Managed, state: str, exit_code: int | None = None) -> None:
        if self.bus is None:
            return
        status = InstanceStatus(
            instance=managed.config.name,
            class_path=managed.config.class_path,
            state=state,
            pid=managed.pid,
            restarts=managed.restarts,
            exit_code=exit_code,
        )
        self.bus.publish(
            self.topics.instance_status(managed.config.name),
            encode(status.payload()),
            retain=True,
            again=False,  # the instance's topic: its next process announces itself
        )

    # -- commands -----------------------------------------------------------------------------

    def command(
        self, command: str, names: list[str], timeout: float, drain: float | None = None
    ) -> dict[str, str]:
        """Send a lifecycle command to instances at once and wait for each reply; return problems by
        name. ``drain``: what is left of the session's drain budget (InstanceCommand)."""
        pending: dict[str, Pending] = {}
        if self.requester is None:  # never connected: nothing can be asked
            return {}
        for name in names:
            if self.instances[name].state in ("ready", "paused"):
                control = InstanceCommand(command=command, drain=drain)
                pending[name] = self.requester.send(self.topics.instance_control(name), control)
        problems: dict[str, str] = {}
        deadline = Deadline(timeout)
        for name, request in pending.items():
            try:
                reply = read_reply(request.reply(deadline.remaining))
            except RequestTimeout:
                problems[name] = f"no acknowledgement of '{command}' within {timeout:g} s"
                continue
            if not reply.ok:
                problems[name] = reply.error.message
        for name, problem in problems.items():
            log.warning("instance '%s' %s: %s", name, command, problem)
        return problems

    def finish_inputs(self, names: list[str], timeout: float) -> int | None:
        """Before the session's end: rounds in which every instance stops its periodic publishers,
        gets its results saved and catches up on what it missed, until a round in which no instance
        handled anything. Returns how many messages were handled, or None if it did not settle in time."""
        deadline = Deadline(timeout)
        total = 0
        while self.requester is not None and not deadline.expired:
            command = InstanceCommand(command="finish_inputs", drain=round(deadline.remaining, 3))
            pending = {
                n: self.requester.send(self.topics.instance_control(n), command)
                for n in names
                if self.instances[n].state in ("ready", "paused")
            }
            handled = 0
            for name, request in pending.items():
                try:
                    reply = read_reply(request.reply(deadline.remaining))
                    if not isinstance(reply, OkReply):
                        raise TypeError(reply.error.message)
                    handled += reply.result["handled"]
                except (RequestTimeout, KeyError, TypeError):
                    log.warning("instance '%s' did not finish its inputs within %.0f s", name, timeout)
                    return None
            if not handled:
                return total
            total += handled
        return None

    def restart(self, name: str, timeout: float = 10.0) -> None:
        """Stop one instance in order (save_all, cleanup, shutdown) and start it again."""
        managed = self.instances[name]
        self.stop([name], timeout)
        managed.restarts += 1
        self.spawn(managed.config)
        self.wait_ready([name], timeout)

    def running(self) -> list[str]:
        return [n for n, m in self.instances.items() if m.running()]

    def stop(
        self, names: list[str], timeout: float = 10.0, ask: bool = True, grace: float = 0.0
    ) -> dict[str, int | None]:
        """save_all -> cleanup -> shutdown, each acknowledged; then terminate, then kill. Returns exit codes.
        ``ask=False`` (the broker is far behind, or gone): no steps through it; each process is released
        (:meth:`release`) and gets ``grace`` seconds (its drain) plus ``UNREACHABLE_GRACE`` to exit; what
        its outbox still holds stays on disk for the seal to count."""
        for name in names:
            self.instances[name].stopping = True
        if ask:
            for step in SHUTDOWN_STEPS:
                self.command(step, names, timeout, drain=round(grace, 3) if step == "shutdown" else None)
        else:
            self.release(names)
        codes: dict[str, int | None] = {}
        deadline = Deadline(timeout if ask else grace + UNREACHABLE_GRACE)
        for name in names:
            child = self.instances[name].child
            if child is not None:  # an instance still waiting for its launch spec exits at once
                codes[name] = child.stop(deadline.remaining)
        return codes

    def release(self, names: list[str]) -> None:
        """Cut the lifelines of these instances, all at once: each runs save_all, cleanup and its drain
        on its own and exits, without a word through the broker."""
        for name in names:
            self.instances[name].stopping = True
            child = self.instances[name].child
            if child is not None:
                child.cut_lifeline()

    def close(self, timeout: float = 10.0, ask: bool = True, grace: float = 0.0) -> dict[str, int | None]:
        """Stop every instance we launched (``ask``, ``grace``: as in :meth:`stop`)."""
        self._closing.set()
        codes = self.stop(list(self.instances), timeout, ask, grace)
        if self._forks is not None:  # no instance is left: it exits at once
            self._forks.close(timeout)
        return codes

    def statuses(self) -> dict[str, dict[str, Any]]:
        """The latest status of each instance we launched, with the state its process is really in."""
        with self._changed:
            return {
                n: {**m.status, "state": m.state, "restarts": m.restarts} for n, m in self.instances.items()
            }
