"""Board clocks: the offset from a board's clock to the recorder's, estimated per boot and re-estimated.

A board stamps readings with its own clock (``_ether.t``). Host time minus board time at arrival is the
offset plus the delivery delay, so the smallest offset seen is the best estimate. It is recorded at a
boot's first reading, at once when it shrinks by more than ``STEP`` (the board's clock was set, or the
first reading had waited in the board's buffer), and every ``PERIOD`` seconds as the smallest of that
period, so a crystal's drift (tens of ms a day either way) is followed too.
"""

from __future__ import annotations

from dataclasses import dataclass

STEP = 1.0  # s: a smaller offset by more than this is recorded at once
PERIOD = 60.0  # s of host time between two estimates of a board's offset


@dataclass
class _Estimate:
    recorded: float  # the offset last recorded
    since: float  # host time when the current period began
    best: dict | None = None  # the reading with the smallest offset in this period


class DeviceClocks:
    """Per (device, boot): which readings' offsets are worth a ``device_clock`` event."""

    def __init__(self, period: float = PERIOD, step: float = STEP) -> None:
        self.period, self.step = period, step
        self._boots: dict[tuple[str, str], _Estimate] = {}

    def observe(self, src: str, boot: str, t_board: float, t_host: float, seq: int) -> dict | None:
        """The event detail to record for this reading, or None."""
        offset = t_host - t_board
        reading = {"offset": offset, "t_board": t_board, "t_host": t_host, "seq": seq}
        estimate = self._boots.get((src, boot))
        if estimate is None or offset < estimate.recorded - self.step:
            self._boots[(src, boot)] = _Estimate(offset, t_host)
            return reading
        if estimate.best is None or offset < estimate.best["offset"]:
            estimate.best = reading
        if t_host - estimate.since < self.period:
            return None
        best = estimate.best
        self._boots[(src, boot)] = _Estimate(best["offset"], t_host)
        return best
