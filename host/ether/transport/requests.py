"""Request/reply over MQTT: a correlation id per request and one reply topic per client.

A request is a normal message whose ``_ether`` metadata names ``reply_to`` and ``corr``; the reply (an
``OkReply`` or ``ErrorReply`` of the contract, read with ``read_reply``) is sent to ``reply_to`` with the
same ``corr``. A reply that arrives after its request timed out is dropped, never handed to a later call.
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Callable
from typing import Any

from ether.contract.messages import ErrorReply, Message, OkReply
from ether.contract.topics import Topics
from ether.contract.wire import Meta, Stamper, WireError, decode, encode
from ether.transport.bus import Bus
from ether.transport.permissions import classify
from ether.transport.signing import sign

log = logging.getLogger("ether.requests")


class RequestTimeout(TimeoutError):
    """No reply arrived in time."""


class Pending:
    """A request in flight; :meth:`reply` waits for its answer."""

    def __init__(self, topic: str, forget: Callable[[], None]) -> None:
        self.topic = topic
        self._forget = forget
        self._done = threading.Event()
        self._reply: Any = None

    def _resolve(self, reply: Any) -> None:
        self._reply = reply
        self._done.set()

    def done(self) -> bool:
        return self._done.is_set()

    def abandon(self) -> None:
        """Stop waiting (the one asked is known to be gone): :meth:`reply` returns None."""
        self._forget()
        self._resolve(None)

    def reply(self, timeout: float) -> Any:
        if not self._done.wait(timeout):
            self._forget()  # a late reply will find nobody waiting
            raise RequestTimeout(f"no reply on {self.topic!r} within {timeout:g} s")
        return self._reply


class Requester:
    """Sends requests from one bus and routes replies back to the waiting caller."""

    def __init__(
        self,
        bus: Bus,
        topics: Topics,
        stamper: Stamper,
        parents: Callable[[], list[str] | None] | None = None,
    ) -> None:
        """``parents`` gives the ids of the message being handled, if any: a request made while
        handling a message names it as parent (a heater command traces back to the reading)."""
        self.bus, self.stamper, self.parents = bus, stamper, parents
        self.reply_topic = topics.replies(bus.client_id)
        self._in_flight: dict[str, Pending] = {}
        self._lock = threading.Lock()
        bus.subscribe(self.reply_topic, self._on_reply)

    def send(self, topic: str, payload: Message | Any) -> Pending:
        """Send a request (a command of the contract, or a service's arguments); wait with ``reply()``."""
        if isinstance(payload, Message):
            payload = payload.payload()
        corr = uuid.uuid4().hex
        pending = Pending(topic, lambda: self._forget(corr))
        with self._lock:
            self._in_flight[corr] = pending
        meta = self.stamper.control(self.parents() if self.parents else None)
        meta.reply_to, meta.corr = self.reply_topic, corr
        self.bus.publish(topic, sign(encode(payload, meta), self.stamper.key))  # it may go on a data topic
        return pending

    def request(self, topic: str, payload: Message | Any, timeout: float) -> Any:
        return self.send(topic, payload).reply(timeout)

    def _forget(self, corr: str) -> None:
        with self._lock:
            self._in_flight.pop(corr, None)

    def _on_reply(self, topic: str, raw: bytes) -> None:
        try:
            payload, meta = decode(raw)
        except WireError as exc:
            log.warning("ignoring a malformed reply on %s: %s", topic, exc)
            return
        corr = meta.corr if meta else None
        with self._lock:
            pending = self._in_flight.pop(corr, None) if corr else None
        if pending is None:
            log.debug("dropping a reply nobody waits for (corr=%s)", corr)
            return
        pending._resolve(payload)


def answer(bus: Bus, stamper: Stamper, request: Meta | None, reply: OkReply | ErrorReply) -> None:
    """Send ``reply`` to whoever asked (no-op for a request without ``reply_to``, or one whose
    ``reply_to`` is a system topic other than a reply topic: nobody makes us publish an ack or a command)."""
    if request is None or not request.reply_to:
        return
    where = classify(request.reply_to)
    if where is None or where[1] not in ("reply", "data"):
        return
    meta = stamper.control(parents=[request.id] if request.id else None)
    meta.corr = request.corr
    bus.publish(request.reply_to, encode(reply.payload(), meta))
