"""Instance runtime: hosts one user object in its own process and binds its methods to the bus.

User code runs on one worker thread, one call at a time, so a class need not be thread-safe. Paho's
network thread only queues work and answers ``status``; a handler that blocks therefore never stops
the instance from being seen and stopped. A bad message or an exception in user code becomes an
error event (instance, topic, reason; for an exception its traceback) and the next message is processed.
"""

from __future__ import annotations

import functools
import logging
import os
import queue
import socket
import sys
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ether import exits
from ether.contract.arrays import is_frame
from ether.contract.messages import ErrorEvent, ErrorKind, InstanceCommand, InstanceStatus, ok, refused
from ether.contract.topics import Topics, check_publish_topic, covers, matches, unshared
from ether.contract.wire import Meta, MetaError, Stamper, WireError, decode, encode
from ether.data import processed
from ether.data.outbox import DataPublisher
from ether.data.processed import numbered
from ether.data.recorder.settings import RecorderSettings
from ether.logs import error_event_limit, setup_logging
from ether.processes import give_back_free_heap, on_lifeline_cut, read_spec
from ether.runtime import context
from ether.runtime.classes import add_import_paths, import_class
from ether.runtime.decorators import EtherSpec, apply_registry, bind, spec_of, unbind
from ether.runtime.pools import share_of
from ether.runtime.registry import LiveRegistry
from ether.runtime.schedules import Plan, Scheduler
from ether.runtime.schema import ArgumentError, MethodSchema
from ether.runtime.services import InvalidArguments, NotFound, ServiceClient, ServiceFailed
from ether.transport.broker import BrokerAddress, BrokerError
from ether.transport.bus import ROUTES_LIMIT, Bus, Will
from ether.transport.log_publishing import PrintedLines, publish_logs, stop_publishing_logs
from ether.transport.requests import Requester, answer
from ether.transport.signing import Sources
from ether.transport.waiting import Deadline

log = logging.getLogger("ether.runtime")
PACKAGE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # host/ether


@dataclass
class LaunchSpec:
    """Everything a fresh process needs to host one instance (sent as one JSON line on stdin)."""

    name: str
    class_path: str
    broker: dict[str, Any]
    session: str
    args: list[Any] = field(default_factory=list)
    kwargs: dict[str, Any] = field(default_factory=dict)
    registry: dict[str, Any] = field(default_factory=dict)
    sys_path: list[str] = field(default_factory=list)
    config_dir: str = ""
    restarts: int = 0
    recording: dict[str, Any] = field(default_factory=dict)  # RecorderSettings.for_instance()
    key: str = ""  # hex: the key its messages are signed with (``transport/signing``)
    secret: str = ""  # hex: the broker key, to check the sources of what it receives
    worker: int = 0  # a pool worker's index: it handles only the messages of its share (``pools``)
    workers: int = 1  # the pool's size; 1: not a pool
    schedule: list[dict[str, Any]] = field(default_factory=list)  # config ScheduleEntry (runtime/schedules)


@dataclass
class BoundMethod:
    """One decorated method of the hosted object, with its schema built once."""

    name: str
    call: Callable[..., Any]
    spec: EtherSpec
    schema: MethodSchema
    tick_pending: bool = False


@dataclass(frozen=True)
class Route:
    """Where a message on one user topic goes: the first subscribed filter matching it (whose
    subscription delivers it) and the handlers of every matching filter, in the order of ``handlers``."""

    first: str
    methods: tuple[BoundMethod, ...]


class InstanceRuntime:
    """Connects the hosted object's decorated methods to the bus and runs the lifecycle steps."""

    def __init__(self, spec: LaunchSpec, bus: Bus, cls: type) -> None:
        self.spec, self.bus, self.cls = spec, bus, cls
        self.topics = Topics(spec.session)
        self.stamper = Stamper(spec.name)
        recording = RecorderSettings.of_instance(spec.recording)
        self.stamper.key = bytes.fromhex(spec.key) if spec.key else None
        self.data = DataPublisher(bus, self.topics, self.stamper, recording)
        self.sources = Sources(
            bytes.fromhex(spec.secret) if spec.secret else None, spec.session, boards=False
        )
        self.obj: Any = None
        self.jobs: queue.SimpleQueue[Callable[[], object] | None] = queue.SimpleQueue()  # results unused
        self.finished = threading.Event()
        self.started = time.time()  # when this process began hosting the instance (for uptime)
        self.shutting_down = False  # the shutdown step has run (or the process is ending)
        self.exit_code = exits.OK
        self.methods: list[BoundMethod] = []
        self.publishers: dict[Callable, tuple[str, BoundMethod]] = {}
        self.service_methods: dict[str, BoundMethod] = {}
        self._services: ServiceClient | None = None  # set by subscribe()
        self._parents = threading.local()
        self._ticking = threading.Event()
        self.state = "starting"
        self.handlers: dict[str, list[BoundMethod]] = {}  # user topic filter -> its handlers
        self.broker_filters: list[str] = []  # handler filters no other covers: subscribed at the broker
        self._routes: dict[str, Route] = {}  # user topic -> its route, once a message came on it
        self.handled = 0  # messages handled since the last round of the session's end
        self.quiet = False  # the session is ending: periodic publishers stop
        self.drain_budget = self.data.settings.drain_timeout  # the last drain's wait; shutdown sets it
        self.ending = False  # the session's end has begun (finish_inputs came; network thread)
        self.cutting = False  # the end's save_all is queued: the inputs waiting before it are left
        self.paused = False
        self._held: list[Callable[[], None]] = []
        self._pause_lock = threading.Lock()
        self.error_limit = error_event_limit()
        self._suppressed_on = ""  # the topic of the last error event held back
        bus.on_oversized = lambda topic, size: self.report_error(
            self._readable(topic), bus.oversized(topic, size), size=size
        )

    @property
    def services(self) -> ServiceClient:
        """Calls to the session's services, once subscribe() has connected them."""
        if self._services is None:
            raise RuntimeError("the instance is not subscribed: call subscribe() first")
        return self._services

    def _readable(self, topic: str) -> str:
        return self.topics.user_topic(topic) if self.topics.is_data(topic) else topic

    # -- status -----------------------------------------------------------------------------

    def status(self, state: str) -> InstanceStatus:
        return InstanceStatus(
            instance=self.spec.name,
            class_path=self.spec.class_path,
            state=state,
            pid=os.getpid(),
            host=socket.gethostname(),
            restarts=self.spec.restarts,
            publishes=sorted({t for t, _ in self.publishers.values()}),
            subscribes=sorted({m.spec.sub.topic for m in self.methods if m.spec.sub}),
            services=sorted(self.service_methods),
            service_args={n: m.schema.argument_types() for n, m in sorted(self.service_methods.items())},
            started=self.started,
            t=time.time(),
        )

    def announce(self, state: str, wait: bool = True) -> None:
        """Publish our retained status (``wait=False`` on the network thread, which cannot wait)."""
        self.state = state
        payload = encode(self.status(state).payload())
        if wait:
            self.bus.publish_and_wait(self.topics.instance_status(self.spec.name), payload, retain=True)
        else:
            self.bus.publish(self.topics.instance_status(self.spec.name), payload, retain=True)

    def pause(self, paused: bool) -> None:
        """Hold data messages (and periodic calls) while paused; deliver the held ones on resume."""
        with self._pause_lock:
            self.paused = paused
            held, self._held = self._held, []
        for job in held:
            self.jobs.put(job)
        self.announce("paused" if paused else "ready", wait=False)

    # -- start ------------------------------------------------------------------------------

    def construct(self) -> None:
        """Build the user's object; its own exceptions are reported as they are, never swallowed."""
        self.obj = self.cls(*self.spec.args, **self.spec.kwargs)
        for attr in dir(type(self.obj)):
            func = getattr(type(self.obj), attr, None)
            spec = spec_of(func)
            if spec is None or func is None:
                continue
            method = BoundMethod(attr, getattr(self.obj, attr), spec, MethodSchema(func))
            self.methods.append(method)
            if spec.pub:
                self.publishers[func] = (self.topics.data(spec.pub.topic), method)
            if spec.service:
                self.service_methods[spec.service.name] = method
        bind(self.obj, self.publish_return)

    def subscribe(self) -> None:
        """Subscribe every handler (waiting for the broker's acknowledgement) and the control topic;
        then catch up on what the session store holds for us and we have not processed."""
        for m in self.methods:
            if m.spec.sub:
                self.handlers.setdefault(m.spec.sub.topic, []).append(m)
        subscribed = threading.Event()
        self.jobs.put(lambda: (subscribed.wait(), self.catch_up()))  # before any live message
        accounted: list[str] = []
        if self.data.outbox is not None and self.data.processed is not None:
            # a broker-shared subscription's messages go to one of several instances: none can tell
            # what it missed, so they are neither caught up nor accounted (a pool, workers: N, is)
            accounted = [f for f in self.handlers if unshared(f) == f]
            for f in set(self.handlers) - set(accounted):
                log.warning(
                    "instance '%s': '%s' is a broker-shared subscription: its messages are handled, but"
                    " not caught up nor counted in the seal; for a pool Ether accounts for, use workers: N",
                    self.spec.name,
                    f,
                )
        # a broker sends one copy per matching subscription: a filter another of ours covers gets
        # none, and the route gives each message to the handlers of every filter it matches
        self.broker_filters = [
            f for f in self.handlers if not any(o != f and covers(o, f) for o in self.handlers)
        ]
        with self.bus.subscribing():  # sent at once, acknowledged together: one round trip
            for user_filter in self.broker_filters:
                self.bus.subscribe(
                    self.topics.data(user_filter),
                    functools.partial(self._queue_delivery, user_filter),
                )
            self.sources.follow(self.bus, self.topics)
            self.bus.subscribe(self.topics.instance_control(self.spec.name), self.on_control)
            self.bus.subscribe(
                self.topics.instance_calls(self.spec.name),
                lambda t, raw: self.jobs.put(lambda: self.serve(t, raw)),
            )
            requester = Requester(self.bus, self.topics, self.stamper, self.current_parents)
            self._services = ServiceClient(requester, LiveRegistry(self.bus, self.topics), self.topics)
        self.data.attach()
        self.data.subscribed(accounted)  # in the ledger before the catch-up; its report after attach()
        subscribed.set()
        context.set_client(self)

    def _queue_delivery(self, user_filter: str, topic: str, raw: bytes) -> None:
        """A data message of ``user_filter`` (network thread): hand it to the job thread."""
        self.jobs.put(lambda: self.deliver(user_filter, topic, raw))

    # -- data path ------------------------------------------------------------------------

    def deliver(self, user_filter: str, topic: str, raw: bytes) -> None:
        """A live message from the subscription of one filter: handled once, by every matching handler;
        one still waiting when the session's end gets to save_all is left (the seal counts it)."""
        if self.cutting:
            return
        with self._pause_lock:
            if self.paused:  # held, in order, until resume
                self._held.append(lambda: self.deliver(user_filter, topic, raw))
                return
        user_topic = self.topics.user_topic(topic)
        if self._route(user_topic).first != user_filter:
            return  # overlapping filters: the first one that matches delivers it
        try:
            payload, meta = decode(raw)
        except MetaError as exc:  # handled as a foreign message, and said so
            self.report_error(user_topic, str(exc), sender=exc.src, field=exc.field)
            payload, meta = exc.payload, None
        except WireError as exc:
            if is_frame(raw):  # it claims to be Ether's binary encoding but is malformed
                self.report_error(user_topic, str(exc))
                return
            # neither JSON nor a frame (a camera's JPEG): as it came, as the recorder keeps it
            payload, meta = bytes(raw), None
        if numbered(meta) and self.sources.problem(raw, meta.src):  # e.g. a copied (src, boot, seq)
            meta = None  # handled as a foreign client's message: it takes no place in our ledger
        self.handle(user_topic, payload, meta, raw)

    def handle(self, user_topic: str, payload: Any, meta: Meta | None, raw: bytes = b"") -> None:
        """Validate one message for each handler and call it, unless it was handled before or is
        another pool worker's; any failure becomes an error event. Its processed mark commits with what
        the handlers publish. After the shutdown step nothing is handled (it would come after
        cleanup, and after the last report of what this instance processed): it is left unprocessed."""
        if self.shutting_down or self.data.seen(meta):
            return
        if share_of(meta, raw, self.spec.workers) != self.spec.worker:
            with self.data.handling(meta):  # marked as passed over: the ledger of its worker tells
                return
        self.handled += 1
        with self.data.handling(meta):
            for method in self._route(user_topic).methods:
                try:
                    kwargs = method.schema.arguments(payload)
                except ArgumentError as exc:
                    self.report_error(user_topic, str(exc), method, meta)
                    continue
                self.invoke(method, kwargs, user_topic, meta)

    def _route(self, user_topic: str) -> Route:
        """The filters and handlers ``user_topic`` matches, remembered (worker thread only)."""
        route = self._routes.get(user_topic)
        if route is None:
            filters = [f for f in self.handlers if matches(f, user_topic)]
            first = next((f for f in filters if f in self.broker_filters), "")  # in the same order
            route = Route(first, tuple(m for f in filters for m in self.handlers[f]))
            if len(self._routes) >= ROUTES_LIMIT:  # topics are the senders' choice: bounded
                self._routes.clear()
            self._routes[user_topic] = route
        return route

    def catch_up(self) -> int:
        """Handle the durable messages the session store holds on our topics that this instance (any of
        its processes) has not processed: missed while it was dead, restarting or not yet started."""
        if self.data.outbox is None or not self.handlers:
            return 0
        missed = processed.missed(Path(self.data.settings.run_dir), self.data.outbox.path)
        if missed:
            log.info("instance '%s': catching up on %d messages it missed", self.spec.name, len(missed))
        for message in missed:
            if self.cutting:
                break
            self.handle(message.topic, message.payload, message.meta)
        return len(missed)

    def finish_inputs(self, request: Meta | None, drain: float | None = None) -> None:
        """One round of the session's end: stop periodic publishers and hold no more messages, get our
        results saved, catch up, get those saved; answer how many messages were handled since the last
        round (the session repeats rounds until every instance answers 0). ``drain``: the seconds all
        of it may wait for our data (what is left of the session's drain budget). A round still
        waiting when the session moved on to save_all (its drain budget spent) is not run."""
        if self.cutting:
            return
        self.quiet = True
        if self.paused:
            self.pause(False)
        deadline = Deadline(self.data.settings.drain_timeout if drain is None else drain)
        unsaved = self.data.drain(deadline.remaining, closing=False)
        if not deadline.expired and not self.cutting:  # else the session no longer waits for us
            self.catch_up()
            unsaved = self.data.drain(deadline.remaining, closing=False)
        handled, self.handled = self.handled, 0
        answer(self.bus, self.stamper, request, ok({"handled": handled, "unsaved": unsaved}))

    def invoke(
        self, method: BoundMethod, kwargs: dict[str, Any], topic: str, meta: Meta | None
    ) -> tuple[Any, Exception | None]:
        """Call user code with the triggering message as parent of what it publishes.

        Returns (value, None), or (None, exception) after reporting the exception as an error event.
        """
        self._parents.ids = [meta.id] if meta and meta.id else []
        try:
            return method.call(**kwargs), None
        except Exception as exc:
            self.report_error(topic, _reason(exc), method, meta, user_traceback(exc))
            return None, exc
        finally:
            self._parents.ids = []

    def serve(self, topic: str, raw: bytes) -> None:
        """Answer one service request: the result, or an error whose kind the caller can tell apart."""
        parsed = self.topics.parse(topic)  # our own calls topic: always in the layout
        name = parsed.detail if parsed else topic
        try:
            params, meta = decode(raw)
        except WireError as exc:  # a request whose reply_to or corr cannot be trusted is not served
            self.report_error(topic, str(exc), **_meta_fault(exc))
            return
        method = self.service_methods.get(name)
        if method is None:
            self._refuse(meta, "unknown_service", f"instance '{self.spec.name}' has no service '{name}'")
            return
        try:
            kwargs = method.schema.arguments(params)
        except ArgumentError as exc:  # rejected like a bad data message, and the caller is told why
            self.report_error(topic, str(exc), method, meta)
            self._refuse(meta, InvalidArguments.kind, str(exc))
            return
        value, failure = self.invoke(method, kwargs, name, meta)
        if failure is None:
            answer(self.bus, self.stamper, meta, ok(value))
        else:
            kind = NotFound.kind if isinstance(failure, LookupError) else ServiceFailed.kind
            self._refuse(meta, kind, _reason(failure))

    def _refuse(self, request: Meta | None, kind: ErrorKind, message: str) -> None:
        answer(self.bus, self.stamper, request, refused(kind, message))

    def current_parents(self) -> list[str] | None:
        """Ids of the message this thread is handling: the parents of what it publishes or requests."""
        return getattr(self._parents, "ids", None)

    def publish_return(self, func: Callable, value: Any) -> None:
        """Called by an ``@ether_pub`` method on the hosted object: validate and publish its return."""
        topic, method = self.publishers[func]
        try:
            payload = method.schema.result(value)
        except ArgumentError as exc:
            self.report_error(self.topics.user_topic(topic), str(exc), method)
            return
        self.data.publish(topic, payload, self.current_parents())

    def publish(self, user_topic: str, data: Any) -> None:
        """``ether.pub(data, topic)`` from inside the instance."""
        check_publish_topic(user_topic)
        self.data.publish(self.topics.data(user_topic), data, self.current_parents())

    def report_error(
        self,
        topic: str,
        reason: str,
        method: BoundMethod | None = None,
        meta: Meta | None = None,
        trace: str | None = None,
        **fault: Any,
    ) -> None:
        """Log and publish an error event; ``fault``: the sender, the metadata field or the size at fault.
        Beyond the rate limit an event is only counted: the next one sent says how many were not."""
        if not self.error_limit.allow():
            self._suppressed_on = topic
            return
        suppressed = self.error_limit.take_refused() or None
        where = f" ({self.cls.__name__}.{method.name})" if method else ""
        log.error(
            "instance '%s' topic '%s'%s: %s%s",
            self.spec.name,
            topic,
            where,
            reason,
            f"\n{trace}" if trace else "",
        )
        event = ErrorEvent(
            instance=self.spec.name,
            topic=topic,
            method=method.name if method else None,
            reason=reason,
            message_id=(meta.id if meta else None) or None,  # a foreign client's message has no id
            traceback=trace,
            suppressed=suppressed,
            **fault,
        )
        self.bus.publish(self.topics.errors(), encode(event.payload(), self.stamper.control()))

    def report_suppressed(self) -> None:
        """At the end: the count of error events the rate limit held back since the last one sent."""
        suppressed = self.error_limit.take_refused()
        if suppressed:
            reason = f"{suppressed} more error events not sent (more than {self.error_limit.rate:g} a second)"
            log.error("instance '%s': %s", self.spec.name, reason)
            event = ErrorEvent(
                instance=self.spec.name, topic=self._suppressed_on, reason=reason, suppressed=suppressed
            )
            self.bus.publish(self.topics.errors(), encode(event.payload(), self.stamper.control()))

    # -- periodic publishers ----------------------------------------------------------------

    def start_ticking(self) -> None:
        """Begin periodic publishers and the ``schedule:`` of the YAML (once)."""
        if self._ticking.is_set():
            return
        self._ticking.set()
        if self.spec.schedule:
            plans = [Plan(**entry) for entry in self.spec.schedule]
            Scheduler(plans, self.jobs.put, self._scheduled, self.finished).start()
        periodic = [(m, m.spec.pub.interval) for m in self.methods if m.spec.pub and m.spec.pub.interval]
        if periodic:
            threading.Thread(
                target=self._tick_loop, args=(periodic,), name="ether-ticks", daemon=True
            ).start()

    def _tick_loop(self, periodic: list[tuple[BoundMethod, float]]) -> None:
        """Queue a tick of each periodic publisher every ``interval`` seconds."""
        due = {id(m): time.monotonic() for m, _ in periodic}
        while not self.finished.is_set():
            now = time.monotonic()
            for m, interval in periodic:
                if due[id(m)] <= now:
                    due[id(m)] = max(due[id(m)] + interval, now)  # no burst after a stall
                    if not m.tick_pending:  # a slow sensor skips ticks instead of piling them up
                        m.tick_pending = True
                        self.jobs.put(functools.partial(self._tick, m))
            self.finished.wait(max(0.0, min(due.values()) - time.monotonic()))

    def _tick(self, method: BoundMethod) -> None:
        method.tick_pending = False
        if self.paused or self.quiet:
            return
        self.invoke(method, {}, method.spec.pub.topic if method.spec.pub else method.name, None)

    def _scheduled(self, plan: Plan, kwargs: dict[str, Any], trial: dict[str, Any] | None) -> None:
        """One call of ``schedule:`` on the worker thread; a trial sequence's call inside its trial."""
        if self.paused or self.quiet:
            return
        topic = f"<schedule {plan.method}>"
        try:
            call = getattr(self.obj, plan.method)
            if trial is None:
                call(**kwargs)
                return
            from ether import experiments

            with experiments.trial(plan.method, **trial):
                call(**kwargs)
        except Exception as exc:
            self.report_error(topic, _reason(exc), trace=user_traceback(exc))

    # -- control ----------------------------------------------------------------------------

    def on_control(self, topic: str, raw: bytes) -> None:
        """Runs on the network thread: answer status at once, queue lifecycle steps for the worker."""
        try:
            payload, meta = decode(raw)
        except WireError as exc:
            self.report_error(topic, f"bad control message: {exc}", **_meta_fault(exc))
            return
        control = InstanceCommand.read(payload)
        command = control.command if control else None
        if command == "status":
            answer(self.bus, self.stamper, meta, ok(self.status(self.state).payload()))
        elif command in ("pause", "resume"):
            self.pause(command == "pause")
            answer(self.bus, self.stamper, meta, ok())
        elif command in ("init", "start", "save_all", "cleanup", "shutdown"):
            if command == "shutdown" and control and control.drain is not None:
                self.drain_budget = control.drain  # what the session's drain has left for ours
            if command == "save_all" and self.ending:  # the end's drain is over: do not wait for inputs
                self.cutting = True
            self.jobs.put(lambda: self.lifecycle(command, meta))
        elif command == "finish_inputs":
            self.ending = True
            drain = control.drain if control else None
            self.jobs.put(lambda: self.finish_inputs(meta, drain))
        elif command == "sync":  # answered after every message queued before it (used by ether replay)
            self.jobs.put(lambda: answer(self.bus, self.stamper, meta, ok()))
        else:
            problem = f"unknown command {_command_of(payload)!r} (instance '{self.spec.name}')"
            answer(self.bus, self.stamper, meta, refused("unknown_command", problem))

    def lifecycle(self, event: str, request: Meta | None) -> None:
        """Run every method marked for this step, in name order; report each failure."""
        self.cutting = False  # what arrives from now on (another instance's last word) is handled
        errors = []
        for method in sorted((m for m in self.methods if event in m.spec.lifecycle), key=lambda m: m.name):
            _, exc = self.invoke(method, {}, f"<{event}>", request)
            if exc:
                errors.append(f"{method.name}: {_reason(exc)}")
        if event == "start":
            self.start_ticking()
        if event == "shutdown":  # before answering: the supervisor closes our stdin once answered
            self.shutting_down = True
        answer(self.bus, self.stamper, request, refused("exception", "; ".join(errors)) if errors else ok())
        if event == "shutdown":
            self.finished.set()

    def work(self) -> None:
        """The worker thread: run queued calls one at a time until told to stop."""
        while (job := self.jobs.get()) is not None:
            try:
                job()
            except Exception:
                log.exception("instance '%s': internal error", self.spec.name)

    def stop(self) -> None:
        self.shutting_down = True
        self.finished.set()
        unbind(self.obj)
        context.set_client(None)


def _reason(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


def user_traceback(exc: BaseException) -> str:
    """The exception's traceback from the first frame outside Ether on (Ether's calling frames are noise)."""
    tb = exc.__traceback__
    while tb is not None and tb.tb_frame.f_code.co_filename.startswith(PACKAGE_DIR + os.sep):
        tb = tb.tb_next
    return "".join(traceback.format_exception(type(exc), exc, tb or exc.__traceback__))


def _meta_fault(exc: WireError) -> dict[str, Any]:
    """The sender and field an error event names for refused metadata (none for invalid JSON)."""
    return {"sender": exc.src, "field": exc.field} if isinstance(exc, MetaError) else {}


def _command_of(payload: Any) -> Any:
    return payload.get("command") if isinstance(payload, dict) else payload


def _supervisor_gone(runtime: InstanceRuntime, grace: float = 30.0) -> None:
    """Our lifeline to the supervisor was cut: it is gone, so save and stop."""
    if runtime.shutting_down:
        return
    log.warning("instance '%s': supervisor gone; saving and stopping", runtime.spec.name)
    for step in ("save_all", "cleanup", "shutdown"):
        runtime.jobs.put(functools.partial(runtime.lifecycle, step, None))
    if not runtime.finished.wait(grace):
        runtime.exit_code = exits.UNRESPONSIVE
        runtime.finished.set()


def host(spec: LaunchSpec) -> int:
    """Run one instance until told to shut down; returns the process exit code."""
    add_import_paths(spec.config_dir)
    for p in reversed(spec.sys_path):
        if p not in sys.path:
            sys.path.insert(0, p)
    topics = Topics(spec.session)
    lost = InstanceStatus(instance=spec.name, class_path=spec.class_path, state="dead", pid=os.getpid())
    bus = Bus(
        BrokerAddress(**spec.broker),
        client_id=f"ether-{spec.session}-{spec.name}",
        will=Will(topics.instance_status(spec.name), encode(lost.payload())),
    )
    try:
        bus.connect()
    except BrokerError as exc:
        log.error("instance '%s': %s", spec.name, exc)
        return exits.NO_BROKER
    logs = publish_logs(bus, topics.log(spec.name))
    terminal = sys.stdout
    sys.stdout = PrintedLines(terminal, logs)  # what user code prints is kept too

    runtime: InstanceRuntime | None = None
    try:
        cls = import_class(spec.class_path)
        for class_path, methods in spec.registry.items():
            apply_registry(import_class(class_path), methods)
        runtime = InstanceRuntime(spec, bus, cls)
        runtime.announce("starting")
        runtime.construct()
    except Exception as exc:
        reason = f"{type(exc).__name__}: {exc}"
        log.error(
            "instance '%s' (%s) failed to start: %s\n%s",
            spec.name,
            spec.class_path,
            reason,
            traceback.format_exc(),
        )
        failed = lost.model_copy(
            update={"state": "failed", "error": reason, "traceback": traceback.format_exc()}
        )
        bus.publish_and_wait(topics.instance_status(spec.name), encode(failed.payload()), retain=True)
        sys.stdout = terminal
        stop_publishing_logs(logs)
        bus.close()
        return exits.INIT_FAILED

    worker = threading.Thread(target=runtime.work, name="ether-worker", daemon=True)
    worker.start()
    on_lifeline_cut(lambda: _supervisor_gone(runtime))
    runtime.subscribe()
    give_back_free_heap()  # the start-up's garbage: an idle fork holds 0.2-0.4 MB less of its own
    runtime.announce("ready")
    runtime.finished.wait()
    runtime.report_suppressed()
    runtime.data.drain(runtime.drain_budget)  # our part of the drain barrier
    runtime.data.close()
    runtime.announce("stopped")
    runtime.jobs.put(None)
    runtime.stop()
    sys.stdout = terminal
    stop_publishing_logs(logs)
    bus.close()
    return runtime.exit_code


def main() -> None:
    setup_logging(whole_process=True)
    sys.stdout.reconfigure(line_buffering=True)  # type: ignore[union-attr]  # prints appear at once
    spec = read_spec()
    if spec is None:  # the supervisor ended before it sent our spec
        sys.exit(exits.INIT_FAILED)
    code = host(LaunchSpec(**spec))
    sys.stdout.flush()
    os._exit(code)  # do not wait for a user thread that never ends
