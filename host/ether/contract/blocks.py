"""Blocks of samples with their time axis, in the spirit of ezmsg's AxisArray (docs/data.md#blocks).

A block is a payload object (a sensor publishes one per chunk of samples)::

    data      numpy array, time on axis 0: (samples,) or (samples, channels, ...)
    t0        time of data[0], seconds since the epoch, the sender's clock
    rate      samples per second (regular sampling) -- or instead:
    times     float64 array: the time of each sample (irregular sampling)
    channels  optional: one name per data.shape[1]
    units     optional: the unit of the values ("uV")

``block(...)`` builds one; ``join(...)`` concatenates a stream of them and finds its gaps.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any


class BlockError(ValueError):
    """A payload that is not a block, or blocks that do not join (the message says which and why)."""


def block(
    data: Any,
    rate: float | None = None,
    *,
    t0: float | None = None,
    times: Any = None,
    channels: list[str] | None = None,
    units: str | None = None,
) -> dict[str, Any]:
    """A block payload: ``data`` (time on axis 0) with ``rate`` or per-sample ``times``. Without ``t0``
    the block is taken to end now (``t0 = time.time() - samples / rate``)."""
    import numpy as np

    data = np.asarray(data)
    if (rate is None) == (times is None):
        raise BlockError("a block has either a sample rate or the time of each sample (times), not both")
    payload: dict[str, Any] = {"data": data}
    if rate is not None:
        if not rate > 0:
            raise BlockError(f"a block's rate must be positive, got {rate!r}")
        payload["rate"] = float(rate)
        payload["t0"] = float(t0) if t0 is not None else time.time() - len(data) / rate
    else:
        payload["times"] = np.asarray(times, dtype=np.float64)
        payload["t0"] = float(payload["times"][0]) if len(data) else float(t0 or time.time())
    if channels is not None:
        payload["channels"] = [str(c) for c in channels]
    if units is not None:
        payload["units"] = str(units)
    Block.read(payload)
    return payload


@dataclass
class Block:
    """One block, read from a payload (a stored record or a message a subscriber received)."""

    data: Any
    t0: float
    rate: float | None = None
    times: Any = None
    channels: list[str] | None = None
    units: str | None = None

    @classmethod
    def read(cls, payload: Any, where: str = "block") -> Block:
        import numpy as np

        if not isinstance(payload, dict) or not isinstance(payload.get("data"), np.ndarray):
            raise BlockError(f"{where}: not a block (a payload with a 'data' array)")
        data = payload["data"]
        if data.ndim == 0:
            raise BlockError(f"{where}: 'data' must have a time axis (axis 0); got a 0-d array")
        rate, times = payload.get("rate"), payload.get("times")
        if times is not None:
            times = np.asarray(times, dtype=np.float64)
            if times.shape != (len(data),):
                raise BlockError(f"{where}: 'times' has shape {times.shape}, data has {len(data)} samples")
        elif not isinstance(rate, (int, float)) or not rate > 0:
            raise BlockError(
                f"{where}: a block needs a positive 'rate' or per-sample 'times', got rate {rate!r}"
            )
        t0 = payload.get("t0", times[0] if times is not None and len(times) else None)
        if not isinstance(t0, (int, float)):
            raise BlockError(f"{where}: 't0' must be a number (seconds since the epoch), got {t0!r}")
        channels = payload.get("channels")
        if channels is not None and (data.ndim < 2 or len(channels) != data.shape[1]):
            raise BlockError(f"{where}: {len(channels)} channel names for data of shape {data.shape}")
        return cls(data, float(t0), rate and float(rate), times, channels, payload.get("units"))

    def sample_times(self) -> Any:
        import numpy as np

        if self.times is not None:
            return self.times
        assert self.rate is not None  # a block has times or a rate (read)
        return self.t0 + np.arange(len(self.data)) / self.rate


@dataclass
class Blocks:
    """A stream of blocks joined: every sample on one time axis, and where samples are missing."""

    data: Any  # the samples, time on axis 0
    times: Any  # float64: the time of each sample (seconds since the epoch, the sender's clock)
    rate: float | None
    channels: list[str] | None
    units: str | None
    gaps: list[dict[str, Any]] = field(default_factory=list)  # {start, stop, missing}: a break in time
    lost: list[dict[str, Any]] = field(default_factory=list)  # the gap ledger's ranges of its sources


def join(blocks: list[Block], start: float | None = None, stop: float | None = None) -> Blocks:
    """Concatenate blocks in time order into one array, trimmed to [start, stop); a jump between one
    block's end and the next one's t0 of more than half a sample is a gap (``missing``: samples at the
    rate; negative if they overlap)."""
    import numpy as np

    if not blocks:
        return Blocks(np.empty((0,)), np.empty((0,)), None, None, None)
    blocks = sorted(blocks, key=lambda b: b.t0)
    first = blocks[0]
    for i, b in enumerate(blocks[1:], 1):
        if b.data.shape[1:] != first.data.shape[1:] or b.data.dtype != first.data.dtype:
            raise BlockError(
                f"block {i} (t0 {b.t0}) has samples of shape {b.data.shape[1:]} and dtype {b.data.dtype},"
                f" the first {first.data.shape[1:]} and {first.data.dtype}"
            )
    gaps = []
    for before, after in zip(blocks, blocks[1:], strict=False):
        if before.rate is None or after.rate is None:
            continue
        expected = before.t0 + len(before.data) / before.rate
        if abs(after.t0 - expected) > 0.5 / before.rate:
            missing = round((after.t0 - expected) * before.rate)
            gaps.append({"start": expected, "stop": after.t0, "missing": missing})
    data = np.concatenate([b.data for b in blocks])
    times = np.concatenate([b.sample_times() for b in blocks])
    keep = np.ones(len(times), dtype=bool)
    if start is not None:
        keep &= times >= start
    if stop is not None:
        keep &= times < stop
    if not keep.all():
        data, times = data[keep], times[keep]
        gaps = [
            g for g in gaps if (stop is None or g["start"] < stop) and (start is None or g["stop"] > start)
        ]
    return Blocks(data, times, first.rate, first.channels, first.units, gaps)
