"""How the monitor is linked to the session it shows, and the two ways to start it.

``ether monitor`` attaches to a session that runs elsewhere: quitting only detaches, ending the
session is the ``shutdown`` control message, and the end is seen on the bus. ``ether run`` on a
terminal runs the session as a child process (``ether run --headless``) whose output the monitor
shows: quitting ends it as Ctrl-C would (SIGINT), and the monitor stays until the child has drained
and sealed the store, then prints how it ended.
"""

from __future__ import annotations

import argparse
import re
import signal
import subprocess
import sys
import threading
from collections import deque
from pathlib import Path

from ether.data.recorder.store import StoreError, connect, summary
from ether.monitor.commands import Commands
from ether.monitor.model import LIVE, SessionModel, Snapshot
from ether.processes import Child, parse_ready
from ether.transport.broker import BrokerAddress, BrokerError

SEALED = re.compile(r"Session \S+ sealed \w+")


def on_terminal() -> bool:
    """Keys come from stdin, and Textual draws on stderr: both must be a terminal (and stdout, so that
    `ether run > file` keeps plain log lines)."""
    return all(stream.isatty() for stream in (sys.stdin, sys.stdout, sys.stderr))


class Attached:
    """A session that runs elsewhere."""

    owns_session = False
    returncode = 0

    def __init__(self, commands: Commands) -> None:
        self.commands = commands

    def end(self) -> str:
        return self.commands.session("shutdown")

    def seal(self, snapshot: Snapshot) -> str:
        """How the store was sealed, read from it when it is on this machine ('' until it is sealed)."""
        run_dir = snapshot.recorder.run_dir
        try:
            db = connect(run_dir, readonly=True) if run_dir and Path(run_dir).exists() else None
        except StoreError:
            return ""
        if db is None:
            return f"The session store is on the session's machine: {run_dir}" if run_dir else ""
        try:
            s = summary(db)
        finally:
            db.close()
        if s["status"] in (None, "running"):
            return ""
        unsaved = f", {s['unsaved']} NOT saved" if s["unsaved"] else ""
        return f"Session {Path(run_dir).name} sealed {s['status']}: {s['messages']} messages saved{unsaved} in {run_dir}"

    def finished(self, snapshot: Snapshot) -> bool:
        """Every supervisor stopped, no instance alive, the recorder not running."""
        supervisors = [state for _, state in snapshot.supervisors]
        return (
            all(state != "running" for state in supervisors)
            and all(i.state not in LIVE for i in snapshot.instances)
            and snapshot.recorder.state != "ready"
        )


class RunProcess:
    """The ``ether run --headless`` child of ``ether run`` on a terminal; its output goes to the log."""

    owns_session = True

    def __init__(self, process: subprocess.Popen, model: SessionModel) -> None:
        self.process, self.model = process, model
        self.ending_lines: list[str] = []  # output from the moment the end was asked: the drain
        self.last_lines: deque[str] = deque(maxlen=20)  # for an end nobody asked for here
        self.ending = False
        self.echo = False  # after the monitor closed: straight to the terminal
        self.sealed = ""  # the session's seal line, once it printed it
        self._last = ""  # the last line written to the terminal
        self._done = threading.Event()
        self._lock = threading.Lock()
        self._reader = threading.Thread(target=self._read, name="ether-run-output", daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self.process.stdout or ():
            with self._lock:
                if SEALED.search(line):
                    self.sealed = line.strip()
                if self.echo:
                    sys.stderr.write(line)
                    self._last = line
                    continue
                self.last_lines.append(line)
                if self.ending:
                    self.ending_lines.append(line)
            self.model.log_line(line)
        self._done.set()

    def end(self) -> str:
        self.ending = True
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
        return "stopping: save_all -> cleanup -> exit, then the recorder's drain"

    def seal(self, snapshot: Snapshot | None = None) -> str:
        return self.sealed

    def finished(self, snapshot: Snapshot | None = None) -> bool:
        return self.process.poll() is not None and self._done.is_set()

    @property
    def returncode(self) -> int:
        return self.process.returncode if self.process.returncode is not None else 1

    def close(self) -> int:
        """After the monitor: make sure the session ended (as Ctrl-C would), show its last words, and
        its seal line last, whatever the broker printed after it."""
        with self._lock:  # what was shown in the monitor's log, then the rest as it comes
            for line in self.ending_lines if self.ending else self.last_lines:
                sys.stderr.write(line)
                self._last = line
            self.echo = True
        if self.process.poll() is None:
            self.end()
        code = self.process.wait()
        self._reader.join(5)
        with self._lock:
            if self.sealed and self._last.strip() != self.sealed:
                sys.stderr.write(f"{self.sealed}\n")
        return code


def attach(broker: str, session: str, data_qos: int = 0) -> int:
    """``ether monitor``: show a running session until the user quits."""
    from ether.monitor.app import MonitorApp

    if not on_terminal():
        print(
            "ether monitor: needs a terminal (stdin, stdout and stderr); see `ether sessions`",
            file=sys.stderr,
        )
        return 1
    try:
        model = SessionModel(BrokerAddress.parse(broker), session, data_qos)
        model.connect()
    except BrokerError as exc:
        print(f"ether monitor: {exc}", file=sys.stderr)
        return 1
    try:
        commands = Commands(model)
        MonitorApp(model, commands, Attached(commands)).run()
    finally:
        model.close()
    return 0


def run_on_terminal(args: argparse.Namespace) -> int:
    """``ether run`` with a terminal: the session in a child process, the monitor in front of it."""
    from ether.monitor.app import MonitorApp

    process = launch(args).popen
    ready = _startup(process)
    if ready is None:
        return process.wait()
    try:
        model = SessionModel(_address(args, *ready), ready[1])
        model.connect()
    except BrokerError as exc:
        print(f"ether: the monitor cannot reach the session: {exc}", file=sys.stderr)
        process.send_signal(signal.SIGINT)
        _echo_until_exit(process)
        return process.wait()
    link = RunProcess(process, model)
    try:
        MonitorApp(model, Commands(model), link, subtitle=f"ether run {args.config}").run()
    finally:
        model.close()
        code = link.close()
    return code


def launch(args: argparse.Namespace) -> Child:
    """``ether run --headless`` with the same arguments, its output piped to us; its stdin is closed
    when we die, and the session then ends as on Ctrl-C. Its own process group: the terminal's Ctrl-C
    is a key for the monitor, not a signal for it."""
    command = ["run", args.config, "--headless", "--exit-with-stdin"]
    command += ["--port", str(args.port), "--listen", args.listen, "--timeout", str(args.timeout)]
    command += ["--broker", args.broker] if args.broker else []
    max_payload = getattr(args, "max_payload", None)  # not given by callers that build their own args
    command += ["--max-payload", str(max_payload)] if max_payload else []
    for listener in getattr(args, "listener", ()):
        command += ["--listener", listener]
    duration = getattr(args, "duration", None)  # ether run --for (docs/experiments.md)
    command += ["--for", str(duration)] if duration else []
    return Child("session", "ether.cli", command, stdout=True, stderr=True)


def _startup(process: subprocess.Popen) -> tuple[str, str] | None:
    """Show the session's startup output until its ready line; (url, session), or None if it ended."""
    assert process.stdout is not None
    try:
        for line in process.stdout:
            ready = parse_ready(line, "session")
            if ready is not None:
                return ready["url"], ready["session"]
            sys.stderr.write(line)
    except KeyboardInterrupt:
        process.send_signal(signal.SIGINT)
        _echo_until_exit(process)
    return None


def _echo_until_exit(process: subprocess.Popen) -> None:
    while True:
        try:
            for line in process.stdout or ():
                sys.stderr.write(line)
            return
        except KeyboardInterrupt:
            continue  # the session is already stopping; let it drain


def _address(args: argparse.Namespace, url: str, session: str) -> BrokerAddress:
    """Where the monitor connects: the session's broker (with the login of --broker, if it has one;
    else its own, from the broker's key)."""
    from ether.transport.broker import MANAGED_MOSQUITTO

    return BrokerAddress.parse(url if args.broker in (None, MANAGED_MOSQUITTO) else args.broker)
