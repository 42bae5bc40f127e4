"""What signing costs per message, in one process: keying a new HMAC per message (``hmac.new``),
the one-shot ``hmac.digest``, copying an HMAC keyed once per source (scheme 1 of ``transport/signing``)
and Poly1305 (scheme 2's MAC of a frame's data section); then ``sign``, ``signed_by`` and, for a
frame, ``seal`` (its header over its data section, as the outbox signs it), for a 236-byte message
and a 640x480x3 frame; and ``signed_by`` of that frame signed with scheme 1, as an older Ether signed
it (what every receiver paid per frame before scheme 2).

Run: ``python bench/signing.py [--repeat 5]``. The whole-pipeline cost (signing on and off, side by
side) is ``python bench/run.py --clients ether+recorder,ether+recorder-unsigned --parts pipeline``.
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import os
import statistics
import timeit

import numpy as np
from cryptography.hazmat.primitives.poly1305 import Poly1305

from ether.contract.arrays import assemble, sections
from ether.contract.wire import Stamper, encode
from ether.transport.signing import seal, sign, signed_by


def per_call_us(fn, repeat: int, number: int) -> float:
    """The median of ``repeat`` timings, in µs per call."""
    return statistics.median(timeit.repeat(fn, repeat=repeat, number=number)) / number * 1e6


def scheme_1(frame: bytes, key: bytes) -> bytes:
    """``frame`` signed as an older Ether signed it: HMAC-SHA256 over its header and data section."""
    header, data = sections(frame)
    sig = hmac.new(key, bytes(header) + bytes(data), "sha256").hexdigest()[:32].encode()
    return assemble(bytes(header)[:-2] + b',"sig":"' + sig + b'"}}', [data])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    key = os.urandom(32)
    stamper = Stamper("bench")
    small = encode({"value": 1.5, "label": "x" * 150}, stamper.stamp(None))
    frame = encode({"frame": np.zeros((480, 640, 3), np.uint8)}, stamper.stamp(None))
    keyed = hmac.new(key, digestmod=hashlib.sha256)

    def copied(body: bytes) -> bytes:
        mac = keyed.copy()
        mac.update(body)
        return mac.digest()

    print(
        f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores; µs per call, median of {args.repeat}"
    )
    for label, body, number in (("236 B message", small, 20_000), ("921,600 B frame", frame, 50)):
        signed = sign(body, key)
        rows = {
            "hmac.new per message": lambda b=body: hmac.new(key, b, "sha256").digest(),
            "hmac.digest": lambda b=body: hmac.digest(key, b, "sha256"),
            "keyed HMAC copied": lambda b=body: copied(b),
            "Poly1305": lambda b=body: Poly1305.generate_tag(key, b),
            "sign()": lambda b=body: sign(b, key),
            "signed_by()": lambda s=signed: signed_by(s, key),
        }
        if body is frame:
            header, data = sections(frame)
            old = scheme_1(frame, key)
            rows["seal() before assembly"] = lambda h=bytes(header), d=data: seal(h, [d], key)
            rows["signed_by() scheme 1"] = lambda s=old: signed_by(s, key)
        print(f"{label} ({len(body)} B):")
        for name, fn in rows.items():
            print(f"  {name:<22} {per_call_us(fn, args.repeat, number):9.2f}")


if __name__ == "__main__":
    main()
