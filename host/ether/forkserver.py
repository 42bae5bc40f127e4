"""The fork server: a process that imports the instance runtime once and forks each instance from it.

An instance process started from a fresh interpreter spends most of its start-up importing Python,
pydantic and paho (docs/benchmarks.md); a fork of a process that has imported them is ready in a
few milliseconds and shares their memory. Each fork is still a process of its own: its own session,
stdin (its lifeline), stdout and stderr, the supervisor's environment and working directory, and user
modules imported only after the fork; the server answers a request once the fork has its session
(a signal to its process group cannot miss it). The server is the forks' parent: it reaps them and reports
their exit codes; a fork dies with the server (``PR_SET_PDEATHSIG``), so no instance outlives the
one process that can report its exit, and the server, once its lifeline is cut, waits for every
fork to exit before it exits itself. Linux only; elsewhere instances start as fresh interpreters.
"""

from __future__ import annotations

import ctypes
import gc
import importlib
import json
import os
import select
import signal
import socket
import subprocess
import sys
import threading
import traceback
from typing import Any

from ether.processes import Child

AVAILABLE = sys.platform == "linux"
PRELOAD = (  # what every fork needs, imported once (never user code)
    "ether.runtime.instance",
    "encodings.idna",  # socket.getaddrinfo's codec for the broker's host name: 1-2 ms, 0.4 MB a fork
)
PR_SET_PDEATHSIG = 1
MESSAGE = 1 << 20  # bytes: the largest request or report (an environment fits many times over)
ANSWER_TIMEOUT = 120.0  # seconds for the server's answer to a fork request (it imports first)


class ForkedProcess:
    """The part of ``subprocess.Popen`` a Child uses, for a process the fork server started."""

    def __init__(self, server: ForkServer, pid: int) -> None:
        self.server, self.pid = server, pid
        self.returncode: int | None = None
        self._exited = threading.Event()

    def exited(self, code: int) -> None:
        self.returncode = code
        self._exited.set()

    def poll(self) -> int | None:
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        if not self._exited.wait(timeout):
            raise subprocess.TimeoutExpired(f"process {self.pid}", timeout or 0.0)
        return self.returncode  # type: ignore[return-value]  # set before _exited

    def send_signal(self, sig: int) -> None:
        """Signalled by its parent, which has not reaped it yet: never another process with its pid."""
        if self.returncode is None:
            self.server.request({"signal": int(sig), "pid": self.pid})

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)


class ForkServer:
    """The supervisor's side: start the server, ask it for forks, hear their exits."""

    def __init__(self) -> None:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self.control = ours
        self.child = Child("the fork server", "ether.forkserver", [str(theirs.fileno())], keep=theirs)
        theirs.close()
        self.forks: dict[int, ForkedProcess] = {}
        self._lock = threading.Lock()  # one fork request at a time: the next report of a fork is its
        self._forked: list[ForkedProcess | str] = []  # the fork asked for, or why it was refused
        self._reported = threading.Condition()
        self._gone = False
        threading.Thread(target=self._hear, name="ether-forkserver", daemon=True).start()

    def running(self) -> bool:
        return not self._gone and self.child.running()

    def request(self, message: dict[str, Any]) -> None:
        """A request without an answer (a signal); lost if the server is gone, as its forks are."""
        try:
            self.control.send(json.dumps(message).encode())
        except OSError:
            pass

    def fork(self, module: str, args: list[str], fds: list[int]) -> ForkedProcess:
        """A new process running ``module.main()`` with ``fds`` as its stdin, stdout and stderr."""
        message = {"module": module, "args": args, "env": dict(os.environ), "cwd": os.getcwd()}
        with self._lock, self._reported:
            try:
                socket.send_fds(self.control, [json.dumps(message).encode()], fds)
            except OSError as exc:
                raise OSError(f"no process could be started: the fork server: {exc}") from exc
            if not self._reported.wait_for(lambda: self._forked or self._gone, ANSWER_TIMEOUT):
                self.child.process.kill()  # stuck: a late answer must not pass for the next one's
                raise OSError(f"no process could be started: no answer in {ANSWER_TIMEOUT:g} s")
            forked = self._forked.pop() if self._forked else "the fork server is gone"
            if isinstance(forked, str):
                raise OSError(f"no process could be started: {forked}")
            return forked

    def _hear(self) -> None:
        """Reports of the server (its reader thread): each fork's pid, then its exit code."""
        while True:
            try:
                raw = self.control.recv(MESSAGE)
            except OSError:
                raw = b""
            if not raw:
                break
            report = json.loads(raw)
            with self._reported:
                if "forked" in report:
                    process = self.forks[report["forked"]] = ForkedProcess(self, report["forked"])
                    self._forked.append(process)
                    self._reported.notify_all()
                elif "refused" in report:
                    self._forked.append(report["refused"])
                    self._reported.notify_all()
                elif report["exit"] in self.forks:
                    self.forks.pop(report["exit"]).exited(report["code"])
        with self._reported:  # its forks died with it (PR_SET_PDEATHSIG)
            self._gone = True
            self._reported.notify_all()
            for process in self.forks.values():
                process.exited(-signal.SIGKILL)
            self.forks.clear()

    def close(self, timeout: float) -> None:
        """Cut the server's lifeline: it exits once its forks have."""
        self.child.stop(timeout)
        self.control.close()


# -- the server ------------------------------------------------------------------------------------


def main() -> None:
    """Preload, then fork on request until the lifeline is cut and every fork has exited."""
    control = socket.socket(fileno=int(sys.argv[1]))
    for module in PRELOAD:
        importlib.import_module(module)
    gc.freeze()  # the imported objects stay on pages the forks share: no copy on collection
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    forks: set[int] = set()
    serving = True
    while serving or forks:
        watched: list[int | socket.socket] = [wake_r, 0, control] if serving else [wake_r]
        readable, _, _ = select.select(watched, [], [])
        if wake_r in readable:
            os.read(wake_r, 4096)
        _reap(forks, control)
        if 0 in readable and not os.read(0, 4096):  # the lifeline: end of file when it is cut
            serving = False
        if control in readable:
            message, fds, _, _ = socket.recv_fds(control, MESSAGE, 3)
            if not message:
                serving = False
                continue
            request = json.loads(message)
            if "signal" in request:
                if request["pid"] in forks:  # not reaped yet: the pid is still that fork's
                    os.kill(request["pid"], request["signal"])
                continue
            settled, in_session = os.pipe()  # the fork closes its end once it is a session of its own
            try:
                pid = os.fork()
            except OSError as exc:  # e.g. out of processes: this one is refused, the server goes on
                _report(control, {"refused": str(exc)})
            else:
                if pid == 0:
                    _run_fork(request, fds, in_session)
                os.close(in_session)
                in_session = -1
                os.read(settled, 1)  # end of file: it called setsid(), or died before it (reaped next)
                forks.add(pid)
                _report(control, {"forked": pid})
            finally:
                for fd in (settled, in_session, *fds):
                    if fd >= 0:
                        os.close(fd)


def _reap(forks: set[int], control: socket.socket) -> None:
    while forks:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        forks.discard(pid)
        _report(control, {"exit": pid, "code": os.waitstatus_to_exitcode(status)})


def _report(control: socket.socket, report: dict[str, Any]) -> None:
    try:
        control.send(json.dumps(report).encode())
    except OSError:
        pass  # the supervisor is gone; its forks' lifelines are cut too


def _run_fork(request: dict[str, Any], fds: list[int], in_session: int) -> None:
    """In the fork: become the requested process, run ``module.main()``, exit with its code;
    ``in_session`` is closed once it is a session of its own (the server answers after that)."""
    code = 1
    try:
        parent = os.getppid()
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() != parent:  # the server died before the prctl took effect
            os._exit(1)
        signal.set_wakeup_fd(-1)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        os.setsid()  # as start_new_session: Ctrl-C reaches only the supervisor
        os.close(in_session)
        for target, fd in enumerate(fds):
            os.dup2(fd, target)
        open_fds = [int(fd) for fd in os.listdir("/proc/self/fd")]
        os.closerange(3, max(open_fds) + 1)  # the server's socket and pipe, and what they came with
        sys.stdin = open(0, closefd=False)  # noqa: SIM115  # the process's own, for its whole life
        sys.stdout = open(1, "w", buffering=1, closefd=False)  # noqa: SIM115
        sys.stderr = open(2, "w", buffering=1, closefd=False)  # noqa: SIM115
        os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update(request["env"])
        sys.argv = ["-c", *request["args"]]
        importlib.invalidate_caches()  # user modules written since the server started are found
        importlib.import_module(request["module"]).main()
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 0 if exc.code is None else 1
        if not isinstance(exc.code, int | None):
            print(exc.code, file=sys.stderr)
    except BaseException:
        traceback.print_exc()
    finally:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):
                pass
        os._exit(code)
