"""``ether broker`` (the embedded broker in the foreground) and ``ether access`` (its logins)."""

from __future__ import annotations

import argparse
import sys

from ether import exits


def add_commands(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser("broker", help="run the embedded MQTT broker in the foreground")
    p.add_argument("--host", default="127.0.0.1", help="listen address; any but loopback requires logins")
    p.add_argument("--port", type=int, default=1883)
    p.add_argument(
        "--max-payload",
        type=byte_size,
        help="largest message in bytes, or a size such as 64MiB (default 16MiB)",
    )
    p.add_argument(
        "--listener",
        action="append",
        default=[],
        metavar="SCHEME:PORT[:CERT:KEY]",
        help="listen also for mqtts (TLS), ws or wss (WebSockets) on PORT, e.g. mqtts:8883:server.pem:server.key",
    )
    p.set_defaults(handler=broker)

    p = commands.add_parser("access", help="logins for a broker reachable from other machines")
    p.add_argument("action", choices=["add", "remove", "list"])
    p.add_argument("name", nargs="?", help="login name, e.g. a board's name")
    p.set_defaults(handler=access)


def byte_size(text: str) -> int:
    """A ``--max-payload`` value: bytes, or a size with a unit (``64MiB``, ``1GB``)."""
    from pydantic import ByteSize, TypeAdapter, ValidationError

    try:
        size = int(TypeAdapter(ByteSize).validate_python(text))
    except ValidationError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a size (bytes, or e.g. 64MiB)") from None
    if size <= 0:
        raise argparse.ArgumentTypeError(f"{text!r}: the size must be positive")
    return size


def broker(args: argparse.Namespace) -> int:
    """Run the embedded broker in the foreground (for other machines' supervisors or boards)."""
    from ether.contract.wire import DEFAULT_MAX_PAYLOAD
    from ether.transport.access import Access
    from ether.transport.broker import BrokerError, Listener, needs_credentials, serve

    password_file = str(Access().password_file) if needs_credentials(args.host) else None
    try:
        listeners = tuple(Listener.parse(text) for text in args.listener)
        size = args.max_payload or DEFAULT_MAX_PAYLOAD
        serve(args.host, args.port, password_file, max_payload=size, listeners=listeners)
    except BrokerError as exc:
        print(f"ether broker: {exc}", file=sys.stderr)
        return exits.CONFIG
    return exits.OK


def access(args: argparse.Namespace) -> int:
    """``ether access add|remove|list [NAME]``: logins for an exposed embedded broker."""
    from ether.transport.access import Access

    logins = Access()
    if args.action == "list":
        for name in logins.users():
            print(name)
        return exits.OK
    if not args.name:
        print(f"ether access {args.action}: give a login name", file=sys.stderr)
        return exits.CONFIG
    if args.action == "remove":
        if logins.remove(args.name):
            return exits.OK
        print(f"ether access: no login named {args.name!r} in {logins.password_file}", file=sys.stderr)
        return exits.FAILED
    try:
        password = logins.add(args.name)
    except ValueError as exc:
        print(f"ether access: {exc}", file=sys.stderr)
        return exits.CONFIG
    print(f"login {args.name!r} password: {password}")
    print("(shown once, not stored; a broker already running reads logins when it starts)")
    return exits.OK
