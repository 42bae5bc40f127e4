"""System-wide logging: every process's lines in the session store, read with ``ether logs`` and
``open_session(...).logs``; rate limits that count what they hold back; tracebacks with file:line."""

from __future__ import annotations

import json
import logging
import os
import queue
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

import ether
import lab_classes
from ether.data.recorded_logs import parse_since
from ether.logs import ERROR_LIMIT_VARIABLE, Collapse
from ether.transport.log_publishing import BURST
from support import REPO, Observer, logged_in, mqtt_field, raw_connect, recorder_barrier

LOG = "ether/default/log/"
CHATTY = {"chatty": {"class_path": "log_classes.Chatty"}}


def recorded(tmp_path, instances) -> dict:
    return {"recorder": {"path": str(tmp_path)}, "instances": instances}


def lines_of(messages, source: str) -> list[dict]:
    return [p for t, p, _ in messages if t == LOG + source]


def said(source: str, text: str):
    """A wait condition: ``source`` logged a line containing ``text``."""
    return lambda messages: any(text in p["message"] for p in lines_of(messages, source))


def ether_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "ether", *args], capture_output=True, text=True, cwd=REPO, timeout=60
    )


@pytest.fixture
def ether_at_info():
    """Ether's loggers at INFO, as ``ether run`` and ``ether.tap`` set them (pytest leaves WARNING)."""
    logger = logging.getLogger("ether")
    level = logger.level
    logger.setLevel(logging.INFO)
    yield
    logger.setLevel(level)


def test_every_process_keeps_its_lines_in_the_store(run_session, tmp_path, ether_at_info):
    instances = {**CHATTY, "echo": {"class_path": "lab_classes.Echo"}}
    session, observer = run_session(recorded(tmp_path, instances))
    observer.publish("chat", json.dumps({"lines": 2, "level": "WARNING", "fail": True, "say": "hello"}))
    observer.publish("in", '{"value": 13}')  # raises in user code
    intruder = Observer(logged_in(session.address, "instance", "chatty"))
    for _ in range(20):  # the broker refuses and says so, once: its repeats are collapsed
        intruder.publish(session.topics.instance_status("echo"), "{}")
    observer.wait_until(said("chatty", "looked for something missing"), "chatty's line")
    observer.wait_until(said("echo", "unlucky number"), "echo's error line")
    observer.wait_until(said("broker", "may not publish"), "the broker's refusal")
    intruder.close()
    recorder_barrier(session)
    session.close()

    logs = ether.open_session(session.recording.run_dir).logs
    sources = {line["src"] for line in logs}
    assert {"chatty", "echo", "broker", "recorder", session.name} <= sources
    assert [line["t"] for line in logs] == sorted(line["t"] for line in logs)
    chatty = [line for line in logs if line["src"] == "chatty" and line["logger"] == "log_classes"]
    assert [(c["level"], c["message"]) for c in chatty] == [
        ("WARNING", "line 1 of 2"),
        ("WARNING", "line 2 of 2"),
        ("ERROR", "looked for something missing"),
    ]
    printed = [line for line in logs if line["src"] == "chatty" and line["logger"] == "print"]
    assert [(p["level"], p["message"]) for p in printed] == [("INFO", "hello (printed)")]
    assert "KeyError" in chatty[-1]["traceback"] and "log_classes.py" in chatty[-1]["traceback"]
    # the error event of a user exception carries its traceback with file:line, and so does its log line
    source = Path(lab_classes.__file__).read_text().splitlines()
    raised_at = source.index('            raise ValueError("unlucky number")') + 1
    (echo_error,) = [line for line in logs if line["src"] == "echo" and "unlucky" in line["message"]]
    assert echo_error["level"] == "ERROR" and f'lab_classes.py", line {raised_at}' in echo_error["message"]
    assert any(line["src"] == session.name and "ready" in line["message"] for line in logs)
    assert any(line["src"] == "recorder" and "recorder ready" in line["message"] for line in logs)
    refusals = [line for line in logs if line["src"] == "broker" and "may not publish" in line["message"]]
    assert 1 <= len(refusals) < 20 and refusals[0]["level"] == "WARNING"

    # ether logs: filtered by process and level; the traceback follows, indented
    shown = ether_cli("logs", str(session.recording.run_dir), "--instance", "chatty", "--level", "error")
    assert shown.returncode == 0, shown.stderr
    out = shown.stdout.splitlines()
    assert "chatty[" in out[0] and "ERROR log_classes: looked for something missing" in out[0]
    assert out[1].startswith("    Traceback") and all("line 1 of 2" not in o for o in out)
    nobody = ether_cli("logs", str(session.recording.run_dir), "--instance", "nobody")
    assert (
        nobody.returncode == 1 and "no log lines of 'nobody'" in nobody.stderr and "chatty" in nobody.stderr
    )
    everything = ether_cli("logs", str(session.recording.run_dir), "--since", "1h").stdout
    assert "broker[" in everything and "recorder[" in everything and "echo[" in everything
    assert ether_cli("logs", str(session.recording.run_dir), "--since", "1d").stdout == everything


def test_a_flood_of_lines_is_limited_and_counted_exactly(run_session, tmp_path):
    session, observer = run_session(recorded(tmp_path, CHATTY))
    flood = 3000
    observer.publish("chat", json.dumps({"lines": flood}))

    def accounted(messages) -> int:
        lines = [p for p in lines_of(messages, "chatty") if p["logger"] == "log_classes"]
        return len(lines) + sum(p.get("dropped") or 0 for p in lines_of(messages, "chatty"))

    observer.wait_until(lambda m: accounted(m) >= flood, "account of every line", timeout=60)
    recorder_barrier(session)
    session.close()
    logs = [line for line in ether.open_session(session.recording.run_dir).logs if line["src"] == "chatty"]
    kept = [line for line in logs if line["logger"] == "log_classes"]
    dropped = [line for line in logs if line["dropped"]]
    assert BURST <= len(kept) < flood and len(kept) + sum(d["dropped"] for d in dropped) == flood
    assert all("log lines dropped" in d["message"] and d["level"] == "WARNING" for d in dropped)
    assert [k["message"] for k in kept[:BURST]] == [f"line {i} of {flood}" for i in range(1, BURST + 1)]


def test_error_events_are_limited_per_instance_and_counted(run_session, tmp_path, monkeypatch):
    burst, storm = 10, 100
    monkeypatch.setenv(ERROR_LIMIT_VARIABLE, f"1/{burst}")  # the instance process inherits it
    session, observer = run_session(recorded(tmp_path, {"echo": {"class_path": "lab_classes.Echo"}}))
    for _ in range(storm):
        observer.publish("in", '{"value": 13}')
    observer.wait_for("ether/default/errors", burst, timeout=60)
    session.close()  # the instance's end sends the count still held back
    db = ether.open_session(session.recording.run_dir)
    events = [r for r in db.records("ether/default/errors") if r.get("instance") == "echo"]
    raised = [e for e in events if e["reason"] == "ValueError: unlucky number"]
    held = [e for e in events if e not in raised]
    assert burst <= len(raised) < storm and all("traceback" in e for e in raised)
    assert len(raised) + sum(e.get("suppressed") or 0 for e in events) == storm
    assert held and "more error events not sent" in held[-1]["reason"]


def test_ether_logs_follows_a_running_session_until_it_ends(run_session, tmp_path):
    session, observer = run_session(recorded(tmp_path, CHATTY))
    follower = subprocess.Popen(
        [sys.executable, "-m", "ether", "logs", str(session.recording.run_dir), "-f", "--instance", "chatty"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO,
    )
    printed: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: [printed.put(line) for line in follower.stdout], daemon=True).start()
    try:
        observer.publish("chat", json.dumps({"lines": 1, "level": "WARNING"}))
        deadline = time.monotonic() + 30
        line = ""  # chatty may log other lines first (a resend under load)
        while "WARNING log_classes: line 1 of 1" not in line:
            line = printed.get(timeout=max(0.0, deadline - time.monotonic()))
        assert line.split()[2].startswith("chatty["), line
        session.close()  # sealed: the follower prints what is left and ends by itself
        assert follower.wait(60) == 0, follower.stderr.read() if follower.stderr else ""
    finally:
        if follower.poll() is None:
            follower.kill()


def test_bad_filters_are_named():
    assert parse_since("90s", now=1000.0) == 910.0 and parse_since("2h", now=10_000.0) == 2800.0
    with pytest.raises(ValueError, match="--since 'yesterday'"):
        parse_since("yesterday")
    shown = ether_cli("logs", "last", "--since", "yesterday")
    assert shown.returncode == 1 and "--since 'yesterday'" in shown.stderr


def test_the_brokers_repeats_are_collapsed_into_a_count():
    collapse = Collapse(window=10)

    def record(text: str) -> logging.LogRecord:
        return logging.LogRecord("amqtt", logging.WARNING, __file__, 1, text, None, None)

    shown = [
        collapse.filter(record(f"Timeout waiting for PUBACK for packet ID {i} at 0x7f{i}a"))
        for i in range(50)
    ]
    assert shown == [True] + [False] * 49
    assert collapse.filter(record("another line")) and collapse.expired() == []  # the window is not over
    (count,) = collapse.expired(now=time.monotonic() + 10)  # over: one line with the count of repeats
    assert (
        count.getMessage()
        == "[49 more like this in 10 s] Timeout waiting for PUBACK for packet ID 0 at 0x7f0a"
    )
    assert collapse.filter(count) and collapse.filter(
        record("Timeout waiting for PUBACK for packet ID 7 at 0x1")
    )


@pytest.mark.parametrize(
    "level, shown, hidden", [("WARNING", None, " - INFO - "), ("DEBUG", " - DEBUG - ", None)]
)
def test_the_log_level_option_reaches_every_process_and_the_seal_line_stays(tmp_path, level, shown, hidden):
    config = tmp_path / "lab.yaml"
    config.write_text(
        f"recorder: {{path: {tmp_path}}}\ninstances:\n  echo: {{class_path: lab_classes.Echo}}\n"
    )
    tests = str(REPO / "tests")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([tests, os.environ.get("PYTHONPATH", "")])}
    env.pop("ETHER_LOG_LEVEL", None)
    run = [
        sys.executable,
        "-m",
        "ether",
        "--log-level",
        level,
        "run",
        str(config),
        "--headless",
        "--port",
        "0",
    ]
    proc = subprocess.run(
        [*run, "--for", "1s"], capture_output=True, text=True, cwd=REPO, env=env, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.splitlines()[-1].startswith("Session ") and " sealed complete" in proc.stderr
    if hidden:
        assert hidden not in proc.stderr
    if shown:
        assert shown in proc.stderr and proc.stderr.count(shown) > 10  # the broker's, a child process


def test_a_delivery_its_client_never_acknowledges_is_one_warning_of_the_broker(run_session, tmp_path):
    """A QoS 1 delivery whose PUBACK does not come (a client stuck or gone): amqtt logged a traceback
    at ERROR for each; the embedded broker says it in one warning line."""
    session, observer = run_session(recorded(tmp_path, {}))
    silent = raw_connect(session.address, 60)
    subscribe = b"\x00\x01" + mqtt_field("nopuback") + b"\x01"  # packet id 1, QoS 1
    silent.sendall(bytes([0x82, len(subscribe)]) + subscribe)
    assert silent.recv(5)[:1] == b"\x90", "no SUBACK"
    observer.publish("nopuback", "{}")  # delivered to it at QoS 1, never acknowledged
    observer.wait_until(said("broker", "Timeout waiting for PUBACK"), "the broker's warning", timeout=30)
    silent.close()
    recorder_barrier(session)
    session.close()
    broker = [line for line in ether.open_session(session.recording.run_dir).logs if line["src"] == "broker"]
    assert [line["level"] for line in broker if "PUBACK" in line["message"]] == ["WARNING"], broker
    assert not [line for line in broker if line["level"] == "ERROR" or line.get("traceback")], broker
