"""A broker's secret and what is derived from it: each client's password and each source's signing
key; the signature that lets the recorder believe a message's ``src``.

MQTT 3.1.1 does not tell a subscriber who sent a message, and a broker's ACL cannot tie the ``src``
inside a payload to a login. So every host source signs what it publishes, keyed per session and
source from the broker's secret. The recorder and the instances hold the secret (they run as the user
who owns it), so they can check any source, also one launched after they started. This works the same
on any broker (embedded, Mosquitto, EMQX).

The signature is the last member of ``_ether``, written as bytes after the message was encoded, so
checking it needs no re-encoding. Two schemes, told apart by the value (docs/operations.md):

- ``"<32 hex>"`` (scheme 1): HMAC-SHA256, first 128 bits, of the JSON message, or of a frame's header
  and data section. A JSON message is signed so; a frame signed so (by an older Ether) still verifies.
- ``"2.<24 hex nonce>.<32 hex tag>"`` (scheme 2, frames): a Poly1305 tag of the data section under a
  one-time key, HMAC-SHA256(source key, ``ether.frame.2``, nonce, header): the HMAC covers the header,
  the random nonce makes each key one message's, so Poly1305 (~7x faster than SHA-256) covers the data.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
from collections.abc import Sequence
from typing import Any

from ether.contract import arrays

SECRET_BYTES = 32
_SIG_START = b',"sig":"'
_SIG_MAX = len(_SIG_START) + 64 + len(b'"}}')  # the tail a sig can take (wire.SIG_LIMIT characters)
_FRAME = b"2."  # scheme 2's prefix: "2.<nonce>.<tag>"
_NONCE_HEX = 24  # 96 random bits: a one-time key is never derived twice
_DERIVE = b"ether.frame.2\0"


def new_secret() -> bytes:
    import secrets

    return secrets.token_bytes(SECRET_BYTES)


def _derive(secret: bytes, *parts: str) -> bytes:
    return hmac.new(secret, "\0".join(parts).encode(), hashlib.sha256).digest()


def password(secret: bytes, username: str) -> str:
    """The password of a derived login (``permissions.Login``): only a holder of the secret knows it."""
    return base64.urlsafe_b64encode(_derive(secret, "login", username)).decode()[:32]


def source_key(secret: bytes, session: str, source: str) -> bytes:
    """The key with which ``source`` of ``session`` signs its messages."""
    return _derive(secret, "sign", session, source)


_KEYED: dict[bytes, tuple[Any, Any]] = {}  # key -> SHA-256 states of its inner and outer HMAC pads


def _hmac(key: bytes, *chunks: bytes | memoryview) -> bytes:
    """HMAC-SHA256 of the concatenated ``chunks`` without a copy (RFC 2104), from the pads' hash
    states keyed once per source and copied per message -- a third of the cost of copying an
    ``hmac.HMAC`` (``bench/signing.py``)."""
    pads = _KEYED.get(key)
    if pads is None:
        if len(_KEYED) > 10_000:  # keys of claimed sources are derived from hostile input: bounded
            _KEYED.clear()
        block = (hashlib.sha256(key).digest() if len(key) > 64 else key).ljust(64, b"\0")
        pads = _KEYED[key] = (
            hashlib.sha256(bytes(b ^ 0x36 for b in block)),
            hashlib.sha256(bytes(b ^ 0x5C for b in block)),
        )
    inner, outer = pads[0].copy(), pads[1].copy()
    for chunk in chunks:
        inner.update(chunk)
    outer.update(inner.digest())
    return outer.digest()


def _mac(key: bytes, *chunks: bytes | memoryview) -> bytes:
    """Scheme 1: the first 128 bits of the HMAC, as 32 hex digits."""
    return _hmac(key, *chunks)[:16].hex().encode()


_poly1305: Any = None  # cryptography's Poly1305, imported on the first frame


def _frame_mac(key: bytes, nonce: bytes, header: bytes, data: Sequence[bytes | memoryview]) -> bytes:
    """Scheme 2: ``2.<nonce>.<tag>``, the Poly1305 tag of the data section under the one-time key
    that the header and the nonce derive (the header as signed: without its sig)."""
    global _poly1305
    if _poly1305 is None:
        from cryptography.hazmat.primitives.poly1305 import Poly1305

        _poly1305 = Poly1305
    mac = _poly1305(_hmac(key, _DERIVE, nonce, b"\0", header))
    for chunk in data:
        mac.update(chunk)
    return _FRAME + nonce + b"." + mac.finalize().hex().encode()


def seal(text: bytes, data: Sequence[bytes | memoryview], key: bytes | None) -> bytes:
    """An encoded message (or a frame's header, before the frame is assembled), whose ``_ether``
    member is its last, with its signature added; ``data``: a frame's data section (its parts),
    which the signature covers too (scheme 2)."""
    if key is None or not text.endswith(b"}}"):
        return text
    if data:
        sig = _frame_mac(key, os.urandom(_NONCE_HEX // 2).hex().encode(), text, data)
    else:
        sig = _mac(key, text)
    return text[:-2] + _SIG_START + sig + b'"}}'


def sign(body: bytes, key: bytes | None) -> bytes:
    """``body`` (an encoded message whose ``_ether`` member is its last) with its signature added. In
    a binary frame the signature goes into the header and covers the header and the data section
    (the frame is assembled again: ``wire.encode(..., seal=...)`` signs before assembling)."""
    if key is None:
        return body
    if arrays.is_frame(body):
        header, data = arrays.sections(body)
        return arrays.assemble(seal(bytes(header), [data], key), [data])
    return seal(body, (), key)


def signed_by(raw: bytes, key: bytes) -> bool:
    """Whether ``raw`` carries a valid signature made with ``key``: scheme 2 or 1 on a frame,
    scheme 1 on a JSON message."""
    if arrays.is_frame(raw):
        try:
            header, data = arrays.sections(raw)
        except arrays.ArrayError:
            return False
        unsigned = _unsigned(bytes(header))
        if unsigned is None:
            return False
        text, sig = unsigned
        if sig[:2] == _FRAME:
            nonce = sig[2 : 2 + _NONCE_HEX]
            return hmac.compare_digest(sig, _frame_mac(key, nonce, text, [data]))
        return hmac.compare_digest(sig, _mac(key, text, data))
    unsigned = _unsigned(raw.rstrip())
    return unsigned is not None and hmac.compare_digest(unsigned[1], _mac(key, unsigned[0]))


def _unsigned(raw: bytes) -> tuple[bytes, bytes] | None:
    """(the message as it was signed, its signature), or None if it carries no signature."""
    start = raw.rfind(_SIG_START, max(0, len(raw) - _SIG_MAX))
    if start < 0 or not raw.endswith(b'"}}'):
        return None
    return raw[:start] + b"}}", raw[start + len(_SIG_START) : -3]


class Verifier:
    """Checks the sources of one session's messages (the recorder's), caching each source's key."""

    def __init__(self, secret: bytes, session: str) -> None:
        self.secret, self.session = secret, session
        self._keys: dict[str, bytes] = {}

    def verify(self, raw: bytes, source: str) -> bool:
        key = self._keys.get(source)
        if key is None:
            if len(self._keys) > 10_000:  # claimed names are hostile input: bounded
                self._keys.clear()
            key = self._keys[source] = source_key(self.secret, self.session, source)
        return signed_by(bytes(raw), key)


class Sources:
    """Which claimed ``src`` a receiver believes: a host source by its signature; a board by its
    name (boards do not sign: the broker guards their device topics), unless a host source has that
    name. ``boards``: only names that announced a device schema are boards (the recorder sees them
    all); without, any name that is not an instance's. Without a secret (a process started by hand)
    every claim is believed."""

    def __init__(self, secret: bytes | None, session: str, boards: bool = True) -> None:
        self.verifier = Verifier(secret, session) if secret else None
        self.devices: set[str] | None = set() if boards else None
        self.hosts: set[str] = {"recorder"}

    def follow(self, bus, topics) -> None:
        """Learn the instances' names from their retained statuses (for a receiver that does not
        otherwise see them)."""
        from ether.contract.wire import decode_object

        def on_status(topic: str, raw: bytes) -> None:
            status = decode_object(raw)
            if status is not None and isinstance(status.get("instance"), str):
                self.note("instance_status", status["instance"])

        bus.subscribe(topics.instance_status_all(), on_status)

    def note(self, kind: str, name: str) -> None:
        """A retained announcement the recorder saw: a board's schema, an instance's status."""
        if kind == "device_schema" and self.devices is not None and len(self.devices) < 10_000:
            self.devices.add(name)
        elif kind == "instance_status" and len(self.hosts) < 10_000:
            self.hosts.add(name)

    def problem(self, raw: bytes, source: str) -> str | None:
        """Why ``raw`` (claiming ``source``) is not believed; None if it is."""
        if self.verifier is None or self.verifier.verify(raw, source):
            return None
        board = self.devices is None or source in self.devices
        if board and source not in self.hosts and not source.startswith("main:"):
            return None
        return f"src '{source[:80]}' is not verified (no valid signature of that source)"
