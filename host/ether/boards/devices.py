"""Devices: the host's view of ``ether_lite`` boards (schema, state, last seen) and proxies that call them.

A board announces a retained schema and a retained state (Last Will ``lost``) under
``ether/<session>/device/<name>/`` (docs/devices.md). ``ether.devices["thermo1"].set_heater(on=True)``
checks the arguments against that schema before anything is sent, then waits for the board's reply.
"""

from __future__ import annotations

import difflib
import threading
import time
import weakref
from dataclasses import dataclass, field
from typing import Any

from ether.contract.messages import DeviceCall, DeviceSchema, DeviceState, read_reply
from ether.contract.topics import Topics
from ether.contract.wire import WireError, decode, decode_object
from ether.runtime import context
from ether.runtime.services import InvalidArguments, ServiceFailed, ServiceTimeout, UnknownService
from ether.transport.bus import Bus
from ether.transport.requests import Requester, RequestTimeout
from ether.transport.waiting import wait_until

DEFAULT_TIMEOUT = 5.0


@dataclass
class Device:
    """One board as last heard: its state message, its schema, and when it last said anything."""

    name: str
    state: str = "unknown"  # online, offline (clean stop), lost (Last Will), unknown (schema only)
    boot: str | None = None
    dropped: int = 0
    schema: dict[str, Any] = field(default_factory=dict)
    last_seen: float | None = None  # host clock: the board's latest reading, or its online state
    clock_offset: float | None = None  # host clock minus the board's clock, from its latest reading

    @property
    def methods(self) -> dict[str, dict[str, Any]]:
        methods = self.schema.get("methods")
        return methods if isinstance(methods, dict) else {}

    def info(self) -> dict[str, Any]:
        """What ``ether.get_active_devices()`` shows for this board."""
        return {
            "device": self.name,
            "state": self.state,
            "boot": self.boot,
            "dropped": self.dropped,
            "last_seen": self.last_seen,
            "clock_offset": self.clock_offset,
            "firmware": self.schema.get("firmware"),
            "lib_version": self.schema.get("lib_version"),
            "implementation": self.schema.get("implementation"),
            "methods": self.methods,
        }


class DeviceView:
    """Follows the boards of one session over one bus, and calls their methods."""

    def __init__(self, bus: Bus, topics: Topics, requester: Requester) -> None:
        self.bus, self.topics, self.requester = bus, topics, requester
        self.devices: dict[str, Device] = {}
        self.changed = threading.Condition()
        self._followed: set[str] = set()
        bus.subscribe(topics.device_schema_all(), self._on_schema)
        bus.subscribe(topics.device_state_all(), self._on_state)
        # Brokers send a subscription's retained messages before they acknowledge the next subscription
        # on the same connection, so once this one is acknowledged every retained schema and state is here.
        bus.subscribe(f"{topics.replies(bus.client_id)}/devices-known", lambda topic, raw: None)

    # -- what the boards say (network thread) ---------------------------------------------------

    def _device(self, topic: str) -> Device:
        where = self.topics.parse(topic)  # always parses: the subscription is the layout's own wildcard
        assert where is not None, topic
        return self.devices.setdefault(where.name, Device(where.name))

    def _on_schema(self, topic: str, raw: bytes) -> None:
        schema = decode_object(raw)
        if schema is None or DeviceSchema.read(schema) is None:  # not a schema of the contract
            return
        with self.changed:
            device = self._device(topic)
            device.schema = schema
            device.boot = schema.get("boot", device.boot)
            self.changed.notify_all()
        for method, spec in device.methods.items():
            if isinstance(spec, dict) and spec.get("kind") == "sensor":
                self._follow(device.name, self.topics.device_method(device.name, method))

    def _follow(self, name: str, topic: str) -> None:
        """Listen to a sensor's readings: they say the board is alive and how far its clock is off."""
        if topic in self._followed:
            return
        self._followed.add(topic)
        self.bus.subscribe(topic, lambda t, raw: self._on_reading(name, raw), timeout=None)

    def _on_reading(self, name: str, raw: bytes) -> None:
        try:
            _, meta = decode(raw)
        except WireError:
            return
        now = time.time()
        with self.changed:
            device = self.devices[name]
            device.last_seen = now
            if meta is not None and meta.src == name and meta.t:
                device.clock_offset = now - meta.t
            self.changed.notify_all()

    def _on_state(self, topic: str, raw: bytes) -> None:
        state = decode_object(raw)
        if state is None or DeviceState.read(state) is None:  # not a state of the contract
            return
        with self.changed:
            device = self._device(topic)
            device.state = str(state.get("state", "unknown"))
            device.boot = state.get("boot", device.boot)
            device.dropped = int(state.get("dropped", device.dropped) or 0)
            if device.state == "online":  # connected now (a retained offline or lost state may be old)
                device.last_seen = time.time()
            self.changed.notify_all()

    # -- looking up --------------------------------------------------------------------------------

    def get(self, name: str) -> Device:
        """The board called ``name``; UnknownService names the boards there are."""
        with self.changed:
            device = self.devices.get(name)
            if device is not None:
                return device
            known = sorted(self.devices)
        hint = _did_you_mean(name, known)
        raise UnknownService(
            f"no device '{name}' in session '{self.topics.session}'"
            f" (known: {', '.join(known) or 'none'}{hint})"
        )

    def active(self) -> dict[str, dict[str, Any]]:
        with self.changed:
            return {n: d.info() for n, d in sorted(self.devices.items()) if d.state == "online"}

    def wait_online(self, name: str, timeout: float) -> Device:
        """Wait for a board to be online (a script that starts before its boards)."""
        if not wait_until(self.changed, lambda: self._online(name), timeout):
            device = self.devices.get(name)
            state = f"it is {device.state}" if device else "it never announced itself"
            raise ServiceTimeout(f"device '{name}' was not online within {timeout:g} s ({state})")
        return self.devices[name]

    def _online(self, name: str) -> bool:
        device = self.devices.get(name)
        return device is not None and device.state == "online" and bool(device.schema)

    # -- calling -----------------------------------------------------------------------------------

    def call(self, name: str, method: str, args: dict[str, Any], timeout: float) -> Any:
        """Check the arguments against the board's schema, send, and return the board's result.

        Raises UnknownService (no such board or method, or the board is not online), InvalidArguments
        (before sending), ServiceFailed (the board answered with an error) or ServiceTimeout.
        """
        device = self.get(name)
        with self.changed:
            state, methods = device.state, dict(device.methods)
            last_seen = device.last_seen
        spec = methods.get(method)
        if spec is None:
            hint = _did_you_mean(method, list(methods))
            raise UnknownService(
                f"device '{name}' has no method '{method}' (has: {', '.join(sorted(methods)) or 'none'}{hint})"
            )
        if state != "online":
            raise UnknownService(f"device '{name}' is {state}{_ago(last_seen)}: cannot call '{method}'")
        args = check_arguments(name, method, spec, args)
        body: Any
        if spec.get("kind") == "actuator":  # on its own topic, so the command is recorded like data
            topic, body = self.topics.device_method(name, method), args
        else:  # a sensor: read now; the board also publishes the reading on its topic
            topic, body = self.topics.device_call(name), DeviceCall(method=method, args=args)
        try:
            reply = read_reply(self.requester.request(topic, body, timeout))
        except RequestTimeout:
            raise ServiceTimeout(
                f"device '{name}' did not answer '{method}' within {timeout:g} s"
                f" (state {device.state}{_ago(device.last_seen)})"
            ) from None
        if reply.ok:
            return reply.result
        raise ServiceFailed(f"device '{name}' method '{method}': {reply.error.message}")


def check_arguments(device: str, method: str, spec: dict[str, Any], args: dict[str, Any]) -> dict[str, Any]:
    """The arguments as the board will check them (docs/devices.md), checked here so nothing bad is sent."""
    declared: dict[str, str] = spec.get("args") or {}
    optional = set(spec.get("optional") or ())
    problems = [
        f"unknown argument '{n}' (declared: {', '.join(declared) or 'none'})"
        for n in args
        if n not in declared
    ]
    for name, type_name in declared.items():
        if name not in args:
            if name not in optional:
                problems.append(f"missing argument '{name}' ({type_name})")
        elif not _fits(type_name, args[name]):
            value = args[name]
            problems.append(f"argument '{name}': expected {type_name}, got {_json_type(value)} {value!r}")
    if problems:
        raise InvalidArguments(f"device '{device}' method '{method}': {'; '.join(problems)}")
    return args


def _fits(type_name: str, value: Any) -> bool:
    is_bool = isinstance(value, bool)
    if type_name == "bool":
        return is_bool
    if type_name == "int":
        return isinstance(value, int) and not is_bool
    if type_name == "float":
        return isinstance(value, (int, float)) and not is_bool
    if type_name == "str":
        return isinstance(value, str)
    return True  # "any", or a type this host does not know: the board checks it


def _json_type(value: Any) -> str:
    return {bool: "bool", int: "int", float: "float", str: "str", list: "list", dict: "object"}.get(
        type(value), type(value).__name__
    )


def _did_you_mean(name: str, known: list[str]) -> str:
    close = difflib.get_close_matches(name, known, n=1)
    return f"; did you mean '{close[0]}'?" if close else ""


def _ago(t: float | None) -> str:
    return f", last seen {time.time() - t:.1f} s ago" if t else ""


def _signature(spec: dict[str, Any]) -> str:
    args = ", ".join(f"{n}: {t}" for n, t in (spec.get("args") or {}).items())
    return f"({args})"


class DeviceProxy:
    """One board: its methods are attributes, ``proxy.set_heater(on=True)``, checked against its schema.

    The schema is read at each call, so a board that was reflashed is called as it is now.
    """

    def __init__(self, view: DeviceView, name: str) -> None:
        self._view, self.name = view, name

    def call(self, method: str, args: dict[str, Any] | None = None, timeout: float = DEFAULT_TIMEOUT) -> Any:
        """Call ``method`` with ``args``; return the board's result (a sensor's reading is also published)."""
        return self._view.call(self.name, method, dict(args or {}), timeout)

    def __getattr__(self, method: str) -> Any:
        if method.startswith("_"):
            raise AttributeError(method)

        def call(*positional: Any, **args: Any) -> Any:
            if positional:
                spec = self._view.get(self.name).methods.get(method) or {}
                declared = list(spec.get("args") or {})
                if len(positional) > 1 or len(declared) != 1 or args:
                    raise InvalidArguments(
                        f"device '{self.name}' method '{method}': give arguments by name, "
                        f"{method}{_signature(spec)}"
                    )
                args = {declared[0]: positional[0]}
            return self.call(method, args)

        call.__name__ = method
        return call

    def __dir__(self) -> list[str]:
        return sorted(set(super().__dir__()) | set(self.methods))

    @property
    def device(self) -> Device:
        return self._view.get(self.name)

    @property
    def state(self) -> str:
        return self.device.state

    @property
    def schema(self) -> dict[str, Any]:
        return self.device.schema

    @property
    def methods(self) -> dict[str, dict[str, Any]]:
        return self.device.methods

    @property
    def last_seen(self) -> float | None:
        return self.device.last_seen

    def __repr__(self) -> str:
        device = self._view.devices.get(self.name)
        if device is None:
            return f"<device {self.name}: unknown>"
        methods = ", ".join(f"{m}{_signature(s)}" for m, s in sorted(device.methods.items()))
        return f"<device {self.name} {device.state}: {methods}>"


# -- ether.devices -----------------------------------------------------------------------------------

_views: weakref.WeakKeyDictionary[Any, DeviceView] = weakref.WeakKeyDictionary()
_views_lock = threading.Lock()


def view_of(client: context.Client) -> DeviceView:
    """The device view of a session client (a tapped script or an instance), made on first use."""
    with _views_lock:
        view = _views.get(client)
        if view is None:
            requester = client.services.requester
            view = _views[client] = DeviceView(requester.bus, client.services.topics, requester)
        return view


class Devices:
    """``ether.devices``: the boards of the session this process is part of, by name."""

    def _view(self) -> DeviceView:
        return view_of(context.current())

    def __getitem__(self, name: str) -> DeviceProxy:
        self._view().get(name)  # unknown: UnknownService, naming the boards there are
        return DeviceProxy(self._view(), name)

    def __contains__(self, name: object) -> bool:
        return name in self._view().devices

    def __iter__(self):
        return iter(sorted(self._view().devices))

    def __len__(self) -> int:
        return len(self._view().devices)

    def wait(self, name: str, timeout: float = 10.0) -> DeviceProxy:
        """The board ``name`` once it is online (ServiceTimeout if it is not within ``timeout``)."""
        self._view().wait_online(name, timeout)
        return DeviceProxy(self._view(), name)

    def active(self) -> dict[str, dict[str, Any]]:
        """Online boards by name: state, boot, last seen, clock offset, firmware, methods."""
        return self._view().active()

    def __repr__(self) -> str:
        try:
            return f"<ether.devices: {', '.join(self) or 'none'}>"
        except RuntimeError:
            return "<ether.devices: no session>"
