"""The ``ether`` command. Exit codes: 0 clean, 1 a session could not start or stop cleanly, 2 bad config."""

from __future__ import annotations

import argparse
import signal
import sys
import threading

from ether.transport.broker import BrokerError

EXIT_OK, EXIT_FAILED, EXIT_CONFIG = 0, 1, 2


def run(args: argparse.Namespace) -> int:
    """Start the session of a YAML file, run ``@ether_start`` methods, stop cleanly on Ctrl-C."""
    import ether
    from ether.config import ConfigError
    from ether.runtime.session import new_session
    from ether.runtime.supervisor import InstanceStartError

    if not args.headless and sys.stdin.isatty() and sys.stdout.isatty():
        from ether.monitor import run_on_terminal

        return run_on_terminal(args)  # the same session, as a child process, behind the monitor
    ether._configure_logging()
    try:
        session = new_session(args.config, broker_url=args.broker, port=args.port, listen=args.listen)
    except ConfigError as exc:
        print(f"ether: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except BrokerError as exc:  # the url of --broker (one in the file is a ConfigError)
        print(f"ether: --broker: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    try:
        session.open(args.timeout)
        session.start(args.timeout)
    except (InstanceStartError, BrokerError) as exc:
        print(f"ether: {exc}", file=sys.stderr)
        session.close()
        return EXIT_FAILED
    where = f"on {session.address.url} (session '{session.topics.session}')"
    print(f"Ether is running {where}. Press Ctrl-C to stop.", file=sys.stderr, flush=True)
    threading.Thread(target=lambda: (session.end_requested.wait(), stop.set()), daemon=True).start()
    if args.exit_with_stdin:  # started by the monitor of `ether run`: its end (even kill -9) ends us
        threading.Thread(target=lambda: (sys.stdin.read(), stop.set()), daemon=True).start()
    stop.wait()
    print("Stopping: save_all -> cleanup -> exit ...", file=sys.stderr, flush=True)
    codes = session.close(args.timeout)
    bad = {name: code for name, code in codes.items() if code != 0}
    if bad:
        print(f"ether: instances did not stop cleanly: {bad}", file=sys.stderr)
        return EXIT_FAILED
    return EXIT_OK


def monitor(args: argparse.Namespace) -> int:
    """``ether monitor``: the terminal UI on a running session (q detaches, e ends the session)."""
    from ether.monitor import attach

    return attach(args.broker, args.session)


def broker(args: argparse.Namespace) -> int:
    """Run the embedded broker in the foreground (for other machines' supervisors or boards)."""
    from ether.transport.access import Access, needs_credentials
    from ether.transport.broker import main as broker_main

    logins = ["--password-file", str(Access().password_file)] if needs_credentials(args.host) else []
    broker_main(["--host", args.host, "--port", str(args.port), *logins])
    return EXIT_OK


def access(args: argparse.Namespace) -> int:
    """``ether access add|remove|list [NAME]``: logins for an exposed embedded broker."""
    from ether.transport.access import Access

    logins = Access()
    if args.action == "list":
        for name in logins.users():
            print(name)
        return EXIT_OK
    if not args.name:
        print(f"ether access {args.action}: give a login name", file=sys.stderr)
        return EXIT_CONFIG
    if args.action == "remove":
        if logins.remove(args.name):
            return EXIT_OK
        print(f"ether access: no login named {args.name!r} in {logins.password_file}", file=sys.stderr)
        return EXIT_FAILED
    try:
        password = logins.add(args.name)
    except ValueError as exc:
        print(f"ether access: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    print(f"login {args.name!r} password: {password}")
    print("(shown once, not stored; a broker already running reads logins when it starts)")
    return EXIT_OK


def graph(args: argparse.Namespace) -> int:
    """Print the topic graph (mermaid) and warn about loose ends, without starting anything."""
    from ether.config import ConfigError, load
    from ether.runtime.graph import TopicGraph

    try:
        topic_graph = TopicGraph.of(load(args.config))
    except ConfigError as exc:
        print(f"ether: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    print(topic_graph.mermaid())
    for warning in topic_graph.warnings():
        print(f"warning: {warning}", file=sys.stderr)
    return EXIT_OK


def remote(args: argparse.Namespace) -> int:
    """Send a command to a running session: shutdown, stop/restart/launch an instance, pause/resume."""
    import os
    import socket

    from ether.contract.topics import Topics
    from ether.contract.wire import Stamper, decode_object
    from ether.transport.broker import BrokerAddress
    from ether.transport.bus import Bus
    from ether.transport.requests import Requester, RequestTimeout

    topics = Topics(args.session)
    name = f"cli-{socket.gethostname()}-{os.getpid()}"
    bus = Bus(BrokerAddress.parse(args.broker), client_id=f"ether-{args.session}-{name}")
    try:
        bus.connect()
    except BrokerError as exc:
        print(f"ether: {exc}", file=sys.stderr)
        return EXIT_FAILED
    supervisors: dict[str, dict] = {}
    bus.subscribe(
        topics.supervisor_status("+"),
        lambda topic, raw: supervisors.__setitem__(topic, decode_object(raw) or {}),
    )
    # the broker sends retained statuses before it acknowledges our next subscription: all are known now
    requester = Requester(bus, topics, Stamper(name))
    running = [s for s in supervisors.values() if s.get("state") == "running"]
    known = sorted({i for s in running for i in s.get("instances", ())})
    problem = None
    if not running:
        problem = f"no supervisor of session '{args.session}' is running on {args.broker}"
    elif getattr(args, "instance", None) not in (None, *known):
        problem = f"session '{args.session}' has no instance '{args.instance}' (has: {', '.join(known)})"
    if problem:
        bus.close()
        print(f"ether: {problem}", file=sys.stderr)
        return EXIT_FAILED
    if args.command in ("pause", "resume"):
        topic, payload = topics.instance_control(args.instance), {"command": args.command}
    else:
        topic, payload = (
            topics.session_control(),
            {"command": args.command, "instance": getattr(args, "instance", None)},
        )
    try:
        reply = requester.request(topic, payload, args.timeout)
    except RequestTimeout:
        print(f"ether: nobody answered on {args.broker} (session '{args.session}')", file=sys.stderr)
        return EXIT_FAILED
    finally:
        bus.close()
    print(reply.get("result") or reply.get("error") or reply)
    return EXIT_OK if reply.get("ok") else EXIT_FAILED


def lite_bundle(args: argparse.Namespace) -> int:
    """``ether lite bundle``: build the circup bundle zip of ether_lite and print its path."""
    from ether.boards.lite_bundle import BundleError, build_bundle

    try:
        print(build_bundle(args.out))
    except BundleError as exc:
        print(f"ether lite bundle: {exc}", file=sys.stderr)
        return EXIT_FAILED
    return EXIT_OK


def bridge(args: argparse.Namespace) -> int:
    """``ether bridge PORT``: pipe a USB-serial board's MQTT bytes to the broker until Ctrl-C."""
    import ether
    from ether.boards.bridge import Bridge
    from ether.transport.broker import BrokerAddress

    try:
        address = BrokerAddress.parse(args.broker)
    except BrokerError as exc:
        print(f"ether bridge: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    ether._configure_logging()
    serial_bridge = Bridge(args.port, address, args.baud)
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: serial_bridge.stop.set())
    serial_bridge.serve()
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ether", description="Wire a lab together over MQTT.")
    commands = parser.add_subparsers(dest="command", required=True)

    p = commands.add_parser("run", help="run the instances of a YAML session file until Ctrl-C")
    p.add_argument("config", help="the session file (YAML)")
    p.add_argument("--broker", help="join this broker (mqtt://host:port) instead of starting one")
    p.add_argument(
        "--port", type=int, default=1883, help="port of the embedded broker (default 1883; 0 = any)"
    )
    p.add_argument(
        "--listen",
        default="127.0.0.1",
        help="address the embedded broker listens on (default 127.0.0.1); any other requires logins",
    )
    p.add_argument(
        "--timeout", type=float, default=30.0, help="seconds to wait for readiness and each stop step"
    )
    p.add_argument(
        "--headless", action="store_true", help="plain log lines, no monitor (also when not on a terminal)"
    )
    p.add_argument("--exit-with-stdin", action="store_true", help=argparse.SUPPRESS)
    p.set_defaults(handler=run)

    p = commands.add_parser("monitor", help="show a running session in the terminal and act on it")
    p.add_argument("--broker", default="mqtt://127.0.0.1:1883", help="default mqtt://127.0.0.1:1883")
    p.add_argument("--session", default="default", help="the session's name (default: default)")
    p.set_defaults(handler=monitor)

    p = commands.add_parser("graph", help="print the topic graph of a YAML file (mermaid) and its loose ends")
    p.add_argument("config")
    p.set_defaults(handler=graph)

    for command, help_text in (
        ("shutdown", "end a running session (every supervisor saves and stops its instances)"),
        ("stop", "stop one instance of a running session"),
        ("restart", "restart one instance of a running session"),
        ("launch", "start an instance of the session's YAML that is not running (autorun: false)"),
        ("pause", "hold data delivery to one instance"),
        ("resume", "deliver held and new data to one instance again"),
    ):
        p = commands.add_parser(command, help=help_text)
        if command != "shutdown":
            p.add_argument("instance")
        p.add_argument("--broker", default="mqtt://127.0.0.1:1883")
        p.add_argument("--session", default="default")
        p.add_argument("--timeout", type=float, default=30.0)
        p.set_defaults(handler=remote)

    p = commands.add_parser("broker", help="run the embedded MQTT broker in the foreground")
    p.add_argument("--host", default="127.0.0.1", help="listen address; any but loopback requires logins")
    p.add_argument("--port", type=int, default=1883)
    p.set_defaults(handler=broker)

    p = commands.add_parser("access", help="logins for a broker reachable from other machines")
    p.add_argument("action", choices=["add", "remove", "list"])
    p.add_argument("name", nargs="?", help="login name, e.g. a board's name")
    p.set_defaults(handler=access)
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
    from ether.data.recorded import add_commands as add_data_commands

    add_data_commands(commands)  # sessions, lineage, export
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    sys.exit(args.handler(args))
