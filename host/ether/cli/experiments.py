"""``ether mark``, ``ether run-start/run-stop``, ``ether trial-start/trial-stop``: structure inside a
running session from a terminal or a shell script (docs/experiments.md). Each sends one plain JSON
message on ``ether.structure`` and returns once the recorder confirms it is on disk."""

from __future__ import annotations

import argparse
import json
import sys
import uuid
from typing import Any

from ether import exits


def add_commands(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser("mark", help="add a marker to the running session (recorder's time)")
    p.add_argument("name", help="what happened, e.g. 'stimulus on'")
    p.add_argument(
        "-f", "--field", action="append", default=[], metavar="KEY=VALUE", help="a field (JSON or text)"
    )
    p.add_argument("--parent", help="the id of the run or trial it belongs to (default: the innermost open)")
    _connection(p)
    for kind in ("run", "trial"):
        p = commands.add_parser(f"{kind}-start", help=f"start a {kind} in the running session; prints its id")
        p.add_argument("name", nargs="?" if kind == "trial" else None, default=kind)
        p.add_argument("--id", help=f"the {kind}'s id (default: {kind}-<random>)")
        p.add_argument(
            "-m", "--meta", action="append", default=[], metavar="KEY=VALUE", help="metadata (JSON or text)"
        )
        p.add_argument("--parent", help="the id of the enclosing run (default: the innermost open run)")
        _connection(p)
        p.set_defaults(kind=kind)
        p = commands.add_parser(f"{kind}-stop", help=f"stop a {kind} (by id, or the innermost open one)")
        p.add_argument("id", nargs="?", help=f"the {kind}'s id (default: the innermost open {kind})")
        p.add_argument("--name", help=f"stop the innermost open {kind} of this name")
        p.add_argument("--status", choices=("ok", "failed", "aborted"), default="ok")
        p.add_argument("--error", help="why it failed")
        _connection(p)
        p.set_defaults(kind=kind)


def _connection(p: argparse.ArgumentParser) -> None:
    p.add_argument("--broker", default="mqtt://127.0.0.1:1883", help="default mqtt://127.0.0.1:1883")
    p.add_argument("--session", default="default")
    p.add_argument("--timeout", type=float, default=10.0, help="seconds to wait for the recorder")
    p.set_defaults(handler=structure)


def duration(text: str) -> float:
    """``--for``'s value in seconds (argparse type): 90, 90s, 10m, 1h30m."""
    from ether.runtime.schedules import parse_duration

    try:
        return parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def fields(pairs: list[str], option: str) -> dict[str, Any]:
    """``KEY=VALUE`` pairs as a dict: a VALUE that is JSON (0.5, true, [1, 2]) is read as JSON, else text."""
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ValueError(f"{option} {pair!r}: expected KEY=VALUE")
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out


def message(args: argparse.Namespace) -> dict[str, Any]:
    """The StructureEvent of the command line (docs/experiments.md)."""
    if args.command == "mark":
        event = {"event": "mark", "name": args.name, "metadata": fields(args.field, "--field")}
    elif args.command.endswith("-start"):
        entry_id = args.id or f"{args.kind}-{uuid.uuid4().hex[:12]}"
        event = {"event": "start", "kind": args.kind, "name": args.name, "id": entry_id}
        event["metadata"] = fields(args.meta, "--meta")
    else:
        event = {"event": "stop", "kind": args.kind, "id": args.id, "name": args.name}
        event |= {"status": args.status, "error": args.error}
    if getattr(args, "parent", None):
        event["parent"] = args.parent
    return {k: v for k, v in event.items() if v is not None}


def structure(args: argparse.Namespace) -> int:

    from ether.contract.messages import ContractError, RecorderCommand, StructureEvent, parse, read_reply
    from ether.contract.topics import STRUCTURE, Topics
    from ether.contract.wire import Stamper, encode
    from ether.transport.requests import Requester, RequestTimeout

    try:
        event = message(args)
        parse(StructureEvent, event)
    except (ValueError, ContractError) as exc:
        print(f"ether {args.command}: {exc}", file=sys.stderr)
        return exits.CONFIG
    from ether.cli.session import connect_cli

    topics = Topics(args.session)
    connected = connect_cli(args)
    if connected is None:
        return exits.FAILED
    name, bus = connected
    try:
        requester = Requester(bus, topics, Stamper(name))
        if not bus.publish_and_wait(topics.data(STRUCTURE), encode(event), timeout=args.timeout):
            print(f"ether: the broker at {args.broker} did not take the message", file=sys.stderr)
            return exits.FAILED
        # the recorder answers a barrier once all it received before it is on disk: ours too
        try:
            reply = read_reply(
                requester.request(topics.recorder_control(), RecorderCommand(command="barrier"), args.timeout)
            )
        except RequestTimeout:
            reply = None
    finally:
        bus.close()
    if reply is None or not reply.ok:
        why = "did not answer" if reply is None else f"refused: {reply.error.message}"
        print(
            f"ether: sent, but the recorder of session '{args.session}' {why} within {args.timeout:g} s:"
            " it may not be recorded (is the session running? a recorder confirms only to a login of"
            " the session: run this as the user who started it)",
            file=sys.stderr,
        )
        return exits.FAILED
    print(event.get("id") or f"{args.command}: recorded")
    return exits.OK
