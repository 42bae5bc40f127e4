"""The ``ether`` command: the whole parser is built here, from one module per part of the design
(``session``: run, monitor, graph, control; ``broker``: broker, access; ``data``: sessions, lineage,
export, replay; ``boards``: lite, bridge). Exit codes are in ``ether.exits``."""

from __future__ import annotations

import argparse
import importlib
import sys

from ether.cli import boards, broker, data, experiments, session


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ether", description="Wire a lab together over MQTT.")
    commands = parser.add_subparsers(dest="command", required=True)
    for part in (session, broker, data, boards, experiments):
        part.add_commands(commands)
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    handler = args.handler
    if isinstance(handler, str):  # "module:function": imported only for the command that runs
        module, function = handler.split(":")
        handler = getattr(importlib.import_module(module), function)
    sys.exit(handler(args))
