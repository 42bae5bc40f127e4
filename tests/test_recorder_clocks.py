"""Board clock offsets: recorded at a boot's first reading, at once when the board's clock is set, and
re-estimated every period from the reading with the least delay, so drift either way is followed."""

from __future__ import annotations

from ether.data.recorder.clocks import DeviceClocks


def test_first_reading_of_each_boot_is_recorded():
    clocks = DeviceClocks(period=60)
    assert clocks.observe("b1", "boot1", 100.0, 1000.0, 1)["offset"] == 900.0
    assert clocks.observe("b1", "boot1", 101.0, 1001.0, 2) is None
    assert clocks.observe("b1", "boot2", 5.0, 1002.0, 1)["offset"] == 997.0


def test_a_clock_set_forward_is_recorded_at_once():
    clocks = DeviceClocks(period=60)
    clocks.observe("b1", "boot1", 100.0, 1000.0, 1)
    detail = clocks.observe("b1", "boot1", 1001.5, 1001.5, 2)  # NTP set the board's clock
    assert detail == {"offset": 0.0, "t_board": 1001.5, "t_host": 1001.5, "seq": 2}


def test_drift_is_followed_each_period_with_the_least_delayed_reading():
    clocks = DeviceClocks(period=60)
    clocks.observe("b1", "boot1", 0.0, 1000.0, 1)
    # the board's clock runs slow: the offset grows; delivery delays vary from 5 to 50 ms
    found = []
    for seq in range(2, 200):
        t_board = seq * 1.0
        delay = 0.005 if seq % 7 == 0 else 0.05
        t_host = 1000.0 + t_board * 1.001 + delay
        detail = clocks.observe("b1", "boot1", t_board, t_host, seq)
        if detail:
            found.append(detail)
    assert len(found) == 3  # one estimate per minute of host time
    assert all(d["seq"] % 7 == 0 for d in found)  # each from the least delayed reading of its minute
    offsets = [d["offset"] for d in found]
    assert offsets == sorted(offsets) and offsets[-1] - offsets[0] > 0.1  # the slow clock, followed
