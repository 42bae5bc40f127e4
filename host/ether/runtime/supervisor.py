"""Supervisor: one process per instance; readiness from retained status, restarts by policy, ordered stop.

Readiness is what an instance announces on its retained status topic, matched by process id so a
stale status left on an external broker is never mistaken for a fresh one.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import threading
from dataclasses import dataclass, field
from typing import Any

from ether.config import Config, EtherInstanceConfig
from ether.contract.topics import Topics
from ether.contract.wire import decode_object, encode
from ether.runtime.instance import EXIT_INIT_FAILED, EXIT_OK, LaunchSpec
from ether.transport.broker import BrokerAddress
from ether.transport.bus import Bus
from ether.transport.requests import Pending, Requester, RequestTimeout
from ether.transport.waiting import Deadline, wait_until

log = logging.getLogger("ether.supervisor")

SHUTDOWN_STEPS = ("save_all", "cleanup", "shutdown")


class InstanceStartError(RuntimeError):
    """An instance could not be started (its class raised, or it never became ready)."""


@dataclass
class Managed:
    """One instance under supervision."""

    config: EtherInstanceConfig
    process: subprocess.Popen | None = None
    restarts: int = 0
    status: dict[str, Any] = field(default_factory=dict)
    stopping: bool = False
    gave_up: bool = False

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    @property
    def state(self) -> str:
        """What the current process announced; if it has exited, what its exit means."""
        heard = self.status.get("state") if self.status.get("pid") == self.pid else None
        if self.process is not None and self.process.poll() is not None:
            if heard in ("failed", "restarting", "stopped"):
                return heard
            return "stopped" if self.process.returncode == 0 else "dead"
        return heard or "starting"


class Supervisor:
    """Launches, watches and stops the instances of one config."""

    def __init__(self, config: Config, topics: Topics) -> None:
        self.config, self.topics = config, topics
        self.instances: dict[str, Managed] = {}
        self.address: BrokerAddress | None = None
        self.bus: Bus | None = None
        self.requester: Requester | None = None
        self._changed = threading.Condition()
        self._closing = threading.Event()

    # -- wiring ------------------------------------------------------------------------------

    def attach(self, address: BrokerAddress, bus: Bus, requester: Requester) -> None:
        """Start listening to instance statuses; spawned processes get the broker address now."""
        self.address, self.bus, self.requester = address, bus, requester
        bus.subscribe(self.topics.instance_status_all(), self._on_status)
        for managed in self.instances.values():
            if managed.process and managed.process.poll() is None:
                self._send_spec(managed)

    def _on_status(self, topic: str, raw: bytes) -> None:
        status = decode_object(raw)
        if status is None or "instance" not in status:
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
            managed = self.instances[instance.name]
            if managed.process and managed.process.poll() is None:
                raise ValueError(f"an instance named '{instance.name}' is already running")
        managed = self.instances.get(instance.name) or Managed(instance)
        managed.config, managed.stopping, managed.gave_up = instance, False, False
        self.instances[instance.name] = managed
        self._start_process(managed)
        return managed

    def _start_process(self, managed: Managed) -> None:
        managed.process = subprocess.Popen(
            [sys.executable, "-c", "from ether.runtime.instance import main; main()"],
            stdin=subprocess.PIPE,
            text=True,
            start_new_session=True,  # Ctrl-C reaches only us; we stop instances in order
        )
        if self.address is not None:
            self._send_spec(managed)
        threading.Thread(target=self._watch, args=(managed, managed.process), daemon=True).start()

    def _send_spec(self, managed: Managed) -> None:
        c = managed.config
        spec = LaunchSpec(
            name=c.name,
            class_path=c.class_path,
            args=c.args,
            kwargs=c.constructor_kwargs,
            registry=self.config.registry,
            broker=self.address.to_dict(),
            session=self.topics.session,
            sys_path=[p for p in sys.path if p],
            config_dir=self.config.directory,
            restarts=managed.restarts,
            recording=self.config.recorder.for_instance(),
        )
        try:
            managed.process.stdin.write(json.dumps(spec.__dict__) + "\n")
            managed.process.stdin.flush()
        except (BrokenPipeError, OSError):
            pass  # the process already died; _watch handles it

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

    def _watch(self, managed: Managed, process: subprocess.Popen) -> None:
        code = process.wait()
        if managed.process is not process:
            return
        with self._changed:
            self._changed.notify_all()
        if managed.stopping or self._closing.is_set():
            return
        if code == EXIT_INIT_FAILED:  # its 'failed' status (with the reason) may still be on its way
            wait_until(self._changed, lambda: managed.status.get("state") == "failed", 2.0)
        policy, name = managed.config.restart, managed.config.name
        wanted = policy == "always" or (policy == "on-failure" and code != EXIT_OK)
        if not wanted or managed.restarts >= managed.config.max_restarts:
            why = "its restart policy is 'no'" if policy == "no" else f"it restarted {managed.restarts} times"
            if wanted:
                log.error("instance '%s' exited with code %s; giving up: %s", name, code, why)
            else:
                log.info("instance '%s' exited with code %s", name, code)
            with self._changed:
                managed.gave_up = code != EXIT_OK
                self._changed.notify_all()
            return
        managed.restarts += 1
        delay = managed.config.backoff * (2 ** (managed.restarts - 1))
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

    def _announce(self, managed: Managed, state: str, **extra: Any) -> None:
        if self.bus is None:
            return
        status = {
            "instance": managed.config.name,
            "class": managed.config.class_path,
            "state": state,
            "pid": managed.pid,
            "restarts": managed.restarts,
            **extra,
        }
        self.bus.publish(self.topics.instance_status(managed.config.name), encode(status), retain=True)

    # -- commands -----------------------------------------------------------------------------

    def command(self, command: str, names: list[str], timeout: float) -> dict[str, str]:
        """Send a lifecycle command to instances at once and wait for each reply; return problems by name."""
        pending: dict[str, Pending] = {}
        if self.requester is None:  # never connected: nothing can be asked
            return {}
        for name in names:
            if self.instances[name].state in ("ready", "paused"):
                pending[name] = self.requester.send(self.topics.instance_control(name), {"command": command})
        problems: dict[str, str] = {}
        deadline = Deadline(timeout)
        for name, request in pending.items():
            try:
                reply = request.reply(deadline.remaining)
            except RequestTimeout:
                problems[name] = f"no acknowledgement of '{command}' within {timeout:g} s"
                continue
            if not reply.get("ok"):
                problems[name] = "; ".join(reply.get("errors") or [str(reply.get("error"))])
        for name, problem in problems.items():
            log.warning("instance '%s' %s: %s", name, command, problem)
        return problems

    def restart(self, name: str, timeout: float = 10.0) -> None:
        """Stop one instance in order (save_all, cleanup, shutdown) and start it again."""
        managed = self.instances[name]
        self.stop([name], timeout)
        managed.restarts += 1
        self.spawn(managed.config)
        self.wait_ready([name], timeout)

    def running(self) -> list[str]:
        return [n for n, m in self.instances.items() if m.process and m.process.poll() is None]

    def stop(self, names: list[str], timeout: float = 10.0) -> dict[str, int | None]:
        """save_all -> cleanup -> shutdown, each acknowledged; then terminate, then kill. Returns exit codes."""
        for name in names:
            self.instances[name].stopping = True
        for step in SHUTDOWN_STEPS:
            self.command(step, names, timeout)
        codes: dict[str, int | None] = {}
        deadline = Deadline(timeout)
        for name in names:
            process = self.instances[name].process
            if process is None:
                continue
            try:
                process.stdin.close()  # an instance still waiting for its launch spec exits at once
            except OSError:
                pass
            codes[name] = _end(process, deadline.remaining, name)
        return codes

    def close(self, timeout: float = 10.0) -> dict[str, int | None]:
        """Stop every instance we launched."""
        self._closing.set()
        return self.stop(list(self.instances), timeout)

    def statuses(self) -> dict[str, dict[str, Any]]:
        """The latest status of each instance we launched, with the state its process is really in."""
        with self._changed:
            return {
                n: {**m.status, "state": m.state, "restarts": m.restarts} for n, m in self.instances.items()
            }


def _end(process: subprocess.Popen, grace: float, name: str) -> int | None:
    """Wait for a process to exit; terminate it, then kill it, if it does not."""
    for action in (None, process.terminate, process.kill):
        if action is not None:
            log.warning("instance '%s' did not stop in time; %s", name, action.__name__)
            action()
        try:
            return process.wait(grace if action is None else 5.0)
        except subprocess.TimeoutExpired:
            continue
    return None
