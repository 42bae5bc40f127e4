"""The broker: where it is (:class:`BrokerAddress`) and the embedded amqtt broker run in its own process.

The embedded broker checks every login with an amqtt plugin (``broker_plugins``): a connection is a
:class:`~ether.transport.permissions.Login` (derived from the broker's key, a board's from the
password file, or anonymous on loopback); every publish and subscribe is checked against
:mod:`ether.transport.permissions` by the broker itself (amqtt's plugin path would also run, as a
task, for each delivery to each subscriber).

The embedded broker listens on 127.0.0.1 (by default) and works around four amqtt 0.12.1 faults:
retained messages sent at connect time to clients that never subscribed to them; a client's last
messages dropped when it disconnects right after sending them (acknowledged, never delivered);
keep-alive not enforced (a silent client stayed connected forever: now it is dropped after 1.5 x its
keep-alive, so its Last Will tells everyone, also when it stops in the middle of a packet; a connection
that sends no CONNECT is closed after ``CONNECT_TIMEOUT``); and a 5 s wait at shutdown.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass, replace
from urllib.parse import parse_qsl, quote, unquote, urlencode, urlsplit

from ether import exits
from ether.contract.wire import DEFAULT_MAX_PAYLOAD
from ether.logs import collapse_repeats, setup_logging
from ether.processes import Child, announce_ready, backoff, on_lifeline_cut, read_spec
from ether.transport import limits
from ether.transport.limits import PayloadLimit

DEFAULT_PORT = 1883
MANAGED_MOSQUITTO = "mosquitto"  # --broker / broker: this word starts a Mosquitto of the session's own


class BrokerError(RuntimeError):
    """The broker could not be started or reached."""


SCHEMES = {"mqtt": 1883, "mqtts": 8883, "ws": 80, "wss": 443}  # each with its default port
TLS_SCHEMES = ("mqtts", "wss")
TLS_OPTIONS = ("ca", "cert", "key")  # the url's query parameters: file paths
DEFAULT_WS_PATH = "/mqtt"


@dataclass(frozen=True)
class BrokerAddress:
    """Where a broker is and how to reach it: ``scheme`` mqtt (plain TCP), mqtts (TLS), ws or wss
    (MQTT over WebSockets, plain or TLS, at ``path``). Over TLS the broker's certificate and host name
    are checked against ``ca`` (a PEM file; the system's CAs if None); ``cert``/``key``: a client
    certificate, for brokers that ask for one."""

    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    username: str | None = None
    password: str | None = None
    max_payload: int = DEFAULT_MAX_PAYLOAD  # bytes of one message, enforced by the bus both ways
    scheme: str = "mqtt"
    ca: str | None = None
    cert: str | None = None
    key: str | None = None
    path: str = DEFAULT_WS_PATH  # of a WebSocket url

    @classmethod
    def parse(cls, url: str) -> BrokerAddress:
        """``SCHEME://[user:password@]host[:port][/path][?ca=FILE&cert=FILE&key=FILE]``, SCHEME one of
        mqtt, mqtts, ws, wss (``host:port`` alone means mqtt://)."""
        if "://" not in url:
            url = f"mqtt://{url}"
        parts = urlsplit(url)
        scheme = "mqtt" if parts.scheme == "tcp" else parts.scheme
        shown = _without_password(url)
        if scheme not in SCHEMES:
            raise BrokerError(
                f"broker url {shown!r}: the scheme must be mqtt://, mqtts:// (TLS), ws:// or wss://"
                f" (got {parts.scheme}://)"
            )
        try:
            port = parts.port or SCHEMES[scheme]
        except ValueError as exc:
            raise BrokerError(f"broker url {shown!r}: {exc}") from None
        options = _tls_options(shown, parts.query, scheme)
        if parts.path not in ("", "/") and scheme not in ("ws", "wss"):
            raise BrokerError(f"broker url {shown!r}: only a ws:// or wss:// url has a path")
        return cls(
            host=parts.hostname or "127.0.0.1",
            port=port,
            username=unquote(parts.username) if parts.username else None,
            password=unquote(parts.password) if parts.password else None,
            scheme=scheme,
            path=parts.path or DEFAULT_WS_PATH,
            ca=options.get("ca"),
            cert=options.get("cert"),
            key=options.get("key"),
        )

    @property
    def tls(self) -> bool:
        return self.scheme in TLS_SCHEMES

    @property
    def websockets(self) -> bool:
        return self.scheme in ("ws", "wss")

    @property
    def url(self) -> str:
        """The address without credentials or TLS files, for logs."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host}:{self.port}" + (self.path if self.websockets else "")

    @property
    def login_url(self) -> str:
        """The address with its login and TLS files, for the processes of a session (never for logs)."""
        url = self.url
        if self.username:
            login = quote(self.username, safe="")
            login += f":{quote(self.password, safe='')}" if self.password else ""
            url = url.replace("://", f"://{login}@", 1)
        query = urlencode({k: getattr(self, k) for k in TLS_OPTIONS if getattr(self, k)})
        return f"{url}?{query}" if query else url

    def to_dict(self) -> dict:
        return {
            "host": self.host,
            "port": self.port,
            "username": self.username,
            "password": self.password,
            "max_payload": self.max_payload,
            "scheme": self.scheme,
            "ca": self.ca,
            "cert": self.cert,
            "key": self.key,
            "path": self.path,
        }


def _without_password(url: str) -> str:
    parts = urlsplit(url)
    if parts.password is None:
        return url
    return url.replace(f":{parts.password}@", ":***@", 1)


def _tls_options(url: str, query: str, scheme: str) -> dict[str, str]:
    """The url's ``?ca=&cert=&key=``: known names, each once, only on a TLS url, cert and key together."""
    options: dict[str, str] = {}
    for name, value in parse_qsl(query, keep_blank_values=True):
        if name not in TLS_OPTIONS:
            raise BrokerError(f"broker url {url!r}: unknown option {name!r} (known: ca, cert, key)")
        if name in options:
            raise BrokerError(f"broker url {url!r}: {name!r} is given twice")
        if not value:
            raise BrokerError(f"broker url {url!r}: {name!r} needs a file path")
        options[name] = value
    if options and scheme not in TLS_SCHEMES:
        raise BrokerError(f"broker url {url!r}: ca, cert and key are TLS options: use mqtts:// or wss://")
    if ("cert" in options) != ("key" in options):
        raise BrokerError(f"broker url {url!r}: a client certificate needs both cert= and key=")
    return options


def needs_credentials(host: str) -> bool:
    """True unless a broker listening on ``host`` only accepts connections from this machine."""
    if host == "localhost":
        return False
    try:
        return not ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name: it may resolve to anything
        return True


def local_host(listen: str) -> str:
    """Where processes on this machine dial a broker that listens on ``listen``."""
    if listen in ("", "0.0.0.0"):
        return "127.0.0.1"
    if listen == "::":
        return "::1"
    return listen


@dataclass(frozen=True)
class Listener:
    """One more port of the embedded broker besides its plain MQTT one: ``scheme`` mqtts (TLS), ws or
    wss (WebSockets, plain or TLS, at any path); a TLS one serves ``cert`` with ``key`` (PEM files).
    The same logins and permissions apply on every port."""

    scheme: str
    port: int = 0
    cert: str | None = None
    key: str | None = None

    def __post_init__(self) -> None:
        if self.scheme not in ("mqtts", "ws", "wss"):
            raise BrokerError(f"a broker listener is mqtts, ws or wss (not {self.scheme!r})")
        tls = self.scheme in TLS_SCHEMES
        if tls and not (self.cert and self.key):
            raise BrokerError(f"a {self.scheme} listener needs the server's certificate and key files")
        if not tls and (self.cert or self.key):
            raise BrokerError(f"a {self.scheme} listener is not TLS: it takes no certificate (use wss)")
        for what, path in (("certificate", self.cert), ("key", self.key)):
            if path and not os.path.isfile(path):
                raise BrokerError(f"the {self.scheme} listener's {what} file {path!r} does not exist")

    @classmethod
    def parse(cls, text: str) -> Listener:
        """``SCHEME:PORT[:CERT:KEY]``, e.g. ``mqtts:8883:server.pem:server.key`` or ``ws:9001``."""
        scheme, _, rest = text.partition(":")
        port, *files = rest.split(":") if rest else ("",)
        if not port.isdigit() or len(files) not in (0, 2):
            raise BrokerError(f"listener {text!r}: write SCHEME:PORT or SCHEME:PORT:CERT:KEY")
        return cls(scheme, int(port), *files) if files else cls(scheme, int(port))

    def amqtt_config(self, host: str) -> dict:
        config: dict = {
            "type": "ws" if self.scheme in ("ws", "wss") else "tcp",
            "bind": f"{host}:{self.port}",
        }
        if self.cert:
            config |= {"ssl": True, "certfile": self.cert, "keyfile": self.key}
        return config


class SupervisedBroker:
    """A broker in a child process that the session restarts on its port whenever it dies (the
    embedded amqtt broker, a managed Mosquitto): :meth:`launch` and :meth:`wait_ready` start it,
    :attr:`child` is its process, :meth:`stop` ends it for good."""

    child: Child | None
    restarts: int
    _stopping: threading.Event
    _lock: threading.Lock  # a restart and stop() never overlap

    def launch(self) -> None:
        raise NotImplementedError

    def wait_ready(self, timeout: float = 15.0) -> BrokerAddress:
        raise NotImplementedError

    def _end(self, timeout: float) -> None:
        """Stop the broker's process (``stop`` holds the lock and has said no restart)."""
        if self.child is not None:
            self.child.stop(timeout)

    def supervise(self, restarted: Callable[[int, int | None], None], lost: Callable[[str], None]) -> None:
        """Restart the broker on its port (same key, same logins) whenever it dies, so its clients
        reconnect and their outboxes resend; ``restarted(restarts, exit_code)`` after each restart,
        ``lost(reason)`` once if it cannot be restarted (from a thread of its own)."""
        child = self.child
        if child is None:
            raise RuntimeError(f"{type(self).__name__}.supervise() before start()")
        child.on_exit(lambda code: self._restart(child, code, restarted, lost))

    def _restart(self, died: Child, code: int, restarted, lost) -> None:
        with self._lock:
            if self._stopping.is_set() or died is not self.child:
                return
            log.error("the broker (pid %s) died with exit code %s; restarting it", died.pid, code)
            problem = ""
            for attempt in range(1, RESTART_ATTEMPTS + 1):
                self.launch()
                try:
                    self.wait_ready(RESTART_TIMEOUT)
                except BrokerError as exc:
                    problem = str(exc)
                    if self.child is not None:
                        self.child.stop(RESTART_TIMEOUT)  # it has exited, or is exiting
                    if self._stopping.wait(backoff(attempt, RESTART_BACKOFF)):
                        return
                    continue
                self.restarts += 1
                break
            else:
                lost(f"the broker died (exit code {code}) and could not be restarted: {problem}")
                return
        restarted(self.restarts, code)
        self.supervise(restarted, lost)

    def stop(self, timeout: float = 5.0) -> None:
        self._stopping.set()
        with self._lock:
            self._end(timeout)


class EmbeddedBroker(SupervisedBroker):
    """An amqtt broker in a child process; :meth:`start` returns once it accepts connections.
    ``secret``: the broker key the session's logins are derived from (``signing.password``);
    ``listeners``: more ports (TLS, WebSockets), whose bound ports :attr:`ports` lists once started."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        password_file: str | None = None,
        max_payload: int = DEFAULT_MAX_PAYLOAD,
        session: str | None = None,
        secret: bytes | None = None,
        listeners: tuple[Listener, ...] = (),
    ) -> None:
        self.host, self.requested_port, self.password_file = host, port, password_file
        self.max_payload, self.session, self.secret = max_payload, session, secret
        self.listeners = listeners
        self.ports: dict[Listener, int] = {}
        self.child: Child | None = None
        self.pid: int | None = None
        self.restarts = 0
        self._stopping = threading.Event()
        self._lock = threading.Lock()  # a restart and stop() never overlap

    def launch(self) -> None:
        """Start the process without waiting (so instances can start importing meanwhile)."""
        self.child = Child("broker", "ether.transport.broker", stdout=True)
        self.child.send(
            {
                "host": self.host,
                "port": self.requested_port,
                "password_file": self.password_file,
                "max_payload": self.max_payload,
                "session": self.session,
                "secret": self.secret.hex() if self.secret else None,
                "listeners": [vars(listener) for listener in self.listeners],
            }
        )

    def wait_ready(self, timeout: float = 15.0) -> BrokerAddress:
        """Block until the broker reports its port (its ready line)."""
        if self.child is None:
            raise RuntimeError("EmbeddedBroker.wait_ready() before launch()")
        info = self.child.wait_ready(timeout)
        if info is None:
            raise BrokerError(
                f"embedded broker on {self.host}:{self.requested_port} did not start"
                f" (exit code {self.child.process.poll()}); is the port already in use?"
            )
        self.pid = self.child.pid
        bound = [
            replace(listener, port=port) for listener, port in zip(self.listeners, info["ports"], strict=True)
        ]
        self.ports = {listener: listener.port for listener in bound}
        self.listeners = tuple(bound)  # a restart listens where the clients dial
        self.requested_port = int(info["port"])
        return BrokerAddress(local_host(self.host), self.requested_port, max_payload=self.max_payload)

    def start(self, timeout: float = 15.0) -> BrokerAddress:
        self.launch()
        return self.wait_ready(timeout)


# -- the broker process ------------------------------------------------------------------------


log = logging.getLogger("ether.broker")
RESTART_ATTEMPTS = 3  # a broker that dies is started again on its port, at most this many tries in a row
RESTART_TIMEOUT = 15.0  # seconds each try may take to accept connections
RESTART_BACKOFF = 0.2  # seconds before the second try, doubling
KEEP_ALIVE_GRACE = 1.5  # MQTT 3.1.1 section 3.1.2.10: silent for 1.5 x keep-alive means gone
CONNECT_TIMEOUT = 10.0  # seconds a new connection may take to send its CONNECT


def _broker_class():
    import asyncio

    from amqtt.adapters import StreamReaderAdapter, StreamWriterAdapter
    from amqtt.broker import Broker
    from amqtt.contexts import Action
    from amqtt.errors import AMQTTError
    from amqtt.mqtt.protocol.broker_handler import BrokerProtocolHandler

    from ether.contract.topics import SHARE_PREFIX
    from ether.transport import broker_delivery
    from ether.transport.broker_routing import Routing
    from ether.transport.permissions import may_publish, may_subscribe

    def drop_silent_client(handler: BrokerProtocolHandler) -> None:
        # amqtt reads with the keep-alive as timeout, then ignores the timeout: close the connection
        # as abnormal, so the broker publishes the client's Last Will
        asyncio.ensure_future(handler.handle_connection_closed())

    BrokerProtocolHandler.handle_read_timeout = drop_silent_client  # this process runs only the broker
    broker_delivery.install(BrokerProtocolHandler)

    class TimedReader(StreamReaderAdapter):
        """amqtt reads a packet's rest, and a new connection's CONNECT, without a timeout: a client that
        stops talking mid-packet (or never says CONNECT) held its connection forever. Each read that
        must wait for the network gets ``timeout`` seconds (no wait, no timer, when the bytes are here;
        a timer, not a task, when they are not)."""

        timeout: float | None = CONNECT_TIMEOUT  # then 1.5 x the client's keep-alive; None if it has none

        async def read(self, n: int = -1) -> bytes:
            if self.timeout is None or n == -1 or len(self._reader._buffer) >= n:
                return await super().read(n)
            if sys.version_info < (3, 11):  # no asyncio.timeout yet
                return await asyncio.wait_for(self._reader.readexactly(n), self.timeout)
            async with asyncio.timeout(self.timeout):
                return await self._reader.readexactly(n)

    class EtherBroker(PayloadLimit, Routing, Broker):
        """amqtt's broker with the retained-message leak, the lost last messages and keep-alive fixed,
        Ether's permissions, the payload limit (``limits``) and its routing cached (``broker_routing``)."""

        async def _topic_filtering(self, session, topic: str, action) -> bool:
            if action == Action.RECEIVE:  # its subscription was checked
                return True
            login = getattr(session, "ether_login", None)  # set by broker_plugins.EtherLogins
            if login is None:
                return False
            if action == Action.SUBSCRIBE and topic.startswith(SHARE_PREFIX):  # amqtt would match nothing
                log.error(
                    "broker: %s: the embedded broker has no shared subscriptions (use Mosquitto,"
                    " or a pool: workers: N)",
                    topic,
                )
                return False
            allowed = may_publish(login, topic) if action == Action.PUBLISH else may_subscribe(login, topic)
            if not allowed:
                log.warning("broker: %s may not %s %s", login.username or login.role, action.value, topic)
            return allowed

        async def stream_connected(self, reader, writer, listener_name: str) -> None:
            await self._client_connected(listener_name, TimedReader(reader), StreamWriterAdapter(writer))

        async def _initialize_client_session(self, reader, writer, *args, **kwargs):
            try:
                handler, session = await super()._initialize_client_session(reader, writer, *args, **kwargs)
            except asyncio.TimeoutError:
                log.warning(
                    "broker: a connection from %s:%s sent no CONNECT in %g s", *args[:2], CONNECT_TIMEOUT
                )
                await writer.close()
                raise AMQTTError("no CONNECT in time") from None
            session.keep_alive *= KEEP_ALIVE_GRACE  # the read timeout; 0 (no keep-alive) stays 0
            if isinstance(reader, TimedReader):
                reader.timeout = session.keep_alive or None
                # the reader times out itself: amqtt would wrap the read of every packet in a task of
                # its own with that timeout, and re-arm a timer (whose handler does nothing) per packet sent
                session.keep_alive, handler.keepalive_timeout = 0, None
            return handler, session

        async def _handle_disconnect(self, client_session, handler, disconnect_waiter):
            # amqtt acknowledges a PUBLISH when it queues it, and stops reading that queue when the
            # client disconnects: deliver what is still queued before the session ends (and its Will)
            queue = client_session.delivered_message_queue
            pending = [queue.get_nowait() for _ in range(queue.qsize())]
            for message in pending:
                delivered = asyncio.get_running_loop().create_future()
                delivered.set_result(message)
                await self._handle_message_delivery(client_session, handler, delivered)
            await super()._handle_disconnect(client_session, handler, disconnect_waiter)

        async def _publish_retained_messages_for_subscription(self, subscription, session):
            # amqtt calls this at connect time for *every* subscription in the broker; only the
            # session's own subscriptions should receive retained messages.
            topic_filter = subscription[0]
            if not any(s is session for s, _ in self._subscriptions.get(topic_filter, ())):
                return
            await super()._publish_retained_messages_for_subscription(subscription, session)

    return EtherBroker


async def _serve(
    host: str,
    port: int,
    password_file: str | None,
    secret: str | None,
    child: bool,
    max_payload: int,
    session: str | None,
    listeners: tuple[Listener, ...] = (),
) -> None:
    import asyncio

    from ether.transport.access import BrokerKey
    from ether.transport.signing import new_secret

    secret = secret or new_secret().hex()

    checks = {"secret": secret or "", "password_file": password_file or "", "anonymous": not password_file}
    plugins = {"ether.transport.broker_plugins.EtherLogins": checks}
    servers = {"default": {"type": "tcp", "bind": f"{host}:{port}"}}
    servers |= {f"extra{i}": listener.amqtt_config(host) for i, listener in enumerate(listeners)}
    config = {"listeners": servers, "plugins": plugins}
    limits.install(max_payload)
    broker = _broker_class()(config)
    broker.ether_session = session
    await broker.start()
    server = broker._servers["default"].instance
    bound_port = server.sockets[0].getsockname()[1]
    extra_ports = [_bound_port(broker._servers[f"extra{i}"].instance) for i in range(len(listeners))]
    # how sessions and `ether` commands of this user log in (and sign) on this broker, on every port
    keys = [
        BrokerKey.create(p, logins=True, pid=os.getpid(), secret=bytes.fromhex(secret))
        for p in (bound_port, *extra_ports)
    ]
    if session is not None:
        threading.Thread(
            target=_publish_own_logs,
            args=(host, bound_port, keys[0], session),
            name="ether-broker-logs",
            daemon=True,
        ).start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    if child:  # started by a session: it reads the port from our ready line, and its end is ours

        def parent_gone() -> None:
            loop.call_soon_threadsafe(stop.set)

        on_lifeline_cut(parent_gone)
        announce_ready("broker", port=bound_port, ports=extra_ports, pid=os.getpid())
    else:
        logins = "logins required" if password_file else "no login needed"
        urls = [f"mqtt://{host}:{bound_port}"]
        urls += [
            f"{listener.scheme}://{host}:{p}" for listener, p in zip(listeners, extra_ports, strict=True)
        ]
        print(f"Ether broker on {', '.join(urls)} ({logins}). Press Ctrl-C to stop.", flush=True)
    await stop.wait()
    # amqtt's own shutdown waits up to 5 s for broadcast tasks and drops what they still carry: close
    # the listening socket, pass on what was acknowledged to its subscribers (bounded), and leave.
    server.close()
    await _pass_on_acknowledged(broker, DRAIN_TIMEOUT)
    for key in keys:
        key.remove()
    sys.stdout.flush()
    os._exit(exits.OK)


def _bound_port(server) -> int:
    """The port an asyncio (TCP) or websockets server listens on."""
    sockets = getattr(server, "sockets", None) or server.server.sockets
    return int(list(sockets)[0].getsockname()[1])


BROKER_LOG_RATE, BROKER_LOG_BURST = 20.0, 100  # log lines the broker publishes a second, and at once


def _publish_own_logs(host: str, port: int, key, session: str) -> None:
    """The broker's lines go to the session store like every process's: through a client of its own
    (connected from this thread: the broker's loop must be free to accept it)."""
    from ether.contract.topics import Topics
    from ether.transport.bus import Bus
    from ether.transport.log_publishing import publish_logs
    from ether.transport.permissions import Login

    local = "127.0.0.1" if host in ("", "0.0.0.0", "::") else host
    address = key.address(BrokerAddress(local, port), Login("supervisor", session, "broker"))
    bus = Bus(address, client_id=f"ether-{session}-broker-{os.getpid()}")
    try:
        bus.connect()
    except BrokerError as exc:
        log.warning("broker: its log lines are not kept in the session store: %s", exc)
        return
    # slower than other processes (a busy broker must not feed itself), repeats collapsed as on stderr
    collapse_repeats(
        publish_logs(bus, Topics(session).log("broker"), rate=BROKER_LOG_RATE, burst=BROKER_LOG_BURST)
    )


DRAIN_TIMEOUT = 2.0  # seconds a stopping broker gives its subscribers to take what it acknowledged


async def _pass_on_acknowledged(broker, timeout: float) -> None:
    """Before the broker exits: deliver the messages it has acknowledged to their publishers but not yet
    sent on (a board forgets a reading once acknowledged), within ``timeout`` seconds. Polls amqtt's
    queues: they signal nothing when they empty."""
    import asyncio

    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout

    def carrying() -> bool:
        if not broker._broadcast_queue.empty() or any(not t.done() for t in broker._tasks_queue):
            return True
        return any(not s.delivered_message_queue.empty() for s, _ in broker._sessions.values())

    while carrying() and loop.time() < deadline:
        await asyncio.sleep(0.005)


def serve(
    host: str,
    port: int,
    password_file: str | None = None,
    secret: str | None = None,
    *,
    child: bool = False,
    max_payload: int = DEFAULT_MAX_PAYLOAD,
    session: str | None = None,
    listeners: tuple[Listener, ...] = (),
) -> None:
    """Run the broker in this process until SIGINT/SIGTERM (or, for a ``child``, its parent's end);
    a message above ``max_payload`` bytes is refused (``limits``)."""
    if needs_credentials(host) and not password_file:
        raise BrokerError(
            f"listening on {host} exposes the broker beyond this machine; it then requires logins:"
            " give --password-file (create logins with `ether access add NAME`)"
        )
    from amqtt.errors import BrokerError as AmqttError

    setup_logging(logging.WARNING, whole_process=True, collapse=True)  # amqtt repeats itself
    try:
        _run(_serve(host, port, password_file, secret, child, max_payload, session, listeners))
    except (OSError, AmqttError) as exc:  # amqtt wraps the OSError of a port already in use
        raise BrokerError(f"cannot listen on {host}:{port}: {exc}") from None


def _run(serving) -> None:
    """Run the broker on uvloop where it is installed (~1.6x faster), else on asyncio's own loop.
    Both set TCP_NODELAY on every accepted socket."""
    try:
        import uvloop
    except ImportError:
        import asyncio

        asyncio.run(serving)
        return
    uvloop.run(serving)


def main() -> None:
    """The embedded broker as a session's child process: its spec on stdin, its ready line on stdout."""
    spec = read_spec()
    if spec is None:  # the session ended before it sent the spec
        sys.exit(exits.OK)
    try:
        serve(
            spec["host"],
            spec["port"],
            spec["password_file"],
            spec["secret"],
            child=True,
            max_payload=spec["max_payload"],
            session=spec["session"],
            listeners=tuple(Listener(**listener) for listener in spec.get("listeners", ())),
        )
    except BrokerError as exc:
        print(f"ether broker: {exc}", file=sys.stderr, flush=True)
        os._exit(exits.CONFIG)  # amqtt's tasks of a failed start would hold the interpreter's exit
