"""Calling ``@ether_get`` / ``@ether_save`` services: ``ether.get``, ``ether.save``, ``ether.request``.

A service is named ``ClassName.method`` and served by every ready instance of that class; a call goes
to one of them (round robin), or to the instance it names. Errors are typed, never ``None``.
"""

from __future__ import annotations

from typing import Any

from ether.contract.messages import ErrorKind, read_reply
from ether.contract.topics import Topics
from ether.runtime.registry import LiveRegistry
from ether.transport.requests import Requester, RequestTimeout


class ServiceError(RuntimeError):
    """A service call failed; ``kind`` says how (see the subclasses)."""

    kind = "error"


class UnknownService(ServiceError, LookupError):
    """No ready instance serves this service (raised at once, not after a timeout)."""

    kind = "unknown_service"


class InvalidArguments(ServiceError, ValueError):
    """The parameters do not fit the method's signature (the message names the fields)."""

    kind: ErrorKind = "validation"


class NotFound(ServiceError, KeyError):
    """The service looked for an item that is not there (the method raised KeyError/LookupError)."""

    kind: ErrorKind = "not_found"

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class ServiceFailed(ServiceError):
    """The method raised an exception."""

    kind: ErrorKind = "exception"


class ServiceTimeout(ServiceError, TimeoutError):
    """No reply in time."""

    kind = "timeout"


ERRORS = {
    cls.kind: cls for cls in (UnknownService, InvalidArguments, NotFound, ServiceFailed, ServiceTimeout)
}


def service_name(target: type | str, method: str | None = None) -> str:
    """``(DataStore, "get_value")`` or ``"DataStore.get_value"`` -> ``"DataStore.get_value"``."""
    name = target if isinstance(target, str) else target.__name__
    return f"{name}.{method}" if method else name


class ServiceClient:
    """Makes service calls for one process (a script, the CLI, or an instance calling another)."""

    def __init__(self, requester: Requester, registry: LiveRegistry, topics: Topics) -> None:
        self.requester, self.registry, self.topics = requester, registry, topics

    def call(self, service: str, params: dict[str, Any] | None, instance: str | None, timeout: float) -> Any:
        """Return the result, or raise the ServiceError subclass that says what went wrong."""
        servers = self.registry.servers(service)
        if instance is not None and instance not in servers:
            known = ", ".join(servers) or "none"
            raise UnknownService(f"instance '{instance}' does not serve '{service}' (served by: {known})")
        target = instance or self.registry.pick(service)
        if target is None:
            raise UnknownService(f"no ready instance serves '{service}'")
        topic = self.topics.instance_call(target, service)
        try:
            reply = read_reply(self.requester.request(topic, params or {}, timeout))
        except RequestTimeout:
            raise ServiceTimeout(
                f"'{service}' on instance '{target}' did not reply within {timeout:g} s"
            ) from None
        if reply.ok:
            return reply.result
        raise ERRORS.get(reply.error.kind, ServiceError)(f"'{service}' on '{target}': {reply.error.message}")

    def save(self, service: str, params: dict[str, Any] | None, instance: str | None, timeout: float) -> dict:
        """The original envelope: ``{"status": "success", "result": ...}`` or ``{"status": "error", ...}``."""
        try:
            return {"status": "success", "result": self.call(service, params, instance, timeout)}
        except ServiceError as exc:
            return {"status": "error", "error": str(exc), "kind": exc.kind}
