"""RabbitMQ nodes with the MQTT plugin, run as the test's own processes (not the system service), on
127.0.0.1 only, each in its own folder, with a cookie and an Erlang port mapper of their own; used
by tests/test_rabbitmq.py and bench/hosts.py (docs/operations.md#several-machines shows the setup)."""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import subprocess
import threading
from pathlib import Path

from ether.transport.broker import BrokerAddress
from ether.transport.mosquitto import free_port

SERVER = "/usr/lib/rabbitmq/bin/rabbitmq-server"  # Debian's /usr/sbin wrappers switch to its user
CTL = "/usr/lib/rabbitmq/bin/rabbitmqctl"
READY = "Server startup complete"
START_TIMEOUT = 60.0


def installed() -> bool:
    return os.path.exists(SERVER) and shutil.which("erl") is not None


class RabbitNode:
    """One node, ``name@localhost``; :meth:`start` returns once its MQTT listener is up."""

    def __init__(self, folder: Path, name: str, cookie: str, epmd_port: int) -> None:
        self.folder, self.name = folder / name, f"{name}@localhost"
        self.folder.mkdir(parents=True)
        self.mqtt_port = free_port()
        (self.folder / "enabled_plugins").write_text("[rabbitmq_mqtt].\n")
        (self.folder / "rabbitmq.conf").write_text(
            f"mqtt.listeners.tcp.default = 127.0.0.1:{self.mqtt_port}\n"
            "mqtt.allow_anonymous = true\n"
            "mqtt.tcp_listen_options.nodelay = true\n"
        )
        (self.folder / "rabbitmq-env.conf").write_text("")
        cookie_file = self.folder / ".erlang.cookie"
        cookie_file.write_text(cookie)
        cookie_file.chmod(0o400)
        self.env = {
            **os.environ,
            "HOME": str(self.folder),  # the Erlang cookie is $HOME/.erlang.cookie, for server and ctl
            "RABBITMQ_NODENAME": self.name,
            "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
            "RABBITMQ_NODE_PORT": str(free_port()),  # AMQP
            "RABBITMQ_DIST_PORT": str(free_port()),  # between the nodes
            "RABBITMQ_MNESIA_BASE": str(self.folder / "mnesia"),
            "RABBITMQ_LOG_BASE": str(self.folder / "log"),
            "RABBITMQ_LOGS": "-",  # to stdout: we read it for readiness
            "RABBITMQ_CONFIG_FILE": str(self.folder / "rabbitmq.conf"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(self.folder / "enabled_plugins"),
            "RABBITMQ_CONF_ENV_FILE": str(self.folder / "rabbitmq-env.conf"),
            "RABBITMQ_PID_FILE": str(self.folder / "pid"),
            "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS": "-kernel inet_dist_use_interface {127,0,0,1}",
            "ERL_EPMD_PORT": str(epmd_port),
            "ERL_EPMD_ADDRESS": "127.0.0.1",
        }
        self.address = BrokerAddress(port=self.mqtt_port)
        self.process: subprocess.Popen | None = None
        self.output: list[str] = []
        self.ready = self._ended = False
        self._changed = threading.Condition()

    def start(self) -> None:
        self.process = subprocess.Popen(
            [SERVER],
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,  # kill() takes the Erlang VM with its shell script
        )
        threading.Thread(target=self._read, daemon=True).start()
        with self._changed:
            self._changed.wait_for(lambda: self.ready or self._ended, START_TIMEOUT)
        if not self.ready:
            raise RuntimeError(f"RabbitMQ node {self.name} did not start:\n{''.join(self.output)[-3000:]}")

    def _read(self) -> None:
        assert self.process is not None and self.process.stdout is not None
        for line in self.process.stdout:
            with self._changed:
                self.output.append(line)
                self.ready = self.ready or READY in line
                self._changed.notify_all()
        with self._changed:
            self._ended = True
            self._changed.notify_all()

    def ctl(self, *args: str, timeout: float = 60.0) -> str:
        """``rabbitmqctl -n NODE ARGS``: its output (raises if it fails)."""
        done = subprocess.run(
            [CTL, "-n", self.name, *args], env=self.env, capture_output=True, text=True, timeout=timeout
        )
        if done.returncode != 0:
            raise RuntimeError(f"rabbitmqctl {' '.join(args)} on {self.name}: {done.stdout}{done.stderr}")
        return done.stdout

    def join(self, other: RabbitNode) -> None:
        """Join ``other``'s cluster (this node's own data is reset)."""
        self.ctl("stop_app")
        self.ctl("join_cluster", other.name)
        self.ctl("start_app")

    def kill(self) -> None:
        """kill -9 the whole node (the Erlang VM and its helpers)."""
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(10)

    def stop(self) -> None:
        """Stop the node as its service would (SIGTERM), kill it if it takes over 30 s."""
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.kill()


class RabbitCluster:
    """``size`` nodes joined into one cluster (node 0 first; the others join it)."""

    def __init__(self, folder: Path, size: int = 2) -> None:
        cookie, self.epmd_port = secrets.token_hex(16), free_port()
        self.nodes = [RabbitNode(folder, f"rabbit{i}", cookie, self.epmd_port) for i in range(size)]

    def start(self) -> None:
        """Start every node at once (each takes 10-30 s), then join the others to node 0."""
        failures: list[Exception] = []
        starting = [threading.Thread(target=self._start, args=(node, failures)) for node in self.nodes]
        for thread in starting:
            thread.start()
        for thread in starting:
            thread.join()
        if failures:
            raise failures[0]
        for node in self.nodes[1:]:
            node.join(self.nodes[0])
        self.nodes[0].ctl("await_online_nodes", str(len(self.nodes)))

    @staticmethod
    def _start(node: RabbitNode, failures: list[Exception]) -> None:
        try:
            node.start()
        except RuntimeError as exc:
            failures.append(exc)

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()
        # the port mapper the first node started outlives the nodes: stop ours by its port
        subprocess.run(
            ["epmd", "-kill"], env={**os.environ, "ERL_EPMD_PORT": str(self.epmd_port)}, capture_output=True
        )
