"""Child processes (instances, the recorder, the embedded broker, ``ether run`` behind the monitor):
one way to start, feed, hear from, restart and stop them.

A child's stdin is its lifeline: a pipe from the parent, so when the parent dies (even by kill -9) the
child reads end of file and stops. A launch spec, if any, is one JSON line on that pipe. A child says
it is ready with one machine-readable line on stdout: ``ether-ready <name> <json>``.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Sequence
from typing import IO, TYPE_CHECKING, Any

from ether.transport.waiting import readline_with_timeout

if TYPE_CHECKING:
    from ether.forkserver import ForkedProcess, ForkServer

log = logging.getLogger("ether.processes")

READY_PREFIX = "ether-ready"
MAX_BACKOFF = 30.0  # seconds; a restart never waits longer, whatever the policy's base
KILL_GRACE = 5.0  # seconds between terminate and kill


def backoff(restart: int, base: float, cap: float = MAX_BACKOFF) -> float:
    """Seconds to wait before restart number ``restart`` (1, 2, ...): ``base`` doubling, at most ``cap``."""
    return min(cap, base * 2.0 ** min(max(restart - 1, 0), 64))


class Child:
    """One child process running ``module.main()``, with a lifeline on its stdin."""

    def __init__(
        self,
        name: str,
        module: str,
        args: Sequence[str] = (),
        *,
        stdout: bool = False,
        stderr: bool = False,
        keep: socket.socket | None = None,
        forks: ForkServer | None = None,
    ) -> None:
        """``stdout``: pipe its stdout to us (for its ready line); ``stderr``: its log lines too;
        ``keep``: a socket it inherits; ``forks``: forked by that server instead of a new interpreter."""
        self.name = name
        self._output: IO[str] | None
        if forks is None:
            self.process: subprocess.Popen | ForkedProcess = subprocess.Popen(
                [sys.executable, "-c", f"from {module} import main; main()", *args],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE if stdout else None,
                stderr=subprocess.STDOUT if stderr else None,
                text=True,
                bufsize=1,
                start_new_session=True,  # Ctrl-C reaches only the parent, which stops its children in order
                pass_fds=(keep.fileno(),) if keep else (),
            )
            self.stdin: IO[str] = self.process.stdin  # type: ignore[assignment]  # a PIPE: never None
            self._output = self.process.stdout
            return
        stdin, lifeline = os.pipe()  # it reads its stdin; we hold the other end, its lifeline
        output, printed = os.pipe() if stdout else (None, 1)  # else ours, as a new interpreter gets
        try:
            self.process = forks.fork(module, list(args), [stdin, printed, printed if stderr else 2])
        except OSError:
            os.close(lifeline)
            if output is not None:
                os.close(output)
            raise
        finally:
            os.close(stdin)
            if output is not None:
                os.close(printed)
        self.stdin = open(lifeline, "w", buffering=1)  # noqa: SIM115  # closed by cut_lifeline
        self._output = open(output, buffering=1) if output is not None else None  # noqa: SIM115

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def popen(self) -> subprocess.Popen:
        """The process, started as a new interpreter (not forked): all of ``subprocess.Popen``."""
        if not isinstance(self.process, subprocess.Popen):
            raise TypeError(f"{self.name}: forked, not a new interpreter")
        return self.process

    @property
    def output(self) -> IO[str]:
        """What it prints (started with ``stdout=True``)."""
        if self._output is None:
            raise RuntimeError(f"{self.name}: started without stdout=True")
        return self._output

    def running(self) -> bool:
        return self.process.poll() is None

    def send(self, spec: dict[str, Any]) -> None:
        """Its launch spec, as one JSON line on its stdin (nothing if it died already: see on_exit)."""
        try:
            self.stdin.write(json.dumps(spec) + "\n")
            self.stdin.flush()
        except (BrokenPipeError, OSError, ValueError):
            pass

    def on_exit(self, callback: Callable[[int], None]) -> None:
        """Call ``callback(exit_code)`` from a thread of its own when the process exits."""
        threading.Thread(
            target=lambda: callback(self.process.wait()), name=f"ether-watch-{self.name}", daemon=True
        ).start()

    def wait_ready(self, timeout: float) -> dict[str, Any] | None:
        """The info of its ready line, which is the first line it prints; None if it exits, prints
        something else first, or stays silent until the timeout."""
        return parse_ready(readline_with_timeout(self.output, timeout), self.name)

    def cut_lifeline(self) -> None:
        """Close its stdin: it stops as if we had died (before its spec: it exits at once)."""
        try:
            self.stdin.close()
        except OSError:
            pass

    def stop(self, grace: float) -> int | None:
        """Cut its lifeline and wait for it to finish; terminate it, then kill it, if it does not."""
        self.cut_lifeline()
        for action in (None, self.process.terminate, self.process.kill):
            if action is not None:
                log.warning("%s did not stop in time; %s", self.name, action.__name__)
                action()
            try:
                return self.process.wait(grace if action is None else KILL_GRACE)
            except subprocess.TimeoutExpired:
                continue
        return None


def alive(pid: object) -> bool:
    """Whether a process ``pid`` exists on this host (perhaps another user's)."""
    if not isinstance(pid, int):
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


# -- the child's side ------------------------------------------------------------------------------


def read_spec() -> dict[str, Any] | None:
    """The launch spec our parent sends on stdin; None if it closed the pipe first."""
    line = sys.stdin.readline()
    return json.loads(line) if line else None


def on_lifeline_cut(callback: Callable[[], None]) -> None:
    """Call ``callback()`` (from a thread) when our parent closes our stdin or dies."""

    def watch() -> None:
        sys.stdin.read()
        callback()

    threading.Thread(target=watch, name="ether-lifeline", daemon=True).start()


def give_back_free_heap() -> None:
    """Return the C heap's free pages to the system (glibc's ``malloc_trim``; a no-op elsewhere):
    what a process freed while starting otherwise stays resident, its own, until it is reused."""
    if sys.platform != "linux":
        return
    import ctypes  # only here: most users of this module never call it

    trim = getattr(ctypes.CDLL(None), "malloc_trim", None)  # glibc's; musl has none
    if trim is not None:
        trim(0)


def announce_ready(name: str, **info: Any) -> None:
    """Tell our parent we are ready: one machine-readable line on stdout."""
    print(f"{READY_PREFIX} {name} {json.dumps(info)}", flush=True)


def parse_ready(line: str, name: str) -> dict[str, Any] | None:
    """The info of ``name``'s ready line, or None if ``line`` is not one."""
    prefix = f"{READY_PREFIX} {name} "
    if not line.startswith(prefix):
        return None
    try:
        info = json.loads(line[len(prefix) :])
    except ValueError:
        return None
    return info if isinstance(info, dict) else None
