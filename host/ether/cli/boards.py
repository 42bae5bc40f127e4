"""``ether lite bundle`` (what boards install) and ``ether bridge`` (a USB-serial board to the broker)."""

from __future__ import annotations

import argparse
import signal
import sys

from ether import exits


def add_commands(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser("lite", help="ether_lite, the board library: build what boards install")
    lite_commands = p.add_subparsers(dest="lite_command", required=True)
    p = lite_commands.add_parser("bundle", help="build the circup bundle zip (circup install ether_lite)")
    p.add_argument("--out", default="dist", help="folder to write the zip to (default ./dist)")
    p.set_defaults(handler=lite_bundle)

    p = commands.add_parser("bridge", help="pipe the MQTT of a board on USB serial to the broker")
    p.add_argument("port", help="the board's serial port: /dev/ttyACM0, /dev/serial/by-id/..., COM3")
    p.add_argument("--broker", default="mqtt://127.0.0.1:1883", help="default mqtt://127.0.0.1:1883")
    p.add_argument("--baud", type=int, default=115200, help="for a UART (default 115200); USB ignores it")
    p.set_defaults(handler=bridge)


def lite_bundle(args: argparse.Namespace) -> int:
    """``ether lite bundle``: build the circup bundle zip of ether_lite and print its path."""
    from ether.boards.lite_bundle import BundleError, build_bundle

    try:
        print(build_bundle(args.out))
    except BundleError as exc:
        print(f"ether lite bundle: {exc}", file=sys.stderr)
        return exits.FAILED
    return exits.OK


def bridge(args: argparse.Namespace) -> int:
    """``ether bridge PORT``: pipe a USB-serial board's MQTT bytes to the broker until Ctrl-C."""
    from ether.boards.bridge import Bridge
    from ether.logs import setup_logging
    from ether.transport.broker import BrokerAddress, BrokerError

    try:
        address = BrokerAddress.parse(args.broker)
    except BrokerError as exc:
        print(f"ether bridge: {exc}", file=sys.stderr)
        return exits.CONFIG
    setup_logging()
    serial_bridge = Bridge(args.port, address, args.baud)
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: serial_bridge.stop.set())
    serial_bridge.serve()
    return exits.OK
