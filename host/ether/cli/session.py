"""``ether run``, ``ether monitor``, ``ether graph`` and the commands to a running session
(``shutdown``, ``stop``, ``restart``, ``launch``, ``pause``, ``resume``)."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading

from ether import exits

CONTROL_COMMANDS = (
    ("shutdown", "end a running session (every supervisor saves and stops its instances)"),
    ("stop", "stop one instance of a running session"),
    ("restart", "restart one instance of a running session"),
    ("launch", "start an instance of the session's YAML that is not running (autorun: false)"),
    ("pause", "hold data delivery to one instance"),
    ("resume", "deliver held and new data to one instance again"),
)


def add_commands(commands: argparse._SubParsersAction) -> None:
    from ether.cli.broker import byte_size
    from ether.cli.experiments import duration

    p = commands.add_parser("run", help="run the instances of a YAML session file until Ctrl-C")
    p.add_argument("config", help="the session file (YAML)")
    p.add_argument(
        "--broker",
        help="join this broker (mqtt://host:port) instead of starting one; 'mosquitto' starts a Mosquitto",
    )
    p.add_argument(
        "--port", type=int, default=1883, help="port of the embedded broker (default 1883; 0 = any)"
    )
    p.add_argument(
        "--listen",
        default="127.0.0.1",
        help="address the embedded broker listens on (default 127.0.0.1); any other requires logins",
    )
    p.add_argument(
        "--listener",
        action="append",
        default=[],
        metavar="SCHEME:PORT[:CERT:KEY]",
        help="the embedded broker listens also for mqtts (TLS), ws or wss (WebSockets) on PORT, "
        "e.g. ws:9001 or mqtts:8883:server.pem:server.key (docs/operations.md)",
    )
    p.add_argument(
        "--timeout", type=float, default=30.0, help="seconds to wait for readiness and each stop step"
    )
    p.add_argument(
        "--headless", action="store_true", help="plain log lines, no monitor (also when not on a terminal)"
    )
    p.add_argument(
        "--max-payload",
        type=byte_size,
        help="largest message in bytes, or a size such as 64MiB (default: limits.max_payload, 16MiB)",
    )
    p.add_argument(
        "--for",
        dest="duration",
        type=duration,
        metavar="DURATION",
        help="end the session cleanly, with its drain, after this long: 90s, 10m, 1h30m (docs/experiments.md)",
    )
    p.add_argument("--exit-with-stdin", action="store_true", help=argparse.SUPPRESS)
    p.set_defaults(handler=run)

    p = commands.add_parser("monitor", help="show a running session in the terminal and act on it")
    p.add_argument("--broker", default="mqtt://127.0.0.1:1883", help="default mqtt://127.0.0.1:1883")
    p.add_argument("--session", default="default", help="the session's name (default: default)")
    p.add_argument(
        "--data-qos",
        type=int,
        choices=(0, 1),
        default=0,
        help="QoS of the data topics' subscription: 0 (default, lighter; a monitor that falls behind "
        "may miss some) or 1 (every message, each acknowledged)",
    )
    p.set_defaults(handler=monitor)

    p = commands.add_parser("graph", help="print the topic graph of a YAML file (mermaid) and its loose ends")
    p.add_argument("config")
    p.set_defaults(handler=graph)

    for command, help_text in CONTROL_COMMANDS:
        p = commands.add_parser(command, help=help_text)
        if command != "shutdown":
            p.add_argument("instance")
        p.add_argument("--broker", default="mqtt://127.0.0.1:1883")
        p.add_argument("--session", default="default")
        p.add_argument("--timeout", type=float, default=30.0)
        p.set_defaults(handler=remote)


def run(args: argparse.Namespace) -> int:
    """Start the session of a YAML file, run ``@ether_start`` methods, stop cleanly on Ctrl-C."""
    from ether.config import ConfigError
    from ether.logs import setup_logging
    from ether.monitor.link import on_terminal
    from ether.processes import announce_ready, on_lifeline_cut
    from ether.runtime.session import new_session
    from ether.runtime.supervisor import InstanceStartError
    from ether.transport.broker import BrokerError

    if not args.headless and on_terminal():  # Textual draws on stderr: a file there means headless
        from ether.monitor import run_on_terminal

        return run_on_terminal(args)  # the same session, as a child process, behind the monitor
    from ether.transport.broker import Listener

    setup_logging()
    try:
        listeners = tuple(Listener.parse(text) for text in args.listener)
        if listeners and args.broker:
            raise BrokerError(f"it adds ports to the embedded broker; --broker {args.broker} has its own")
    except BrokerError as exc:
        print(f"ether: --listener: {exc}", file=sys.stderr)
        return exits.CONFIG
    try:
        session = new_session(
            args.config,
            broker_url=args.broker,
            port=args.port,
            listen=args.listen,
            max_payload=args.max_payload,
            listeners=listeners,
        )
    except ConfigError as exc:
        print(f"ether: {exc}", file=sys.stderr)
        return exits.CONFIG
    except BrokerError as exc:  # the url of --broker (one in the file is a ConfigError)
        print(f"ether: --broker: {exc}", file=sys.stderr)
        return exits.CONFIG
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    try:
        session.open(args.timeout)
        session.start(args.timeout)
    except (InstanceStartError, BrokerError) as exc:
        print(f"ether: {exc}", file=sys.stderr)
        session.close()
        return exits.FAILED
    where = f"on {session.address.url} (session '{session.topics.session}')"
    print(f"Ether is running {where}. Press Ctrl-C to stop.", file=sys.stderr, flush=True)
    threading.Thread(target=_stop_when, args=(session.end_requested, stop), daemon=True).start()
    if args.exit_with_stdin:  # started by the monitor of `ether run`: its end (even kill -9) ends us
        on_lifeline_cut(stop.set)
        announce_ready("session", url=session.address.url, session=session.topics.session)
    if not stop.wait(args.duration) and args.duration:
        print(f"ether: --for {args.duration:g} s is over", file=sys.stderr, flush=True)
    print("Stopping: save_all -> cleanup -> exit ...", file=sys.stderr, flush=True)
    try:
        codes = session.close(args.timeout)
    except Exception:
        logging.getLogger("ether").exception("ether: the session crashed while stopping")
        return _end_of_run(session, exits.CRASHED)
    bad = {name: code for name, code in codes.items() if code != 0}
    if bad:
        print(f"ether: instances did not stop cleanly: {bad}", file=sys.stderr)
    return _end_of_run(session, exits.FAILED if bad else exits.OK)


def _end_of_run(session, code: int) -> int:
    """Print the seal line last (after every child's output) and exit with what the seal says."""
    from ether.data.recorder.recording import seal, seal_line
    from ether.data.recorder.store import COMPLETE, CRASHED, INCOMPLETE, RUNNING, connect, read_manifest

    run_dir = session.recording.run_dir
    if run_dir is None:  # not recorded
        return code
    db = connect(run_dir, readonly=True)
    status = read_manifest(db).get("status")
    db.close()
    if status == RUNNING:  # the session crashed before it could seal
        status = seal(run_dir, {}, CRASHED)
    print(seal_line(run_dir), file=sys.stderr, flush=True)
    codes: dict[str | None, int] = {COMPLETE: code, INCOMPLETE: exits.INCOMPLETE, CRASHED: exits.CRASHED}
    return codes.get(status, exits.FAILED)


def _stop_when(ended: threading.Event, stop: threading.Event) -> None:
    ended.wait()
    stop.set()


def monitor(args: argparse.Namespace) -> int:
    """``ether monitor``: the terminal UI on a running session (q detaches, e ends the session)."""
    from ether.monitor import attach

    return attach(args.broker, args.session, args.data_qos)


def graph(args: argparse.Namespace) -> int:
    """Print the topic graph (mermaid) and warn about loose ends, without starting anything."""
    from ether.config import ConfigError, load
    from ether.runtime.graph import TopicGraph

    try:
        topic_graph = TopicGraph.of(load(args.config))
    except ConfigError as exc:
        print(f"ether: {exc}", file=sys.stderr)
        return exits.CONFIG
    print(topic_graph.mermaid())
    for warning in topic_graph.warnings():
        print(f"warning: {warning}", file=sys.stderr)
    return exits.OK


def connect_cli(args: argparse.Namespace):
    """A bus of this ``ether`` command on ``args.broker`` in ``args.session``, logged in as the CLI, and
    the name it signs with; None (said on stderr) when the broker cannot be reached."""
    import os
    import socket

    from ether.transport.access import client_address
    from ether.transport.broker import BrokerAddress, BrokerError
    from ether.transport.bus import Bus

    name = f"cli-{socket.gethostname()}-{os.getpid()}"
    address = client_address(BrokerAddress.parse(args.broker), args.session, "cli")
    bus = Bus(address, client_id=f"ether-{args.session}-{name}")
    try:
        bus.connect()
    except BrokerError as exc:
        print(f"ether: {exc}", file=sys.stderr)
        return None
    return name, bus


def remote(args: argparse.Namespace) -> int:
    """Send a command to a running session: shutdown, stop/restart/launch an instance, pause/resume."""

    from ether.contract.messages import InstanceCommand, SessionCommand, SupervisorStatus, read_reply
    from ether.contract.topics import Topics
    from ether.contract.wire import Stamper, decode_object
    from ether.transport.requests import Requester, RequestTimeout

    topics = Topics(args.session)
    connected = connect_cli(args)
    if connected is None:
        return exits.FAILED
    name, bus = connected
    supervisors: dict[str, dict] = {}

    def on_status(topic: str, raw: bytes) -> None:
        status = SupervisorStatus.read(decode_object(raw))  # a status of the contract, or nothing
        supervisors[topic] = status.model_dump() if status else {}

    bus.subscribe(topics.supervisor_status("+"), on_status)
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
        return exits.FAILED
    control: InstanceCommand | SessionCommand
    if args.command in ("pause", "resume"):
        topic, control = topics.instance_control(args.instance), InstanceCommand(command=args.command)
    else:
        control = SessionCommand(command=args.command, instance=getattr(args, "instance", None))
        topic = topics.session_control()
    try:
        reply = read_reply(requester.request(topic, control, args.timeout))
    except RequestTimeout:
        print(f"ether: nobody answered on {args.broker} (session '{args.session}')", file=sys.stderr)
        return exits.FAILED
    finally:
        bus.close()
    if not reply.ok:
        print(f"ether: {reply.error.message}", file=sys.stderr)
        return exits.FAILED
    print(reply.result if reply.result is not None else f"{args.command}: done")
    return exits.OK
