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
from ether.runtime.hostclock import HostClock
from ether.runtime.registry import LIVE_STATES, LiveRegistry
from ether.runtime.services import ServiceClient
from ether.runtime.supervisor import Supervisor
from ether.transport.access import Access, BrokerKey
from ether.transport.broker import (
    MANAGED_MOSQUITTO,
    BrokerAddress,
    BrokerError,
    EmbeddedBroker,
    Listener,
    SupervisedBroker,
    needs_credentials,
)
from ether.transport.broker_check import check_broker
from ether.transport.bus import Bus, Will
from ether.transport.lag import BrokerLag
from ether.transport.log_publishing import LogPublisher, publish_logs, stop_publishing_logs
from ether.transport.mosquitto import ManagedMosquitto
from ether.transport.permissions import Login
from ether.transport.requests import Requester, answer
from ether.transport.signing import new_secret

log = logging.getLogger("ether")

LAG_BEHIND = 2.0  # seconds: a broker this far behind is overloaded (said in the log, status and store)
LAG_CAUGHT_UP = 1.0  # seconds: below this again, it has caught up (a loaded machine adds ~0.1 s)
LAG_STEP = 10.0  # seconds more behind before the log and the status say it again


class Session:
    """Everything ``ether.tap()`` starts, in the order it must be stopped."""

    def __init__(
        self,
        config: Config,
        broker_url: str | None = None,
        port: int = 0,
        listen: str = "127.0.0.1",
        max_payload: int | None = None,
        listeners: tuple[Listener, ...] = (),
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
        managed = url == MANAGED_MOSQUITTO  # a Mosquitto this session starts (--broker mosquitto)
        hosted = managed or not url
        if listeners and not hosted:
            raise BrokerError("--listener adds ports to the broker the session starts; it joins " + str(url))
        if listeners and managed:
            raise BrokerError("--listener is for the embedded broker; a managed Mosquitto has one listener")
        if managed and needs_credentials(listen):
            raise BrokerError(
                f"--broker mosquitto listens on 127.0.0.1 only (not {listen}); see docs/operations.md"
            )
        # a broker reachable from other machines requires logins: the boards' are in the password file
        self.access = Access() if hosted and needs_credentials(listen) else None
        password_file = str(self.access.password_file) if self.access else None
        self.secret = new_secret() if hosted else None  # the key of the broker we start
        self.mosquitto = (
            ManagedMosquitto(port, self.secret, self._logins(), config.max_payload)
            if managed and self.secret
            else None
        )
        self.embedded = (
            EmbeddedBroker(
                listen, port, password_file, config.max_payload, config.session, self.secret, listeners
            )
            if not url
            else self.mosquitto
        )
        # the broker's address, its key and our connection: set by open() (the broker we start must be up)
        self._address: BrokerAddress | None = (
            replace(BrokerAddress.parse(url), max_payload=config.max_payload) if url and not managed else None
        )
        self.key: BrokerKey | None = None
        self._bus: Bus | None = None
        self._logs: LogPublisher | None = None  # this supervisor's lines, published from open() to close()
        self.registry: LiveRegistry | None = None
        self._services: ServiceClient | None = None
        self._lock = threading.Lock()
        self.end_requested = threading.Event()  # set by `ether shutdown` from anywhere
        self.broker_lost: str | None = None  # why the broker we started is gone for good
        self.lag: BrokerLag | None = None  # how far behind the broker is, from open() on
        self._behind_since: float | None = None  # when the broker fell behind (None: it keeps up)
        self._lag_shown = 0.0  # the broker_lag_s last put in our status (when behind)
        self._worst_lag = 0.0  # the most it was behind, this time
        self.started_at = time.time()
        self.clock: HostClock | None = None  # this host's offset to the recorder's clock, measured

    @property
    def address(self) -> BrokerAddress:
        """The broker's address (the one we started is known once open() has started it)."""
        if self._address is None:
            raise RuntimeError("the session is not open: call open() first")
        return self._address

    @property
    def bus(self) -> Bus:
        """This supervisor's connection to the broker, from open() to close()."""
        if self._bus is None:
            raise RuntimeError("the session is not open: call open() first")
        return self._bus

    @property
    def services(self) -> ServiceClient:
        """Calls to the services of the session's instances, once open() has connected."""
        if self._services is None:
            raise RuntimeError("the session is not open: call open() first")
        return self._services

    def open(self, timeout: float = 30.0) -> None:
        """Start the broker and the autorun instances; return when all are ready and initialised."""
        autorun = [i for i in self.config.instances.values() if i.autorun]
        if self.embedded:
            self.embedded.launch()
        try:
            if autorun:  # the fork server imports while the broker starts and the run folder is written
                self.supervisor.prepare()
            self.recording.begin()  # before any instance: they need the run folder for their outbox
            for instance in autorun:  # they import user code while the broker starts
                self.supervisor.spawn(instance)
            if self.embedded:
                self._address = self.embedded.wait_ready()
            if isinstance(self.embedded, SupervisedBroker):
                self.embedded.supervise(self._broker_restarted, self._broker_lost)
            address = self.address  # the broker we started, or the one the URL names
            self.key = key = self._broker_key(address)
            if self.access and self.embedded:
                remote = key.address(address, Login("supervisor", self.topics.session, "remote"))
                url_file = self.access.save_session_url(self.topics.session, remote)
                log.info(
                    "The broker listens on %s and requires logins; other hosts join with %s (and %s)",
                    self.embedded.host,
                    url_file,
                    BrokerKey.path(address.port),
                )
            self._bus = bus = Bus(
                key.address(address, Login("supervisor", self.topics.session, self.name)),
                client_id=f"ether-{self.topics.session}-main-{self.name}",
                will=Will(self.topics.supervisor_status(self.name), self._status("dead")),
            )
            bus.connect()
            if self.embedded is None:  # a broker we did not start: does it keep Ether's topics?
                check_broker(bus, f"{self.topics.replies(bus.client_id)}/broker-check")
            self._logs = publish_logs(bus, self.topics.log(self.name), logging.getLogger("ether"))
            self.lag = BrokerLag(bus, f"{self.topics.replies(bus.client_id)}/lag", self._lag_measured)
            self.lag.start()
            requester = Requester(bus, self.topics, self.stamper)
            self.registry = LiveRegistry(bus, self.topics)
            self._services = ServiceClient(requester, self.registry, self.topics)
            self.supervisor.attach(address, bus, requester, key)
            self.recording.attach(
                address, bus, requester, self.stamper, timeout, key, self.embedded is None, self.name
            )
            bus.subscribe(self.topics.session_control(), self._on_session_control)
            names = [i.name for i in autorun]
            self.supervisor.wait_ready(names, timeout)
            self.supervisor.command("init", names, timeout)
        except BaseException as exc:
            self.close(failure=f"{type(exc).__name__}: {exc}")
            raise
        # on the broker before we say we run: a recorder's session that we joined then knows of us
        self.bus.publish_and_wait(
            self.topics.supervisor_status(self.name), self._status("running"), retain=True
        )
        context.set_client(self)
        self.clock = HostClock(
            self.services.requester,
            self.topics,
            self.name,
            socket.gethostname(),
            lambda: [self.stamper.source, *self.supervisor.instances],
        )
        self.clock.start()
        if isinstance(self.embedded, EmbeddedBroker):
            for listener, bound in self.embedded.ports.items():
                log.info("The broker also listens on %s://%s:%d", listener.scheme, self.embedded.host, bound)
        log.info(
            "Ether session '%s' ready on %s with instances: %s",
            self.topics.session,
            address.url,
            ", ".join(names) or "none",
        )

    def _logins(self, names: list[str] | None = None) -> list[Login]:
        """The derived logins of this session's clients (a managed Mosquitto must list them all)."""
        session = self.topics.session
        if names is not None:
            return [Login("instance", session, n) for n in names]
        clients = [Login("supervisor", session, n) for n in (self.name, "remote")]
        operators = [Login("operator", session, n) for n in ("cli", "monitor")]
        return [
            *clients,
            *operators,
            Login("recorder", session, "recorder"),
            *self._logins(list(self.config.instances)),
        ]

    def _broker_key(self, address: BrokerAddress) -> BrokerKey:
        """The key of our broker (its logins, the sources' signing keys; its process keeps the key
        file); joining a broker, the key its host left for this user, or a new one that only signs."""
        if self.secret is not None and self.embedded is not None and self.embedded.pid is not None:
            return BrokerKey(self.secret, address.port, logins=True, pid=self.embedded.pid)
        return BrokerKey.find(address) or BrokerKey.create(address.port, logins=False, pid=os.getpid())

    def _status(self, state: str) -> bytes:
        """This supervisor's retained status: running, stopped (with what its outboxes still hold), or
        dead (its Last Will). It names the recorder's run, so that a recorder's session that we joined
        waits for our data at its end."""
        unsaved = self.recording.unsaved_ranges if state == "stopped" else None
        status = SupervisorStatus(
            name=self.name,
            host=socket.gethostname(),
            pid=os.getpid(),
            state=state,
            instances=sorted(self.config.instances),
            since=self.started_at,
            recorder_run=self.recording.recorder_run,
            unsaved=unsaved or None,
            broker_lag_s=round(self.lag.lag, 1) if self.lag else None,
        )
        return encode(status.payload())

    def _broker_restarted(self, restarts: int, exit_code: int | None) -> None:
        """Our broker died and runs again on its port: clients reconnect, outboxes resend."""
        log.warning("the broker was restarted on %s (restart %d)", self.address.url, restarts)
        self.recording.note("broker_restarted", restarts=restarts, exit_code=exit_code, url=self.address.url)

    def _lag_measured(self, lag: float) -> None:
        """Each second: say when the broker falls behind (a log warning, our status's broker_lag_s,
        a ``broker_behind`` event), how far while it is (every ``LAG_STEP`` s more), and when it caught up."""
        behind = self._behind_since is not None
        if behind:
            self._worst_lag = max(self._worst_lag, lag)
        if not behind and lag >= LAG_BEHIND:
            self._behind_since, self._worst_lag = time.time(), lag
            log.warning(
                "the broker is %.0f s behind: every message is delayed (overloaded; the embedded broker"
                " carries a few hundred messages/s, use --broker mosquitto for more)",
                lag,
            )
        elif behind and lag < LAG_CAUGHT_UP:
            log.warning("the broker caught up (it was up to %.0f s behind)", self._worst_lag)
            self.recording.note(
                "broker_behind", since=self._behind_since, worst_lag_s=round(self._worst_lag, 1)
            )
            self._behind_since = None
        elif behind and lag >= self._lag_shown + LAG_STEP:
            log.warning("the broker is %.0f s behind", lag)
        else:
            return
        self._lag_shown = lag
        bus = self._bus
        if bus is not None:
            bus.publish(self.topics.supervisor_status(self.name), self._status("running"), retain=True)

    def _broker_lost(self, reason: str) -> None:
        """Our broker cannot be restarted: the session ends now (its close does not wait for
        a broker that is not there), and the seal counts what the outboxes still hold."""
        log.error("%s; ending the session", reason)
        self.broker_lost = reason
        self.recording.note("broker_lost", reason=reason)
        self.end_requested.set()

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
            "broker": self._address.url if self._address else None,
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
        if self.mosquitto:
            self.mosquitto.allow(self._logins(list(extra)), timeout)
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
                self.services.requester.request(self.topics.instance_control(name), control, timeout)
            )
            if not reply.ok:
                raise RuntimeError(f"instance '{name}' did not {control.command}: {reply.error.message}")

    def close(self, timeout: float = 10.0, failure: str | None = None) -> dict[str, int | None]:
        """save_all -> cleanup -> exit for every instance, then the broker. Returns instance exit codes.
        ``failure``: why the session could not start (its recording is sealed as failed)."""
        with self._lock:
            context.set_client(None)
            if self.clock is not None:
                self.clock.stop()
            # the drain barrier: nothing unsaved is left behind
            reachable = self.broker_lost is None
            via_broker = reachable and (self._bus is None or self._bus.connected)
            if reachable and not via_broker:  # a broker we joined went away (its host ended it)
                log.warning(
                    "the broker at %s is not reachable: instances stop on their own (save_all, cleanup,"
                    " drain), not through it; what is not saved in the drain timeout is counted",
                    self.address.url,
                )
            if self.lag is not None:
                self.lag.stop()
                if self._behind_since is not None:  # it never caught up: say so in the store
                    lag = self.lag.lag
                    worst = round(max(self._worst_lag, lag), 1)
                    self.recording.note(
                        "broker_behind", since=self._behind_since, worst_lag_s=worst, at_end=True
                    )
                    if lag >= LAG_BEHIND:
                        log.warning(
                            "the broker is %.0f s behind: instances stop on their own (save_all, cleanup,"
                            " drain), not through it; what is not saved in the drain timeout is counted",
                            lag,
                        )
                        via_broker = False
            self.recording.end(self.supervisor, timeout, failure, via_broker, drain=reachable)
            codes = self.supervisor.close(timeout, ask=via_broker and self._bus is not None)
            codes = codes if self._bus else {}  # never connected: none got its spec; none ran
            if self._bus:
                status = self.topics.supervisor_status(self.name)
                if reachable:
                    self._bus.publish_and_wait(status, self._status("stopped"), retain=True)
                if self._logs is not None:
                    stop_publishing_logs(self._logs, logging.getLogger("ether"))
                    self._logs = None
                self._bus.close()
                self._bus = None
            if self.embedded:
                self.embedded.stop()
            if self.key:
                self.key.remove()
            return codes


def new_session(
    config: str | os.PathLike | dict | EtherConfig | Config,
    broker_url: str | None = None,
    port: int = 0,
    listen: str = "127.0.0.1",
    max_payload: int | None = None,
    listeners: tuple[Listener, ...] = (),
) -> Session:
    config = config if isinstance(config, Config) else load(config)
    return Session(config, broker_url, port, listen, max_payload, listeners)


__all__ = ["Session", "new_session"]
