"""The broker: where it is (:class:`BrokerAddress`) and the embedded amqtt broker run in its own process.

The embedded broker listens on 127.0.0.1 and works around two amqtt 0.12.1 faults: retained messages
sent at connect time to clients that never subscribed to them, and a 5 s wait at shutdown.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import subprocess
import sys
from dataclasses import dataclass
from urllib.parse import quote, unquote, urlsplit

from ether.transport.waiting import readline_with_timeout

DEFAULT_PORT = 1883
READY_LINE = "ether-broker-ready"


class BrokerError(RuntimeError):
    """The broker could not be started or reached."""


@dataclass(frozen=True)
class BrokerAddress:
    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    username: str | None = None
    password: str | None = None

    @classmethod
    def parse(cls, url: str) -> BrokerAddress:
        """``mqtt://[user:password@]host[:port]`` (``host:port`` alone is accepted too)."""
        if "://" not in url:
            url = f"mqtt://{url}"
        parts = urlsplit(url)
        if parts.scheme not in ("mqtt", "tcp"):
            raise BrokerError(f"broker url {url!r}: only mqtt:// is supported (got {parts.scheme}://)")
        try:
            port = parts.port or DEFAULT_PORT
        except ValueError as exc:
            raise BrokerError(f"broker url {url!r}: {exc}") from None
        return cls(
            host=parts.hostname or "127.0.0.1",
            port=port,
            username=unquote(parts.username) if parts.username else None,
            password=unquote(parts.password) if parts.password else None,
        )

    @property
    def url(self) -> str:
        """The address without credentials, for logs and for other processes."""
        return f"mqtt://{self.host}:{self.port}"

    @property
    def login_url(self) -> str:
        """The address with its login, for the processes of a session (never for logs)."""
        if not self.username:
            return self.url
        login = quote(self.username, safe="") + (f":{quote(self.password, safe='')}" if self.password else "")
        return f"mqtt://{login}@{self.host}:{self.port}"

    def to_dict(self) -> dict:
        return {"host": self.host, "port": self.port, "username": self.username, "password": self.password}


class EmbeddedBroker:
    """An amqtt broker in a child process; :meth:`start` returns once it accepts connections."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, password_file: str | None = None) -> None:
        self.host, self.requested_port, self.password_file = host, port, password_file
        self.process: subprocess.Popen | None = None
        self.address: BrokerAddress | None = None

    def launch(self) -> None:
        """Start the process without waiting (so instances can start importing meanwhile)."""
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-c",
                "from ether.transport.broker import main; main()",
                "--host",
                self.host,
                "--port",
                str(self.requested_port),
                "--exit-with-stdin",
                *(["--password-file", self.password_file] if self.password_file else []),
            ],
            stdin=subprocess.PIPE,  # the broker exits when this pipe closes: it never outlives us
            stdout=subprocess.PIPE,
            text=True,
            start_new_session=True,  # Ctrl-C goes to the supervisor, which stops things in order
        )

    def wait_ready(self, timeout: float = 15.0) -> BrokerAddress:
        """Block until the broker reports its port (a readiness line on its stdout)."""
        assert self.process and self.process.stdout
        line = readline_with_timeout(self.process.stdout, timeout)
        if not line.startswith(READY_LINE):
            code = self.process.poll()
            raise BrokerError(
                f"embedded broker on {self.host}:{self.requested_port} did not start"
                f" (exit code {code}); is the port already in use?"
            )
        info = json.loads(line[len(READY_LINE) :])
        # processes on this machine connect through loopback, whatever address the broker listens on
        self.address = BrokerAddress("127.0.0.1", int(info["port"]))
        return self.address

    def start(self, timeout: float = 15.0) -> BrokerAddress:
        self.launch()
        return self.wait_ready(timeout)

    def stop(self, timeout: float = 5.0) -> None:
        if not self.process or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


# -- the broker process ------------------------------------------------------------------------


def _broker_class():
    from amqtt.broker import Broker

    class EtherBroker(Broker):
        """amqtt's broker with the retained-message leak fixed."""

        async def _publish_retained_messages_for_subscription(self, subscription, session):  # type: ignore[override]
            # amqtt calls this at connect time for *every* subscription in the broker; only the
            # session's own subscriptions should receive retained messages.
            topic_filter = subscription[0]
            if not any(s is session for s, _ in self._subscriptions.get(topic_filter, ())):
                return
            await super()._publish_retained_messages_for_subscription(subscription, session)

    return EtherBroker


async def _serve(host: str, port: int, exit_with_stdin: bool, password_file: str | None) -> None:
    auth = (
        {"amqtt.plugins.authentication.FileAuthPlugin": {"password_file": password_file}}
        if password_file
        else {"amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True}}
    )
    config = {"listeners": {"default": {"type": "tcp", "bind": f"{host}:{port}"}}, "plugins": auth}
    broker = _broker_class()(config)
    await broker.start()
    server = broker._servers["default"].instance
    bound_port = server.sockets[0].getsockname()[1]
    if exit_with_stdin:  # started by a session: it reads the port from this line
        print(READY_LINE + json.dumps({"port": bound_port, "pid": os.getpid()}), flush=True)
    else:
        logins = "logins required" if password_file else "no login needed"
        print(f"Ether broker on mqtt://{host}:{bound_port} ({logins}). Press Ctrl-C to stop.", flush=True)

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    if exit_with_stdin:  # started by a supervisor: its death closes our stdin
        loop.add_reader(sys.stdin.fileno(), lambda: sys.stdin.read(1) or stop.set())
    await stop.wait()
    # amqtt's own shutdown waits up to 5 s for broadcast tasks; a broker holds nothing worth saving,
    # so closing the listening socket and leaving at once is the clean and fast way out.
    server.close()
    sys.stdout.flush()
    os._exit(0)


def _run(serve) -> None:
    """Run the broker on uvloop where it is installed (faster), else on asyncio's own loop. Both set
    TCP_NODELAY on every accepted socket."""
    try:
        import uvloop
    except ImportError:
        asyncio.run(serve)
        return
    uvloop.run(serve)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="ether broker", description="Run Ether's embedded MQTT broker.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT)
    parser.add_argument("--password-file", help="require logins from this file (see `ether access`)")
    parser.add_argument("--exit-with-stdin", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s broker %(levelname)s %(message)s")
    from ether.transport.access import needs_credentials

    if needs_credentials(args.host) and not args.password_file:
        print(
            f"ether broker: listening on {args.host} exposes the broker beyond this machine; it then"
            " requires logins: give --password-file (create logins with `ether access add NAME`)",
            file=sys.stderr,
        )
        sys.exit(2)
    try:
        _run(_serve(args.host, args.port, args.exit_with_stdin, args.password_file))
    except OSError as exc:
        print(f"ether broker: cannot listen on {args.host}:{args.port}: {exc}", file=sys.stderr)
        sys.exit(2)
