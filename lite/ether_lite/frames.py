"""Readings holding bytes or arrays, in Ether's binary encoding (the host's
docs/topics.md#arrays-and-bytes): a JSON header, then the raw buffers.

A reading's top-level values may be bytes, bytearray, an array.array
(CPython: its typecode gives the dtype) or Samples(buffer, dtype, shape) for
MicroPython and CircuitPython, whose arrays do not say their type. The host
receives numpy arrays. Buffers are taken to be little-endian, as on every
board Ether knows (ARM, ESP32, RP2040).
"""

import json
import struct

try:
    from array import array
except ImportError:  # a port without the array module
    array = None

MAGIC_V1 = b"\x89ETH\x01\x00\x00\x00"


class Samples:
    """An array for the host: Samples(array("h", adc), "<i2"), optionally
    with a shape, e.g. (64, 4) for 64 samples of 4 channels (C order)."""

    def __init__(self, data, dtype, shape=None):
        self.data = data
        self.dtype = dtype
        self.shape = shape


def _dtype(a):
    code = a.typecode  # CPython only: elsewhere, wrap the array in Samples
    kind = "f" if code in "fd" else ("u" if code.isupper() else "i")
    return ("|" if a.itemsize == 1 else "<") + kind + str(a.itemsize)


def split(value):
    """(the reading's JSON text with references in place of its buffers, the
    buffers padded to 8 bytes) for a reading (a dict) that holds buffers."""
    header = {}
    parts = []
    size = 0
    for name in value:
        v = value[name]
        if isinstance(v, (bytes, bytearray)):
            buf, ref = bytes(v), None
        elif isinstance(v, Samples) or (array is not None
                                        and isinstance(v, array)):
            data = v.data if isinstance(v, Samples) else v
            dtype = v.dtype if isinstance(v, Samples) else _dtype(v)
            buf = bytes(data)
            shape = v.shape if isinstance(v, Samples) else None
            if shape is None:
                shape = [len(buf) // int(dtype[2:])]
            ref = {"dtype": dtype, "shape": list(shape), "order": "C"}
        else:
            header[name] = v
            continue
        extent = {"offset": size, "nbytes": len(buf)}
        if ref is None:
            header[name] = {"$bytes": extent}
        else:
            ref.update(extent)
            header[name] = {"$array": ref}
        pad = -len(buf) % 8
        parts.append(buf + b"\x00" * pad)
        size += len(buf) + pad
    return json.dumps(header), parts


def frame(text, parts):
    """The frame: the header `text` (the stamped JSON) and the buffers."""
    text = text.encode()
    head = MAGIC_V1 + struct.pack("<I", len(text)) + text
    return b"".join([head, b"\x00" * (-len(head) % 8)] + parts)
