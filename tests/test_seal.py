"""A seal is `complete` only when it is (real processes, real brokers: embedded amqtt and Mosquitto).

Two supervisors in one session: the recorder's session waits for the other one's data, or records what
it did not get; `ether run` exits with what its seal says, the seal line last."""

from __future__ import annotations

import json
import logging
import os
import re
import signal
import sqlite3
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest

from ether import exits, open_session
from ether.contract.messages import RecorderCommand, RecorderStatus
from ether.contract.topics import Topics
from ether.contract.wire import Stamper, encode
from ether.data.recorder.process import RecorderNotReady
from ether.data.recorder.recording import seal_line
from ether.data.recorder.store import connect, read_manifest
from ether.runtime.session import new_session
from ether.transport.broker import BrokerAddress
from ether.transport.bus import Bus
from ether.transport.requests import Requester
from ether.transport.waiting import wait_until
from support import REPO, Observer, ether_run, logged_in, wait_until_running
from test_control_plane import mosquitto, needs_mosquitto  # noqa: F401 (a fixture)

BROKERS = ["amqtt", pytest.param("mosquitto", marks=needs_mosquitto)]


@pytest.fixture(params=BROKERS)
def broker(request) -> str | None:
    """The broker URL both supervisors join (Mosquitto), or None: the first one hosts amqtt."""
    return request.getfixturevalue("mosquitto").url if request.param == "mosquitto" else None


def env() -> dict:
    return {**os.environ, "PYTHONPATH": f"{REPO / 'tests'}:{os.environ.get('PYTHONPATH', '')}"}


def guest_run(
    tmp_path: Path, session: str, url: str, instances: dict, timeout: float = 30, drain_timeout: float = 5
) -> tuple:
    """A second supervisor (``ether run --broker``, as another host joins) and its output, read aside;
    ``timeout``: for readiness and each stop step (the first supervisor's broker may be gone)."""
    config_file = tmp_path / "guest.yaml"
    recorder = {"path": str(tmp_path / "guest"), "drain_timeout": drain_timeout}
    config = {"session": session, "recorder": recorder}
    config_file.write_text(json.dumps({**config, "instances": instances}))
    proc = ether_run(config_file, "--headless", "--broker", url, "--timeout", str(timeout), env=env())
    wait_until_running(proc)
    output: list[str] = []
    reader = threading.Thread(target=lambda: output.extend(proc.stdout), daemon=True)
    reader.start()
    return proc, output, reader


class LogSignal(logging.Handler):
    """Set when an info record starts with ``prefix``: a signal that a step has been reached."""

    def __init__(self, logger: str, prefix: str) -> None:
        super().__init__()
        self.prefix, self.seen, self.logger = prefix, threading.Event(), logging.getLogger(logger)
        self.level_before = self.logger.level
        self.logger.setLevel(logging.INFO)
        self.logger.addHandler(self)

    def emit(self, record: logging.LogRecord) -> None:
        if record.getMessage().startswith(self.prefix):
            self.seen.set()

    def remove(self) -> None:
        self.logger.removeHandler(self)
        self.logger.setLevel(self.level_before)


def events(db, kind: str) -> list[dict]:
    return [
        {"src": r[0], **json.loads(r[1])}
        for r in db.execute("SELECT src, detail FROM events WHERE kind = ?", (kind,))
    ]


def test_the_seal_waits_for_the_last_message_of_a_joined_supervisor(broker, tmp_path):
    """Reproduced first: the recorder's session ended while the other supervisor's instance was still
    saving; its last message stayed in that outbox and the store was sealed `complete`. Each wait here
    ends on its signal (the last word's acknowledgement, the guest's last status): their bounds, the
    drain timeouts, are far from what a loaded machine needs, so a seal never says `incomplete` for
    lack of time."""
    session = f"two{uuid.uuid4().hex[:6]}"
    recorder = {"path": str(tmp_path / "owner"), "drain_timeout": 60}
    owner = new_session({"session": session, "recorder": recorder}, broker_url=broker)
    owner.open()
    gate = tmp_path / "gate"
    os.mkfifo(gate)
    instances = {"last": {"class_path": "seal_classes.LastWord", "kwargs": {"gate": str(gate)}}}
    waiting = LogSignal("ether.recorder", "Waiting up to")
    try:
        guest, output, reader = guest_run(tmp_path, session, owner.address.url, instances, drain_timeout=60)
        guest.send_signal(signal.SIGINT)  # its instance now holds its last word until the gate opens
        closing = threading.Thread(target=owner.close)
        closing.start()
        assert waiting.seen.wait(60), "the recorder's session did not wait for the joined supervisor"
        with open(gate, "w"):  # the last word leaves while the recorder's session is ending
            pass
        closing.join(60)
        code = guest.wait(60)
        reader.join(10)
    finally:
        waiting.remove()
        owner.close()
    db = connect(owner.recording.run_dir, readonly=True)
    manifest = read_manifest(db)
    assert db.execute("SELECT COUNT(*) FROM messages WHERE topic = 'last_word'").fetchone()[0] == 1
    assert manifest["status"] == "complete" and manifest["not_drained"] == [], "".join(output)[-4000:]
    stopped = events(db, "joined_stopped")
    assert len(stopped) == 1 and stopped[0]["unsaved"] == {} and stopped[0]["instances"] == ["last"]
    assert last_instance_events(db)["last"][0] == "instance_stopped"  # its own, sent before it exited
    assert code == exits.OK, "".join(output)[-3000:]
    assert " sealed complete" in output[-1], output[-5:]


def test_a_joined_supervisor_still_running_at_the_end_makes_the_seal_incomplete(broker, tmp_path):
    session = f"two{uuid.uuid4().hex[:6]}"
    recorder = {"path": str(tmp_path / "owner"), "drain_timeout": 2}
    owner = new_session({"session": session, "recorder": recorder}, broker_url=broker)
    owner.open()
    try:
        guest, output, reader = guest_run(
            tmp_path, session, owner.address.url, {"ticker": {"class_path": "lab_classes.Ticker"}}, 15
        )
        ticks = Observer(owner.address, f"{session}/tick")
        ticks.wait_for(f"{session}/tick", 1)
        ticks.close()
        owner.close()  # the other supervisor keeps running: its data after this is not recorded
        guest.send_signal(signal.SIGINT)
        code = guest.wait(60)
        reader.join(10)
    finally:
        owner.close()
    db = connect(owner.recording.run_dir, readonly=True)
    manifest = read_manifest(db)
    (left,) = events(db, "joined_not_drained")
    assert manifest["status"] == "incomplete" and manifest["not_drained"] == [left["src"]]
    assert left["state"] == "running" and set(left["last_saved"]) == {"ticker", f"main:{left['src']}"}
    saved = db.execute("SELECT MAX(seq) FROM messages WHERE src = 'ticker'").fetchone()[0]
    assert list(left["last_saved"]["ticker"].values()) == [saved]
    # its own seal counts what its outboxes kept; its exit code says incomplete, the seal line last
    assert code == exits.INCOMPLETE and " sealed incomplete" in output[-1], "".join(output)[-3000:]


def last_instance_events(db) -> dict[str, tuple[str, dict]]:
    """Per instance, its last lifecycle event (kind, detail)."""
    rows = db.execute("SELECT src, kind, detail FROM events WHERE kind LIKE 'instance_%' ORDER BY rowid")
    return {src: (kind, json.loads(detail)) for src, kind, detail in rows}


def test_every_instance_ends_with_instance_stopped_even_one_waiting_to_restart(run_session, tmp_path):
    """An instance killed just before the end waits for its restart (backoff): the session's end does
    not restart it, and its end is in the store with the exit code the supervisor saw."""
    instances = {f"echo{i}": {"class_path": "lab_classes.Echo"} for i in range(4)}
    instances["echo0"]["backoff"] = 60.0
    session, _ = run_session({"recorder": {"path": str(tmp_path)}, "instances": instances})
    victim = session.supervisor.instances["echo0"]
    os.kill(victim.pid, signal.SIGKILL)
    assert wait_until(session.supervisor._changed, lambda: victim.restarts == 1, 30)
    codes = session.close()
    db = connect(session.recording.run_dir, readonly=True)
    ends = last_instance_events(db)
    assert {name: kind for name, (kind, _) in ends.items()} == {n: "instance_stopped" for n in instances}
    assert ends["echo0"][1]["exit_code"] == -signal.SIGKILL == codes["echo0"]
    assert victim.restarts == 1 and read_manifest(db)["status"] == "complete"


def test_a_forced_quit_while_the_recorder_is_stuck_is_recorded_by_the_session(run_session, tmp_path):
    """The recorder is frozen (SIGSTOP) when the monitor forces the quit: the session journals the
    forced quit with the count the monitor showed, kills the stuck recorder, and the seal merges it."""
    config = {
        "recorder": {"path": str(tmp_path), "drain_timeout": 2},
        "instances": {"ticker": {"class_path": "lab_classes.Ticker"}},
    }
    session, observer = run_session(config)
    session.start()
    observer.wait_for("tick", 5)
    recorder = session.recording.process
    os.kill(recorder.pid, signal.SIGSTOP)
    monitor = Bus(logged_in(session.address, "supervisor", "monitor"), client_id="seal-test-monitor")
    monitor.connect()
    try:
        force = RecorderCommand(command="shutdown", forced_by="monitor:test", unconfirmed=1234)
        Requester(monitor, session.topics, Stamper("monitor:test")).send(
            session.topics.recorder_control(), force
        )
        assert recorder.wait_stopped(30), "the stuck recorder was not stopped"
    finally:
        monitor.close()
    session.close()
    run_dir = session.recording.run_dir
    assert not (run_dir / "journal.jsonl").exists()  # merged by the seal
    db = connect(run_dir, readonly=True)
    (forced,) = events(db, "forced_quit")
    assert (
        forced["by"] == "monitor:test" and forced["unconfirmed"] == 1234 and forced["noted_by"] == "session"
    )
    manifest = read_manifest(db)
    assert [f["unconfirmed"] for f in manifest["forced_quit"]] == [1234]
    assert manifest["status"] == "incomplete" and manifest["unsaved"] > 0  # the ticks its outbox kept
    assert "a forced quit by monitor:test with 1234 unconfirmed" in seal_line(run_dir)


def test_a_journal_left_by_a_dead_session_is_merged_by_ether_sessions_and_open_session(tmp_path):
    from ether.data.recorder import journal
    from ether.data.recorder.store import Store

    for name in ("a", "b"):
        run_dir = tmp_path / f"20261203-100000-default-{name}"
        Store(run_dir).set_manifest(
            run_id=run_dir.name, session="default", status="incomplete", started_at=1.0
        )
        journal.note(run_dir, "forced_quit", by="monitor:x", unconfirmed=7, noted_by="session")
        (run_dir / "journal.jsonl").open("a").write("not json\n")  # a torn line is skipped, not believed
    first, second = sorted(tmp_path.iterdir())
    listing = subprocess.run(
        [sys.executable, "-m", "ether", "sessions", "--data", str(tmp_path)], capture_output=True, text=True
    )
    assert listing.returncode == 0 and not (first / "journal.jsonl").exists(), listing.stderr
    recorded = open_session(second)
    assert [e["detail"]["unconfirmed"] for e in recorded.events if e["kind"] == "forced_quit"] == [7]
    assert recorded.manifest["forced_quit"][0]["by"] == "monitor:x"
    recorded.close()
    assert journal.merge(second) == 0  # once only


def test_ether_run_with_unprocessed_inputs_exits_incomplete_and_shows_them(tmp_path):
    """A subscriber slower than its source, and a drain too short to catch up: what it never handled is
    in `ether sessions`, in `open_session(...).unprocessed`, in the seal line (printed last), and
    `ether run` exits 6 (incomplete)."""
    config_file = tmp_path / "lab.yaml"
    instances = {
        "ticker": {"class_path": "lab_classes.Ticker"},
        "sink": {"class_path": "seal_classes.SlowSink"},
    }
    recorder = {"path": str(tmp_path / "data"), "drain_timeout": 1}
    config_file.write_text(json.dumps({"recorder": recorder, "instances": instances}))
    proc = ether_run(config_file, "--headless", "--port", "0", "--timeout", "8", env=env())
    url = next(m.group(1) for line in proc.stdout if (m := re.search(r"Ether is running on (\S+)", line)))
    observer = Observer(BrokerAddress.parse(url), "tick")
    observer.wait_for("tick", 100, timeout=60)  # the sink is far behind by now
    observer.close()
    proc.send_signal(signal.SIGINT)
    output = proc.stdout.read().strip().splitlines()
    code = proc.wait(60)
    run = open_session(next((tmp_path / "data").iterdir()))
    (sink,) = [u for u in run.unprocessed if u["instance"] == "sink"]
    ranges = sink["ranges"]["ticker"]
    assert (
        sink["durable"] > 0 and sum(b - a + 1 for boot in ranges.values() for a, b in boot) == sink["durable"]
    )
    assert run.manifest["status"] == "incomplete" and run.manifest["unprocessed"] == {"sink": sink["durable"]}
    handled = run.records("tick")
    run.close()
    assert len(handled) > sink["durable"] > 0
    assert code == exits.INCOMPLETE, output[-20:]
    assert not [line for line in output if "did not stop cleanly" in line]  # its backlog was left
    assert output[-1].startswith("Session ") and f"{sink['durable']} not processed by sink" in output[-1]
    listing = subprocess.run(
        [sys.executable, "-m", "ether", "sessions", "--data", str(tmp_path / "data")],
        capture_output=True,
        text=True,
    )
    header, row = listing.stdout.splitlines()[:2]
    assert header.split()[-1] == "unprocessed" and row.split()[-1] == str(sink["durable"])


def test_what_a_joined_supervisor_left_in_its_outboxes_is_counted_against_the_store(broker, tmp_path):
    """The recorder freezes while the other supervisor ends: that one stops with messages in its
    outboxes and says which; the seal counts exactly those the store does not hold."""
    session = f"two{uuid.uuid4().hex[:6]}"
    owner = new_session(
        {"session": session, "recorder": {"path": str(tmp_path / "owner")}}, broker_url=broker
    )
    owner.open()
    recorder = owner.recording.process
    try:
        ticker = {"ticker": {"class_path": "lab_classes.Ticker"}}
        # its drains cannot end before their timeout (nothing gets confirmed): a short one
        guest, output, reader = guest_run(tmp_path, session, owner.address.url, ticker, drain_timeout=1)
        ticks = Observer(owner.address, f"{session}/tick")
        ticks.wait_for(f"{session}/tick", 20)
        os.kill(recorder.pid, signal.SIGSTOP)
        try:
            frozen_at = time.time()
            # a tick stamped after this cannot be confirmed: the guest's outbox holds at least one
            ticks.wait_until(lambda seen: any(m and m.t > frozen_at for _, _, m in seen), "a later tick")
            ticks.close()
            guest.send_signal(signal.SIGINT)  # its drain cannot finish: nothing gets confirmed
            code = guest.wait(90)
            reader.join(10)
        finally:
            os.kill(recorder.pid, signal.SIGCONT)
        owner.close()
    finally:
        owner.close()
    guest_outboxes = next((tmp_path / "guest").iterdir()) / "outbox"
    kept = {
        (boot, seq)
        for path in guest_outboxes.glob("*.sqlite")
        for boot, seq in sqlite3.connect(path).execute("SELECT boot, seq FROM outbox")
    }
    db = connect(owner.recording.run_dir, readonly=True)
    stored = {(boot, seq) for boot, seq in db.execute("SELECT boot, seq FROM messages WHERE seq IS NOT NULL")}
    (stopped,) = events(db, "joined_stopped")
    manifest = read_manifest(db)
    assert kept and code == exits.INCOMPLETE, "".join(output)[-3000:]  # its own seal: unsaved
    assert sum(stopped["unsaved"].values()) == len(kept - stored) == manifest["unsaved"]
    assert manifest["status"] == ("incomplete" if kept - stored or manifest["missing"] else "complete")


@needs_mosquitto
def test_a_supervisor_waits_for_the_announced_recorder_instead_of_making_a_second_store(request, tmp_path):
    """A retained 'ready' recorder status is believed until that recorder answers or its status changes
    (a Last Will that came late: there is none, this supervisor records); one that does neither is an
    error that names it. A busy recorder's late answer never makes a second store of one session."""
    url = request.getfixturevalue("mosquitto").url
    topics = Topics(f"stale{uuid.uuid4().hex[:6]}")
    announced = Observer(BrokerAddress.parse(url), topics.recorder_control())  # plays the announced recorder
    status = topics.recorder_status()
    ready = RecorderStatus(state="ready", pid=1, run_dir="/elsewhere").payload()
    announced.bus.publish_and_wait(status, encode(ready), retain=True)
    try:
        joining = new_session({"session": topics.session, "recorder": {"path": str(tmp_path)}}, url)
        with pytest.raises(RecorderNotReady, match=r"says it is ready but did not answer within 2 s"):
            joining.open(timeout=2)
        joining = new_session({"session": topics.session, "recorder": {"path": str(tmp_path)}}, url)
        opening = threading.Thread(target=joining.open)
        opening.start()
        announced.wait_for(topics.recorder_control(), 2)  # asked again; it waits for the answer
        assert opening.is_alive() and joining.recording.process is not None
        gone = RecorderStatus(state="dead", pid=1).payload()
        announced.bus.publish_and_wait(status, encode(gone), retain=True)
        opening.join(60)
        assert joining.recording.recorder_run == str(joining.recording.run_dir)  # it records the session
        joining.close()
    finally:
        announced.bus.publish_and_wait(status, b"", retain=True)
        announced.close()
