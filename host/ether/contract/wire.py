"""The message format: a plain JSON payload plus Ether's metadata in one reserved key (docs/topics.md).

An object payload carries the metadata beside its fields: ``{"data": 42, "_ether": {...}}``.
Any other payload (a number, a list, a string) is sent as ``{"root": <value>, "_ether": {...}}``.
On input the metadata is optional, so a foreign client may publish ``{"data": 42}`` or plain ``42``.
A payload holding numpy arrays or bytes travels in Ether's binary encoding instead (``arrays``).
"""

from __future__ import annotations

import itertools
import math
import os
import re
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import pydantic_core

from ether.contract import arrays
from ether.contract.topics import TopicError, check_publish_topic

META_KEY = "_ether"
ROOT_KEY = "root"

# -- limits of the ``_ether`` block (docs/topics.md#limits); a block outside them is refused whole ----
SEQ_LIMIT = 2**63  # 0 <= seq < 2**63: an SQLite INTEGER
T_LIMIT = 1e11  # 0 <= t < 1e11 seconds (the year 5138), a finite number
ID_LIMIT = 128  # characters of id, src, boot, corr and of each parent id
TOPIC_LIMIT = 1024  # characters of reply_to
PARENTS_LIMIT = 256  # ids in parents
SIG_LIMIT = 64  # characters of sig (a host source's signature: 32 or 59, transport/signing)
DEFAULT_MAX_PAYLOAD = 16 * 2**20  # bytes of one message (docs/topics.md#limits); raise it per session
_NOT_A_WORD = re.compile(r"[/+#\s\x00-\x1f\x7f]")  # src is a topic level (recorder/ack/<src>)


class WireError(ValueError):
    """A message that is not JSON, or whose ``_ether`` metadata is malformed."""


class MetaError(WireError):
    """An ``_ether`` block outside the limits: the message is foreign (``payload``, no metadata), and
    ``field`` and ``reason`` say why; ``src`` is the sender it claims, if that much was readable."""

    def __init__(self, field: str, reason: str, src: str | None = None) -> None:
        super().__init__(f"'{META_KEY}.{field}' {reason}" if field else f"'{META_KEY}' {reason}")
        self.field, self.reason, self.src = field, reason, src or None
        self.payload: Any = None


def _text(d: dict, key: str, limit: int, src: str | None) -> str:
    value = d.get(key)
    if value is None:
        return ""
    if type(value) is not str:
        raise MetaError(key, f"must be a string, got {type(value).__name__}", src)
    if len(value) > limit:
        raise MetaError(key, f"is {len(value)} characters long, at most {limit}", src)
    return value


def _number(d: dict, key: str, src: str) -> float:
    value = d.get(key)
    if value is None:
        return 0.0
    if type(value) not in (int, float) or not (0 <= value < T_LIMIT) or not math.isfinite(value):
        raise MetaError(key, f"must be a number of seconds from 0 to {T_LIMIT:g}, got {value!r:.40}", src)
    return float(value)


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
        """The metadata of a received message; MetaError if any field is outside the limits above
        (every field is optional: a foreign client may send only ``reply_to`` and ``corr``)."""
        if type(d) is not dict:
            raise MetaError("", f"must be an object, got {type(d).__name__}")
        get = d.get  # first the checks of a data message as Ether sends it, at once
        mid, src, boot, sig = get("id", ""), get("src", ""), get("boot", ""), get("sig", "")
        seq, t, parents = get("seq"), get("t"), get("parents")
        if (
            type(mid) is str
            and type(src) is str
            and type(boot) is str
            and type(sig) is str
            and max(len(mid), len(src), len(boot)) <= ID_LIMIT
            and len(sig) <= SIG_LIMIT
            and type(seq) is int
            and 0 <= seq < SEQ_LIMIT
            and type(t) is float
            and 0 <= t < T_LIMIT
            and type(parents) is list
            and len(parents) <= PARENTS_LIMIT
            and "reply_to" not in d
            and "corr" not in d
            and not _NOT_A_WORD.search(src)
            and (not parents or all(type(p) is str and len(p) <= ID_LIMIT for p in parents))
        ):
            return cls(mid, src, boot, seq, t, parents)
        return cls._checked(d)

    @classmethod
    def _checked(cls, d: dict) -> Meta:
        """Any other metadata, field by field: the first outside the limits raises MetaError."""
        src = _text(d, "src", ID_LIMIT, None)
        if _NOT_A_WORD.search(src):
            raise MetaError("src", f"{src!r} contains '/', '+', '#', a space or a control character")
        seq = d.get("seq")
        if seq is None:
            seq = -1  # not numbered
        elif type(seq) is not int or not 0 <= seq < SEQ_LIMIT:
            raise MetaError("seq", f"must be an integer from 0 to 2**63-1, got {seq!r:.40}", src)
        parents = d.get("parents") or []
        if type(parents) is not list or len(parents) > PARENTS_LIMIT:
            raise MetaError("parents", f"must be a list of at most {PARENTS_LIMIT} ids", src)
        if parents and any(type(p) is not str or len(p) > ID_LIMIT for p in parents):
            raise MetaError("parents", f"must hold ids (strings of at most {ID_LIMIT} characters)", src)
        reply_to = _text(d, "reply_to", TOPIC_LIMIT, src) or None
        if reply_to is not None:
            try:
                check_publish_topic(reply_to)
            except TopicError as exc:
                raise MetaError("reply_to", str(exc), src) from None
        corr = d.get("corr")
        _text(d, "sig", SIG_LIMIT, src)  # checked by the receiver against the raw bytes (transport/signing)
        return cls(
            id=_text(d, "id", ID_LIMIT, src),
            src=src,
            boot=_text(d, "boot", ID_LIMIT, src),
            seq=seq,
            t=_number(d, "t", src),
            parents=parents,
            reply_to=reply_to,
            corr=None if corr is None else _text(d, "corr", ID_LIMIT, src),
        )


class Stamper:
    """Issues metadata for one source: a fresh boot id per process start and a gap-free sequence."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.key: bytes | None = None  # what its messages are signed with (transport/signing), if any
        self.boot = os.urandom(6).hex()
        self._seq = 0
        self._lock = threading.Lock()
        self._control_seq = itertools.count(1)

    def stamp(self, parents: list[str] | None = None) -> Meta:
        """Metadata for a data message: the next number in this source's gap-free sequence."""
        with self._lock:
            self._seq += 1
            seq = self._seq
        return Meta(f"{self.boot}.{seq}", self.source, self.boot, seq, time.time(), list(parents or ()))

    def unstamp(self, meta: Meta) -> None:
        """Take back the number of a message that was not sent after all (if none was issued since)."""
        with self._lock:
            if meta.seq == self._seq:
                self._seq -= 1

    def control(self, parents: list[str] | None = None) -> Meta:
        """Metadata for a reply, status or error event: outside the data sequence (``seq`` 0)."""
        n = next(self._control_seq)
        return Meta(f"{self.boot}.c{n}", self.source, self.boot, 0, time.time(), list(parents or ()))


def encode(payload: Any, meta: Meta | None = None, seal: arrays.Seal | None = None) -> bytes:
    """Serialise a payload (object or any JSON value) with optional metadata; ``seal`` signs it
    (``transport/signing``), a frame before it is assembled."""
    if isinstance(payload, dict):
        body = dict(payload)
    else:
        body = {ROOT_KEY: payload}
    binary = arrays.holds_binary(body)  # before the metadata, which holds none
    if meta is not None:
        body[META_KEY] = meta.to_dict()
    try:
        if binary:
            return arrays.pack(body, seal)
        text = pydantic_core.to_json(body)
        return text if seal is None else seal(text, ())
    except arrays.ArrayError as exc:
        raise WireError(str(exc)) from None
    except pydantic_core.PydanticSerializationError as exc:
        raise WireError(f"payload is not JSON-serialisable: {exc}") from exc


def decode(raw: bytes | bytearray | str) -> tuple[Any, Meta | None]:
    """Parse a message into (payload, metadata or None). Object payloads lose the ``_ether`` key.
    Metadata outside the limits raises MetaError, which carries the payload (a foreign message)."""
    try:
        if not isinstance(raw, str) and raw[:4] == arrays.MAGIC:
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
    try:
        meta = Meta.from_dict(body.pop(META_KEY))
    except MetaError as exc:
        exc.payload = body
        raise
    return body, meta


def decode_object(raw: bytes | bytearray | str) -> dict | None:
    """The payload of a status, report or command message; None if it is not a JSON object."""
    try:
        payload, _ = decode(raw)
    except WireError:
        return None
    return payload if isinstance(payload, dict) else None
