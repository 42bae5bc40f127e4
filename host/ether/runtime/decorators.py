"""Decorators that mark methods for Ether. They attach metadata and never change what a direct call does.

The one behaviour they add: inside a running instance, calling an ``@ether_pub`` method also
publishes its return value (the runtime binds the object with :func:`bind`). Outside, the call
only returns its value.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from ether.contract.topics import check_publish_topic, check_subscribe_filter, default_topic

ATTRIBUTE = "__ether__"


@dataclass(frozen=True)
class PubSpec:
    topic: str
    interval: float | None = None


@dataclass(frozen=True)
class SubSpec:
    topic: str


@dataclass(frozen=True)
class ServiceSpec:
    """``@ether_get`` / ``@ether_save``: a request/reply service named ``ClassName.method``."""

    kind: str  # "get" | "save"
    name: str


@dataclass(frozen=True)
class EtherSpec:
    """Everything Ether knows about one method."""

    pub: PubSpec | None = None
    sub: SubSpec | None = None
    lifecycle: frozenset[str] = field(default_factory=frozenset)
    service: ServiceSpec | None = None


def spec_of(func: Any) -> EtherSpec | None:
    return getattr(func, ATTRIBUTE, None)


# -- binding to a running instance ---------------------------------------------------------------

PublishReturn = Callable[[Callable[..., Any], Any], None]
_bound: dict[int, PublishReturn] = {}


def bind(obj: object, publish_return: PublishReturn) -> None:
    """Make ``@ether_pub`` calls on ``obj`` publish through ``publish_return(method, value)``."""
    _bound[id(obj)] = publish_return


def unbind(obj: object) -> None:
    _bound.pop(id(obj), None)


# -- helpers --------------------------------------------------------------------------------------


def _flexible(make: Callable[..., Callable[[Callable], Callable]]) -> Callable:
    """Allow ``@deco``, ``@deco()`` and ``@deco(topic=...)`` alike."""

    @functools.wraps(make)
    def decorator(func: Callable | None = None, /, **options: Any) -> Any:
        if func is not None and callable(func):
            return make(**options)(func)
        if func is not None:
            raise TypeError(f"@{make.__name__} takes keyword arguments only, e.g. topic='data'")
        return make(**options)

    return decorator


def _with_spec(func: Callable, **changes: Any) -> Callable:
    setattr(func, ATTRIBUTE, replace(spec_of(func) or EtherSpec(), **changes))
    return func


def _topic_for(func: Callable, topic: str | None, subtopic: str | None) -> str:
    if topic and subtopic:
        raise TypeError(f"{func.__qualname__}: give either topic= or subtopic=, not both")
    if topic:
        return topic
    name = default_topic(func.__qualname__)
    if subtopic:
        return f"{name.split('.')[0]}.{subtopic}"
    return name


# -- the decorators -------------------------------------------------------------------------------


@_flexible
def ether_pub(topic: str | None = None, subtopic: str | None = None, interval: float | None = None):
    """Publish the method's return value to ``topic`` (default ``ClassName.method``).

    ``interval`` (seconds) makes the runtime call the method on that period, like a sensor.
    """

    def decorate(func: Callable) -> Callable:
        existing = spec_of(func)
        spec = PubSpec(check_publish_topic(_topic_for(func, topic, subtopic)), interval)
        if interval is not None and interval <= 0:
            raise ValueError(f"{func.__qualname__}: interval must be > 0 seconds, got {interval}")
        if existing and existing.pub:
            if existing.pub == spec:
                return func  # applying the same decoration twice is harmless (registry idempotence)
            raise TypeError(f"{func.__qualname__} already publishes to {existing.pub.topic!r}")

        @functools.wraps(func)
        def published(self: Any, *args: Any, **kwargs: Any) -> Any:
            result = func(self, *args, **kwargs)
            publish_return = _bound.get(id(self))
            if publish_return is not None:
                publish_return(published, result)
            return result

        setattr(published, ATTRIBUTE, replace(existing or EtherSpec(), pub=spec))
        return published

    return decorate


@_flexible
def ether_sub(topic: str | None = None, subtopic: str | None = None):
    """Call the method with each message on ``topic`` (default ``ClassName.method``), fields as kwargs."""

    def decorate(func: Callable) -> Callable:
        spec = SubSpec(check_subscribe_filter(_topic_for(func, topic, subtopic)))
        existing = spec_of(func)
        if existing and existing.sub and existing.sub != spec:
            raise TypeError(f"{func.__qualname__} already subscribes to {existing.sub.topic!r}")
        return _with_spec(func, sub=spec)

    return decorate


def _lifecycle(event: str) -> Callable:
    def make() -> Callable[[Callable], Callable]:
        def decorate(func: Callable) -> Callable:
            current = spec_of(func) or EtherSpec()
            return _with_spec(func, lifecycle=current.lifecycle | {event})

        return decorate

    make.__name__ = f"ether_{event}"
    make.__doc__ = f"Call the method (without arguments) at the session's '{event}' step."
    return _flexible(make)


ether_init = _lifecycle("init")
ether_start = _lifecycle("start")
ether_save_all = _lifecycle("save_all")
ether_cleanup = _lifecycle("cleanup")
ether_shutdown = _lifecycle("shutdown")


def _service(kind: str) -> Callable:
    def make(name: str | None = None, heartbeat: bool = False) -> Callable[[Callable], Callable]:
        def decorate(func: Callable) -> Callable:
            return _with_spec(func, service=ServiceSpec(kind, name or default_topic(func.__qualname__)))

        return decorate

    make.__name__ = f"ether_{kind}"
    make.__doc__ = (
        f"Serve the method as the request/reply service ``ClassName.method`` ({kind}). ``heartbeat`` is the"
        " original Ether's ZMQ worker option, accepted and unused: liveness is always on (retained status, Last Will)."
    )
    return _flexible(make)


ether_get = _service("get")
ether_save = _service("save")

DECORATORS: dict[str, Callable] = {
    "ether_pub": ether_pub,
    "ether_sub": ether_sub,
    "ether_init": ether_init,
    "ether_start": ether_start,
    "ether_save_all": ether_save_all,
    "ether_cleanup": ether_cleanup,
    "ether_shutdown": ether_shutdown,
    "ether_get": ether_get,
    "ether_save": ether_save,
}


def apply_registry(cls: type, methods: dict[str, dict[str, dict[str, Any]]]) -> type:
    """Decorate a class the user cannot edit, from YAML ``registry:`` (applying it twice changes nothing)."""
    for method_name, decorators in methods.items():
        func = getattr(cls, method_name)
        for name, options in decorators.items():
            func = DECORATORS[name](**(options or {}))(func)
        setattr(cls, method_name, func)
    return cls
