"""The ``ether`` command: the whole parser is built here, from one module per part of the design
(``session``: run, monitor, graph, control; ``broker``: broker, access; ``data``: sessions, lineage,
export, replay; ``boards``: lite, bridge). Exit codes are in ``ether.exits``."""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from ether.cli import boards, broker, data, experiments, session


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ether", description="Wire a lab together over MQTT.")
    parser.add_argument(
        "--log-level",
        type=log_level,
        metavar="LEVEL",
        help="DEBUG, INFO (default), WARNING, ERROR: for this command and every process it starts "
        "(the same as ETHER_LOG_LEVEL)",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    for part in (session, broker, data, boards, experiments):
        part.add_commands(commands)
    return parser


def log_level(text: str) -> str:
    """A log level's name, checked as ``ETHER_LOG_LEVEL`` is."""
    import logging

    if not isinstance(logging.getLevelName(text.strip().upper()), int):
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a log level (DEBUG, INFO, WARNING, ERROR, CRITICAL)"
        )
    return text.strip().upper()


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    if args.log_level:
        from ether.logs import LEVEL_VARIABLE

        os.environ[LEVEL_VARIABLE] = args.log_level  # this process and its children
    handler = args.handler
    if isinstance(handler, str):  # "module:function": imported only for the command that runs
        module, function = handler.split(":")
        handler = getattr(importlib.import_module(module), function)
    sys.exit(handler(args))
