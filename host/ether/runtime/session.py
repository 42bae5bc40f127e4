"""A running session as seen from the script or CLI that tapped it: broker, supervisor and own connection."""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from ether.config import Config, EtherConfig, EtherInstanceConfig, load
from ether.contract.messages import InstanceCommand, SessionCommand, SupervisorStatus, ok, read_reply, refused
from ether.contract.topics import Topics, check_publish_topic
from ether.contract.wire import Stamper, WireError, decode, encode
from ether.data.recorder.recording import Recording
from ether.runtime import context
from ether.runtime.registry import LIVE_STATES, LiveRegistry
from ether.runtime.services import ServiceClient
from ether.runtime.supervisor import Supervisor
from ether.transport.access import Access
from ether.transport.broker import BrokerAddress, EmbeddedBroker, needs_credentials
from ether.transport.bus import Bus, Will
from ether.transport.requests import Requester, answer

log = logging.getLogger("ether")


class Session:
    """Everything ``ether.tap()`` starts, in the order it must be stopped."""

    def __init__(
        self,
        config: Config,
        broker_url: str | None = None,
        port: int = 0,
        listen: str = "127.0.0.1",
        max_payload: int | None = None,
    ) -> None:
        if max_payload is not None:  # e.g. `ether run --max-payload`, over the file's limits.max_payload
            config.max_payload = max_payload
        self.config = config
        self.topics = Topics(config.session)
        # unique even for two sessions in one process (a notebook that owns one and joins another)
        self.name = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:4]}"
        self.stamper = Stamper(f"main:{self.name}")
        self.supervisor = Supervisor(config, self.topics)
        self.recording = Recording(config, self.topics)
        url = broker_url or config.broker_url
        # an embedded broker reachable from other machines requires logins; this run gets its own
        self.access = Access() if not url and needs_credentials(listen) else None
        self.login = self.access.session_login(config.session) if self.access else None
        password_file = str(self.access.password_file) if self.access else None
        self.embedded = (
            None if url else EmbeddedBroker(listen, port, password_file, config.max_payload, config.session)
        )
        self.address: BrokerAddress | None = (
            replace(BrokerAddress.parse(url), max_payload=config.max_payload) if url else None
        )
        self.bus: Bus | None = None
        self.registry: LiveRegistry | None = None
        self.services: ServiceClient | None = None
        self._lock = threading.Lock()
        self.end_requested = threading.Event()  # set by `ether shutdown` from anywhere
        self.started_at = time.time()

    def open(self, timeout: float = 30.0) -> None:
        """Start the broker and the autorun instances; return when all are ready and initialised."""
        autorun = [i for i in self.config.instances.values() if i.autorun]
        if self.embedded:
            self.embedded.launch()
        try:
            self.recording.begin()  # before any instance: they need the run folder for their outbox
            for instance in autorun:  # they import user code while the broker starts
                self.supervisor.spawn(instance)
            if self.embedded:
                self.address = self.embedded.wait_ready()
                if self.login:
                    self.address = replace(self.address, username=self.login[0], password=self.login[1])
                    url_file = self.access.save_session_url(self.topics.session, self.address)
                    log.info(
                        "The broker listens on %s and requires logins; other hosts join with %s",
                        self.embedded.host,
                        url_file,
                    )
            self.bus = Bus(
                self.address,
                client_id=f"ether-{self.topics.session}-main-{self.name}",
                will=Will(self.topics.supervisor_status(self.name), self._status("dead")),
            )
            self.bus.connect()
            requester = Requester(self.bus, self.topics, self.stamper)
            self.registry = LiveRegistry(self.bus, self.topics)
            self.services = ServiceClient(requester, self.registry, self.topics)
            self.supervisor.attach(self.address, self.bus, requester)
            self.recording.attach(
                self.address, self.bus, requester, self.stamper, timeout, self.embedded is None
            )
            self.bus.subscribe(self.topics.session_control(), self._on_session_control)
            names = [i.name for i in autorun]
            self.supervisor.wait_ready(names, timeout)
            self.supervisor.command("init", names, timeout)
        except BaseException as exc:
            self.close(failure=f"{type(exc).__name__}: {exc}")
            raise
        self.bus.publish(self.topics.supervisor_status(self.name), self._status("running"), retain=True)
        context.set_client(self)
        log.info(
            "Ether session '%s' ready on %s with instances: %s",
            self.topics.session,
            self.address.url,
            ", ".join(names) or "none",
        )

    def _status(self, state: str) -> bytes:
        """This supervisor's retained status: running, stopped, or dead (its Last Will)."""
        status = SupervisorStatus(
            name=self.name,
            host=socket.gethostname(),
            pid=os.getpid(),
            state=state,
            instances=sorted(self.config.instances),
            since=self.started_at,
        )
        return encode(status.payload())

    def _on_session_control(self, topic: str, raw: bytes) -> None:
        """``ether shutdown`` / ``ether stop|restart|launch NAME`` from anywhere (network thread: hand off)."""
        try:
            payload, request = decode(raw)
        except WireError:
            return
        control = SessionCommand.read(payload)
        if control is None:
            return  # not a command of the contract: another supervisor may know it
        command, name = control.command, control.instance
        if command == "shutdown":
            answer(self.bus, self.stamper, request, ok(f"supervisor {self.name} is stopping"))
            self.end_requested.set()
            return
        if name not in self.config.instances:
            return  # another supervisor's instance

        def act() -> None:
            try:
                if command == "stop":
                    self.supervisor.stop([name])
                elif command == "restart":
                    self.supervisor.restart(name)
                else:
                    spec = self.config.instances[name].model_dump()
                    self.launch({name: spec | {"autorun": True}})
                answer(self.bus, self.stamper, request, ok(f"{command} {name}: done"))
            except Exception as exc:
                answer(self.bus, self.stamper, request, refused("failed", f"{command} {name}: {exc}"))

        threading.Thread(target=act, name=f"ether-{command}-{name}", daemon=True).start()

    def start(self, timeout: float = 30.0) -> None:
        """Run every ``@ether_start`` method (and begin periodic publishers); waits for each to finish."""
        self.step("start", timeout)

    def step(self, step: str, timeout: float = 30.0) -> None:
        """Run one lifecycle step (start, save_all, cleanup) in every running instance; waits for each."""
        self.supervisor.command(step, self.supervisor.running(), timeout)

    def info(self) -> dict[str, Any]:
        """What ``ether.session_info`` shows: which session, where, run by whom, recorded where."""
        return {
            "session": self.topics.session,
            "broker": self.address.url if self.address else None,
            "hosting": self.embedded is not None,
            "supervisor": self.name,
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "started": self.started_at,
            "run_dir": self.config.recorder.run_dir or None,
        }

    def publish(self, topic: str, data: Any) -> None:
        check_publish_topic(topic)
        self.recording.publish(self.topics.data(topic), data)

    def launch(
        self, instances: Mapping[str, dict[str, Any] | EtherInstanceConfig], timeout: float = 30.0
    ) -> list[str]:
        """Start more instances in the running session (same name twice is an error)."""
        given = {n: i.model_dump() if isinstance(i, EtherInstanceConfig) else i for n, i in instances.items()}
        extra = load({"session": self.config.session, "instances": given}).instances
        for name in extra:
            if name in self.supervisor.running() or name in self.active_instances():
                raise ValueError(f"an instance named '{name}' is already running in this session")
        for instance in extra.values():
            self.config.instances[instance.name] = instance
            self.supervisor.spawn(instance)
        names = list(extra)
        self.supervisor.wait_ready(names, timeout)
        self.supervisor.command("init", names, timeout)
        return names

    def active_instances(self) -> dict[str, dict[str, Any]]:
        """Live instances of the whole session (other supervisors' too); ours as our supervisor sees them."""
        everyone = {**(self.registry.active() if self.registry else {}), **self.supervisor.statuses()}
        return {n: {**s, "name": n} for n, s in everyone.items() if s.get("state") in LIVE_STATES}

    def pause(self, paused: bool, names: list[str] | None = None, timeout: float = 10.0) -> None:
        """Hold (or release) data delivery to instances of the session (default: all of them)."""
        for name in names or list(self.active_instances()):
            control = InstanceCommand(command="pause" if paused else "resume")
            reply = read_reply(
                self.supervisor.requester.request(self.topics.instance_control(name), control, timeout)
            )
            if not reply.ok:
                raise RuntimeError(f"instance '{name}' did not {control.command}: {reply.error.message}")

    def close(self, timeout: float = 10.0, failure: str | None = None) -> dict[str, int | None]:
        """save_all -> cleanup -> exit for every instance, then the broker. Returns instance exit codes.
        ``failure``: why the session could not start (its recording is sealed as failed)."""
        with self._lock:
            context.set_client(None)
            # the drain barrier: nothing unsaved is left behind
            self.recording.end(self.supervisor, timeout, failure)
            codes = self.supervisor.close(timeout) if self.bus else {}
            if self.bus:
                status = self.topics.supervisor_status(self.name)
                self.bus.publish_and_wait(status, self._status("stopped"), retain=True)
                self.bus.close()
                self.bus = None
            if self.embedded:
                self.embedded.stop()
            return codes


def new_session(
    config: str | os.PathLike | dict | EtherConfig | Config,
    broker_url: str | None = None,
    port: int = 0,
    listen: str = "127.0.0.1",
    max_payload: int | None = None,
) -> Session:
    config = config if isinstance(config, Config) else load(config)
    return Session(config, broker_url, port, listen, max_payload)


__all__ = ["Session", "new_session"]
