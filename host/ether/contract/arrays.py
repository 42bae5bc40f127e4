"""Arrays and bytes in payloads: Ether's binary encoding, version 1 (docs/topics.md#arrays-and-bytes).

A payload that holds numpy arrays or ``bytes`` travels as one frame; any other stays plain JSON::

    0   4  magic  b"\\x89ETH"   (0x89 never starts JSON or UTF-8 text)
    4   1  version, 1
    5   3  zero
    8   4  H: length of the header, uint32 little-endian
    12  H  header: the message as plain JSON, each array replaced by
           {"$array": {"dtype": "<i2", "shape": [32, 300], "order": "C", "offset": 0, "nbytes": 19200}}
           and each bytes value by {"$bytes": {"offset": ..., "nbytes": ...}}
    ..     zero padding to a multiple of 8: the data section starts there
    ..     the data section: each buffer at its ``offset`` (from the data section's start, a multiple of 8)

The session store keeps the same two halves: the header (without ``_ether``) as the payload text and
the data section as a BLOB. numpy is imported only when a message holds an array.
"""

from __future__ import annotations

import struct
import sys
from collections.abc import Callable, Sequence
from typing import Any

import pydantic_core

MAGIC = b"\x89ETH"
VERSION = 1
PREFIX = struct.Struct("<4sB3xI")  # magic, version, header length
ALIGN = 8
ARRAY, BYTES = "$array", "$bytes"
KINDS = "biufcmMSU"  # bool, ints, floats, complex, timedelta, datetime, byte and unicode strings
MAX_DIMS = 32
BINARY = (bytes, bytearray, memoryview)


class ArrayError(ValueError):
    """A payload whose arrays cannot be encoded, or a binary message that is malformed."""


def numpy_if_loaded() -> Any:
    """numpy if the process imported it (no array can exist otherwise), else None -- and if another
    thread is importing it right now, once that import is done."""
    if "numpy" not in sys.modules:
        return None
    import numpy

    return numpy


def _padding(n: int) -> int:
    return -n % ALIGN


def holds_binary(value: Any) -> bool:
    """Whether a payload holds an array or bytes anywhere (dict values and list items)."""
    np = numpy_if_loaded()
    return _holds(value, BINARY if np is None else (*BINARY, np.ndarray, np.generic))


_PLAIN = frozenset((int, float, str, bool, type(None)))


def _holds(value: Any, kinds: tuple) -> bool:
    if isinstance(value, dict):
        value = value.values()
    elif not isinstance(value, (list, tuple)):
        return isinstance(value, kinds)
    for v in value:
        if type(v) not in _PLAIN and _holds(v, kinds):
            return True
    return False


class _Splitter:
    """Replaces arrays and bytes by references and collects their buffers into one data section."""

    def __init__(self) -> None:
        self.parts: list[Any] = []
        self.size = 0

    def add(self, buffer: memoryview) -> tuple[int, int]:
        offset = self.size
        self.parts.append(buffer)
        pad = _padding(buffer.nbytes)
        if pad:
            self.parts.append(b"\0" * pad)
        self.size += buffer.nbytes + pad
        return offset, buffer.nbytes

    def value(self, v: Any, where: str) -> Any:
        np = numpy_if_loaded()
        if isinstance(v, dict):
            if len(v) == 1 and next(iter(v)) in (ARRAY, BYTES):
                raise ArrayError(f"field '{where}': a one-key object named {next(iter(v))!r} is reserved")
            return {k: self.value(x, f"{where}.{k}" if where else str(k)) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return [self.value(x, f"{where}[{i}]") for i, x in enumerate(v)]
        if isinstance(v, BINARY):
            offset, nbytes = self.add(memoryview(v).cast("B"))
            return {BYTES: {"offset": offset, "nbytes": nbytes}}
        if np is not None and isinstance(v, np.generic):
            return v.item() if v.dtype.kind in "biuf" else self.array(np.asarray(v), where)
        if np is not None and isinstance(v, np.ndarray):
            return self.array(v, where)
        return v

    def array(self, a: Any, where: str) -> dict[str, Any]:
        np = numpy_if_loaded()
        if a.dtype.kind not in KINDS:
            raise ArrayError(
                f"field '{where or 'root'}': an array of dtype {a.dtype} cannot be sent"
                " (numbers, bool, complex, datetime and strings can; structured and object arrays cannot)"
            )
        if a.flags.c_contiguous:
            order, flat = "C", a
        elif a.flags.f_contiguous:
            order, flat = "F", a.T
        else:
            order, flat = "C", np.ascontiguousarray(a)
        offset, nbytes = self.add(memoryview(flat.reshape(-1).view(np.uint8)))
        ref = {"dtype": a.dtype.str, "shape": list(a.shape), "order": order}
        return {ARRAY: {**ref, "offset": offset, "nbytes": nbytes}}


def split(value: Any) -> tuple[Any, list[Any]]:
    """(the value with references in place of arrays and bytes, the data section as a list of parts)."""
    splitter = _Splitter()
    return splitter.value(value, ""), splitter.parts


Seal = Callable[[bytes, Sequence[Any]], bytes]  # (JSON or a frame's header, its data section) -> signed


def pack(body: Any, seal: Seal | None = None) -> bytes:
    """One binary frame for a message body (its ``_ether`` key included) that holds arrays or bytes;
    plain JSON if it held only numpy scalars. ``seal`` signs the header before the frame is
    assembled, so a large frame is copied once."""
    header_value, parts = split(body)
    header = pydantic_core.to_json(header_value)
    if seal is not None:
        header = seal(header, parts)
    if not parts:
        return header
    return assemble(header, parts)


def assemble(header: bytes, parts: list[Any]) -> bytes:
    """A frame from its header (JSON bytes) and the parts of its data section."""
    head = PREFIX.pack(MAGIC, VERSION, len(header))
    return b"".join([head, header, b"\0" * _padding(len(head) + len(header)), *parts])


def is_frame(raw: bytes | bytearray | memoryview) -> bool:
    return raw[:4] == MAGIC


def unpack(raw: bytes | bytearray | memoryview) -> Any:
    """The message body of a binary frame, arrays as read-only numpy views of ``raw`` (no copy)."""
    if len(raw) < PREFIX.size:
        raise ArrayError(f"binary message of {len(raw)} bytes is shorter than its {PREFIX.size}-byte prefix")
    _, version, length = PREFIX.unpack_from(raw)
    if version != VERSION:
        raise ArrayError(f"binary message version {version}: this Ether reads version {VERSION}")
    header_bytes, data = sections(raw)
    try:
        header = pydantic_core.from_json(bytes(header_bytes))
    except ValueError as exc:
        raise ArrayError(f"binary message header is not JSON ({exc})") from None
    return join(header, data)


def sections(raw: bytes | bytearray | memoryview) -> tuple[memoryview, memoryview]:
    """A frame's header (JSON bytes) and its data section, as views of ``raw``."""
    length = PREFIX.unpack_from(raw)[2] if len(raw) >= PREFIX.size else 0
    end = PREFIX.size + length
    if end > len(raw):
        raise ArrayError(f"binary message header of {length} bytes runs past its end ({len(raw)} bytes)")
    view = memoryview(raw)
    return view[PREFIX.size : end], view[end + _padding(end) :]


def join(value: Any, data: bytes | memoryview | None) -> Any:
    """Put the arrays and bytes of a data section back in place of their references."""
    data = memoryview(data if data is not None else b"")
    if isinstance(value, dict):
        if len(value) == 1:
            key, ref = next(iter(value.items()))
            if key == ARRAY:
                return _array(ref, data)
            if key == BYTES:
                offset, nbytes = _extent(ref, data, BYTES)
                return bytes(data[offset : offset + nbytes])
        return {k: join(v, data) for k, v in value.items()}
    if isinstance(value, list):
        return [join(v, data) for v in value]
    return value


def _extent(ref: Any, data: memoryview, kind: str) -> tuple[int, int]:
    if not isinstance(ref, dict):
        raise ArrayError(f"'{kind}' must be an object, got {type(ref).__name__}")
    offset, nbytes = ref.get("offset"), ref.get("nbytes")
    if (
        type(offset) is not int
        or type(nbytes) is not int
        or min(offset, nbytes) < 0
        or offset + nbytes > data.nbytes
    ):
        raise ArrayError(
            f"'{kind}' offset {offset!r} and nbytes {nbytes!r} do not fit a data section of {data.nbytes} bytes"
        )
    return offset, nbytes


def _array(ref: Any, data: memoryview) -> Any:
    offset, nbytes = _extent(ref, data, ARRAY)
    try:
        import numpy as np
    except ImportError:
        raise ArrayError("the message holds arrays: reading it needs numpy (pip install numpy)") from None
    shape, order = ref.get("shape"), ref.get("order", "C")
    if (
        not isinstance(shape, list)
        or len(shape) > MAX_DIMS
        or not all(type(n) is int and n >= 0 for n in shape)
    ):
        raise ArrayError(f"'{ARRAY}' shape {shape!r} is not a list of at most {MAX_DIMS} sizes")
    if order not in ("C", "F"):
        raise ArrayError(f"'{ARRAY}' order {order!r} is neither 'C' nor 'F'")
    text = str(ref.get("dtype"))
    try:
        dtype = np.dtype(text) if len(text) <= 16 else None
    except Exception:  # hostile text: numpy's parser raises TypeError, ValueError, SyntaxError...
        dtype = None
    if dtype is None or dtype.kind not in KINDS or dtype.itemsize == 0:
        raise ArrayError(f"'{ARRAY}' dtype {ref.get('dtype')!r} is not a numeric, bool, time or string dtype")
    count = 1
    for n in shape:
        count *= n
    if count * dtype.itemsize != nbytes:
        raise ArrayError(
            f"'{ARRAY}' of shape {shape} and dtype {dtype.str} needs {count * dtype.itemsize} bytes, has {nbytes}"
        )
    flat = np.frombuffer(data, dtype, count, offset)
    return flat.reshape(shape, order=order)
