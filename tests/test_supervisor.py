"""Supervisor: readiness, restarts by policy, Last Will, failed constructors, launching more instances."""

import os
import re
import signal
import threading

import pytest

from ether.data.recorder.store import connect, read_manifest
from ether.forkserver import AVAILABLE as FORKING
from ether.runtime.supervisor import InstanceStartError


def status_watch(observer, name):
    """Collect the states an instance's retained status goes through."""
    return [p.get("state") for p, _ in observer.on(f"ether/default/instance/{name}/status")]


def wait_state(session, name, predicate, timeout=20):
    sup = session.supervisor
    with sup._changed:
        assert sup._changed.wait_for(lambda: predicate(sup.instances[name]), timeout), sup.instances[name]


def test_constructor_error_fails_tap_with_the_reason(run_session, tmp_path):
    reason = r"'sensor' \(lab_classes.BrokenSensor\): ConnectionError: sensor not connected on /dev/ttyUSB9"
    config = {
        "recorder": {"path": str(tmp_path)},
        "instances": {"sensor": {"class_path": "lab_classes.BrokenSensor", "restart": "no"}},
    }
    with pytest.raises(InstanceStartError, match=reason):
        run_session(config)
    manifest = read_manifest(connect(next(tmp_path.iterdir()), readonly=True))
    assert manifest["status"] == "failed"  # not mistaken for a (complete, empty) run
    assert re.search(reason, manifest["error"])


def test_killed_instance_is_seen_dead_and_restarted(run_session):
    config = {"instances": {"echo": {"class_path": "lab_classes.Echo", "backoff": 0.1}}}
    session, observer = run_session(config)
    first_pid = session.supervisor.instances["echo"].pid
    os.kill(first_pid, signal.SIGKILL)
    wait_state(session, "echo", lambda m: m.restarts == 1 and m.state == "ready")
    states = status_watch(observer, "echo")
    assert "dead" in states and "restarting" in states  # Last Will, then the supervisor's announcement
    status = session.active_instances()["echo"]
    assert status["pid"] != first_pid and status["restarts"] == 1
    observer.publish("in", '{"value": 1}')
    assert observer.wait_for("out", 1)[0][0]["pid"] == status["pid"]


def gone(pid: int, timeout: float = 10.0) -> bool:
    """Whether process ``pid`` is gone (or a zombie) within ``timeout`` seconds."""
    ended = threading.Event()
    for _ in range(int(timeout / 0.05)):
        try:
            with open(f"/proc/{pid}/status") as f:
                if any(line.split()[1:2] == ["Z"] for line in f if line.startswith("State:")):
                    return True
        except FileNotFoundError:
            return True
        ended.wait(0.05)
    return False


@pytest.mark.skipif(not FORKING, reason="the fork server is Linux only")
def test_a_killed_fork_server_takes_its_instances_along_and_they_restart(run_session):
    """No fork outlives the server that reports its exit; each restarts by its policy from a new one."""
    config = {"instances": {"echo": {"class_path": "lab_classes.Echo", "backoff": 0.1}}}
    session, observer = run_session(config)
    first_pid = session.supervisor.instances["echo"].pid
    server = session.supervisor.prepare()
    assert server is not None
    os.kill(server.child.pid, signal.SIGKILL)
    wait_state(session, "echo", lambda m: m.restarts == 1 and m.state == "ready")
    assert gone(first_pid), "a fork outlived its fork server"
    assert session.supervisor.prepare() is not server
    observer.publish("in", '{"value": 1}')
    assert observer.wait_for("out", 1)[0][0]["pid"] == session.supervisor.instances["echo"].pid


def test_restart_policy_no_leaves_it_stopped(run_session):
    session, observer = run_session(
        {"instances": {"echo": {"class_path": "lab_classes.Echo", "restart": "no"}}}
    )
    os.kill(session.supervisor.instances["echo"].pid, signal.SIGKILL)
    wait_state(session, "echo", lambda m: m.gave_up)
    assert session.supervisor.instances["echo"].restarts == 0
    assert "echo" not in session.active_instances()


def test_max_restarts_is_respected(run_session):
    session, _ = run_session(
        {"instances": {"echo": {"class_path": "lab_classes.Echo", "max_restarts": 1, "backoff": 0}}}
    )
    os.kill(session.supervisor.instances["echo"].pid, signal.SIGKILL)
    wait_state(session, "echo", lambda m: m.restarts == 1 and m.state == "ready")
    os.kill(session.supervisor.instances["echo"].pid, signal.SIGKILL)
    wait_state(session, "echo", lambda m: m.gave_up)
    assert session.supervisor.instances["echo"].restarts == 1


def test_autorun_false_then_launch_instances(run_session):
    session, observer = run_session(
        {"instances": {"later": {"class_path": "lab_classes.Echo", "autorun": False}}}
    )
    assert "later" not in session.active_instances()
    session.launch({"extra": {"class_path": "lab_classes.Echo"}})
    assert session.active_instances()["extra"]["state"] == "ready"
    with pytest.raises(ValueError, match="already running"):
        session.launch({"extra": {"class_path": "lab_classes.Echo"}})


def test_statuses_list_topics(run_session):
    session, _ = run_session({"instances": {"echo": {"class_path": "lab_classes.Echo"}}})
    status = session.active_instances()["echo"]
    assert status["subscribes"] == ["in"] and status["publishes"] == ["out"]
    assert status["class"] == "lab_classes.Echo" and status["host"]


def test_supervisor_death_stops_instances(tmp_path):
    """If the supervising process dies, its instances notice (stdin closes), save, and exit."""
    import subprocess
    import sys

    log = tmp_path / "steps.txt"
    script = (
        "import ether, sys;"
        f"ether.tap({{'instances': {{'life': {{'class_path': 'lab_classes.Lifecycle', 'kwargs': {{'path': {str(log)!r}}}}}}}}});"
        "print(ether.get_active_instances()['life']['pid'], flush=True);"
        "sys.stdin.read()"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", script],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": os.path.dirname(__file__)},
    )
    child = int(proc.stdout.readline())
    proc.kill()
    proc.wait()
    done = threading.Event()

    def gone():
        try:
            os.waitpid(child, 0)
        except ChildProcessError:
            pass
        while True:
            try:
                os.kill(child, 0)
            except ProcessLookupError:
                done.set()
                return
            done.wait(0.05)

    threading.Thread(target=gone, daemon=True).start()
    assert done.wait(30), "the orphaned instance kept running"
    assert log.read_text().split()[-3:] == ["save_all", "cleanup", "shutdown"]
