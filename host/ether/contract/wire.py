"""The message format: a plain JSON payload plus Ether's metadata in one reserved key (docs/topics.md).

An object payload carries the metadata beside its fields: ``{"data": 42, "_ether": {...}}``.
Any other payload (a number, a list, a string) is sent as ``{"root": <value>, "_ether": {...}}``.
On input the metadata is optional, so a foreign client may publish ``{"data": 42}`` or plain ``42``.
A payload holding numpy arrays or bytes travels in Ether's binary encoding instead (``arrays``).
"""

from __future__ import annotations

import itertools
import os
import time
from dataclasses import dataclass, field
from typing import Any

import pydantic_core

from ether.contract import arrays

META_KEY = "_ether"
ROOT_KEY = "root"


class WireError(ValueError):
    """A message that is not JSON, or whose ``_ether`` metadata is malformed."""


@dataclass
class Meta:
    """Provenance of one message: who sent it, which boot, which sequence number, and what caused it."""

    id: str
    src: str
    boot: str
    seq: int
    t: float
    parents: list[str] = field(default_factory=list)
    reply_to: str | None = None
    corr: str | None = None

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "id": self.id,
            "src": self.src,
            "boot": self.boot,
            "seq": self.seq,
            "t": self.t,
            "parents": self.parents,
        }
        if self.reply_to is not None:
            d["reply_to"] = self.reply_to
        if self.corr is not None:
            d["corr"] = self.corr
        return d

    @classmethod
    def from_dict(cls, d: Any) -> Meta:
        if not isinstance(d, dict):
            raise WireError(f"'{META_KEY}' must be an object, got {type(d).__name__}")
        try:
            return cls(
                id=str(d.get("id", "")),
                src=str(d.get("src", "")),
                boot=str(d.get("boot", "")),
                seq=int(d.get("seq", -1)),
                t=float(d.get("t", 0.0)),
                parents=[str(p) for p in d.get("parents", [])],
                reply_to=d.get("reply_to"),
                corr=d.get("corr"),
            )
        except (TypeError, ValueError) as exc:
            raise WireError(f"'{META_KEY}' metadata is malformed: {exc}") from exc


class Stamper:
    """Issues metadata for one source: a fresh boot id per process start and a gap-free sequence."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.boot = os.urandom(6).hex()
        self._seq = itertools.count(1)
        self._control_seq = itertools.count(1)

    def stamp(self, parents: list[str] | None = None) -> Meta:
        """Metadata for a data message: the next number in this source's gap-free sequence."""
        seq = next(self._seq)
        return Meta(f"{self.boot}.{seq}", self.source, self.boot, seq, time.time(), list(parents or ()))

    def control(self, parents: list[str] | None = None) -> Meta:
        """Metadata for a reply, status or error event: outside the data sequence (``seq`` 0)."""
        n = next(self._control_seq)
        return Meta(f"{self.boot}.c{n}", self.source, self.boot, 0, time.time(), list(parents or ()))


def encode(payload: Any, meta: Meta | None = None) -> bytes:
    """Serialise a payload (object or any JSON value) with optional metadata."""
    if isinstance(payload, dict):
        body = dict(payload)
    else:
        body = {ROOT_KEY: payload}
    if meta is not None:
        body[META_KEY] = meta.to_dict()
    try:
        if arrays.holds_binary(body):
            return arrays.pack(body)
        return pydantic_core.to_json(body)
    except arrays.ArrayError as exc:
        raise WireError(str(exc)) from None
    except pydantic_core.PydanticSerializationError as exc:
        raise WireError(f"payload is not JSON-serialisable: {exc}") from exc


def decode(raw: bytes | bytearray | str) -> tuple[Any, Meta | None]:
    """Parse a message into (payload, metadata or None). Object payloads lose the ``_ether`` key."""
    try:
        if not isinstance(raw, str) and arrays.is_frame(raw):
            body = arrays.unpack(raw)
        else:
            body = pydantic_core.from_json(raw)
    except arrays.ArrayError as exc:
        raise WireError(str(exc)) from None
    except ValueError as exc:
        preview = bytes(raw[:60]) if not isinstance(raw, str) else raw[:60].encode()
        raise WireError(f"invalid JSON ({exc}); message starts with {preview!r}") from exc
    if not isinstance(body, dict) or META_KEY not in body:
        return body, None
    meta = Meta.from_dict(body.pop(META_KEY))
    return body, meta


def decode_object(raw: bytes | bytearray | str) -> dict | None:
    """The payload of a status, report or command message; None if it is not a JSON object."""
    try:
        payload, _ = decode(raw)
    except WireError:
        return None
    return payload if isinstance(payload, dict) else None
