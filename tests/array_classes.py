"""Classes the array tests run as instances: a camera that publishes arrays and bytes, a viewer that takes them."""

from __future__ import annotations

import hashlib
from typing import Annotated

import numpy as np

import ether
from ether import Array, ether_pub, ether_sub


def frame(n: int) -> dict:
    """A payload of arrays of several kinds, and bytes, that both processes can rebuild from ``n``."""
    rng = np.random.default_rng(n)
    return {
        "n": n,
        "image": rng.integers(0, 255, (48, 64, 3), dtype=np.uint8),
        "samples": rng.integers(-2000, 2000, (32, 300), dtype=np.int16),
        "fortran": np.asfortranarray(rng.random((4, 5))),
        "flags": rng.random(7) > 0.5,
        "cplx": rng.random(3) + 1j * rng.random(3),
        "scalar": np.array(n, dtype=np.float32),
        "raw": rng.bytes(100),
    }


class Camera:
    """Publishes ``frame(n)`` on request: as its return value, or through ``ether.pub``."""

    @ether_sub(topic="snap")
    @ether_pub(topic="frames")
    def snap(self, n: int) -> dict:
        return frame(n)

    @ether_sub(topic="snap_pub")
    def snap_pub(self, n: int) -> None:
        ether.pub(frame(n), "frames")


class Viewer:
    """Takes each frame with typed parameters and sends back what it received, and in which layout."""

    @ether_sub(topic="frames")
    @ether_pub(topic="seen")
    def see(
        self,
        n: int,
        image: np.ndarray,
        samples: Annotated[np.ndarray, Array(dtype="int16", shape=(32, None))],
        fortran: np.ndarray,
        flags: np.ndarray,
        cplx: np.ndarray,
        scalar: np.ndarray,
        raw: bytes,
    ) -> dict:
        received = dict(image=image, samples=samples, fortran=fortran, flags=flags, cplx=cplx, scalar=scalar)
        return {"n": n, **received, "raw": raw, "fortran_order": bool(fortran.flags.f_contiguous)}


class BlobTaker:
    """Takes any payload whole as ``root: bytes`` (a foreign camera's JPEG) and says what it got."""

    @ether_sub(topic="camera")
    @ether_pub(topic="blob_seen")
    def take(self, root: bytes) -> dict:
        return {"nbytes": len(root), "sha256": hashlib.sha256(root).hexdigest()}
