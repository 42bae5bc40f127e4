"""Chaos (real processes, kill -9): after the drain, every message is in the store exactly once."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import sqlite3
import threading

import pytest

from ether.contract.messages import RecorderStatus
from ether.contract.wire import encode
from ether.data.recorder.store import connect, open_gaps, read_manifest, summary
from ether.transport.waiting import wait_until
from support import Observer, logged_in, recorder_barrier


def config(tmp_path, **extra) -> dict:
    return {
        "recorder": {"path": str(tmp_path)},
        "instances": {"echo": {"class_path": "lab_classes.Echo", "backoff": 0.05}},
        **extra,
    }


def kill_recorder(session) -> None:
    process = session.recording.process
    restarts = process.restarts
    os.kill(process.pid, signal.SIGKILL)
    process.child.process.wait(10)
    return restarts


def wait_recorder_back(session, restarts: int) -> None:
    process = session.recording.process
    assert wait_until(process._changed, lambda: process.restarts > restarts and process.ready(), 30)


def seqs(db, src_like: str, topic: str) -> list[int]:
    rows = db.execute(
        "SELECT seq FROM messages WHERE src LIKE ? AND topic = ? ORDER BY boot, seq", (src_like, topic)
    )
    return [r[0] for r in rows]


def test_recorder_killed_mid_stream_loses_nothing(run_session, tmp_path):
    session, observer = run_session(config(tmp_path))
    for i in range(1, 151):
        session.publish("in", {"value": 1000 + i})  # (13 would raise)
    observer.wait_for("out", 150)
    restarts = kill_recorder(session)
    for i in range(151, 301):  # published while no recorder runs: kept in the outboxes
        session.publish("in", {"value": 1000 + i})  # (13 would raise)
    observer.wait_for("out", 300)
    wait_recorder_back(session, restarts)
    for i in range(301, 401):
        session.publish("in", {"value": 1000 + i})  # (13 would raise)
    observer.wait_for("out", 400)
    session.close()

    db = connect(session.recording.run_dir, readonly=True)
    assert seqs(db, "main:%", "in") == list(range(1, 401))  # the script's messages, once each
    assert seqs(db, "echo", "out") == list(range(1, 401))  # the instance's results, once each
    assert open_gaps(db) == [] and summary(db)["status"] == "complete"
    kinds = [r[0] for r in db.execute("SELECT kind FROM events")]
    assert kinds.count("recorder_start") == 2


def test_publishing_instance_killed_and_restarted(run_session, tmp_path):
    session, observer = run_session(config(tmp_path))
    for i in range(1, 101):
        session.publish("in", {"value": 1000 + i})  # (13 would raise)
    first = observer.wait_for("out", 100)
    old_pid = first[0][0]["pid"]
    os.kill(old_pid, signal.SIGKILL)
    assert wait_until(
        session.supervisor._changed,
        lambda: (
            session.supervisor.instances["echo"].restarts == 1
            and session.supervisor.instances["echo"].state == "ready"
        ),
        30,
    )
    for i in range(101, 201):
        session.publish("in", {"value": 1000 + i})  # (13 would raise)
    outs = observer.wait_for("out", 200)
    assert outs[-1][0]["pid"] != old_pid
    session.close()

    db = connect(session.recording.run_dir, readonly=True)
    seen = {m.id for _, m in observer.on("out")}
    saved = [r[0] for r in db.execute("SELECT msg_id FROM messages WHERE topic = 'out'")]
    assert seen <= set(saved) and len(saved) == len(set(saved))  # all that was sent, exactly once
    boots = db.execute(
        "SELECT boot, COUNT(*), MAX(seq) FROM messages WHERE src = 'echo' GROUP BY boot"
    ).fetchall()
    assert len(boots) == 2 and all(count == top for _, count, top in boots)  # gap-free per boot
    assert open_gaps(db) == []
    kinds = [r[0] for r in db.execute("SELECT kind FROM events WHERE src = 'echo'")]
    assert "instance_restarting" in kinds and "new_boot" in kinds


def test_a_latest_stream_loses_samples_and_the_ledger_says_so(run_session, tmp_path):
    session, observer = run_session(config(tmp_path, streams={"preview": "latest"}))
    for i in range(1, 11):
        session.publish("preview", {"frame": i})
    observer.wait_for("preview", 10)
    recorder_barrier(session)
    restarts = kill_recorder(session)
    for i in range(11, 61):  # nobody records these, and nobody keeps them: a `latest` stream
        session.publish("preview", {"frame": i})
    observer.wait_for("preview", 60)
    wait_recorder_back(session, restarts)
    for i in range(61, 71):
        session.publish("preview", {"frame": i})
    observer.wait_for("preview", 70)
    session.close()

    db = connect(session.recording.run_dir, readonly=True)
    assert seqs(db, "main:%", "preview") == list(range(1, 11)) + list(range(61, 71))
    gaps = open_gaps(db)
    assert [(g["first_seq"], g["last_seq"]) for g in gaps] == [(11, 60)]
    assert gaps[0]["boot"].endswith("-latest") and summary(db)["missing"] == 50


@pytest.mark.parametrize("broker", [None, "mosquitto"], ids=["embedded", "managed-mosquitto"])
def test_broker_killed_mid_stream_is_restarted_and_loses_nothing(run_session, tmp_path, broker):
    """kill -9 of the session's broker while the script publishes: the session starts it again on its
    port, every client reconnects, the outboxes resend; each input is stored once and answered once."""
    if broker and not shutil.which("mosquitto") and not os.path.exists("/usr/sbin/mosquitto"):
        pytest.skip("no mosquitto")
    session, observer = run_session(config(tmp_path, broker=broker))
    broker = session.embedded
    port, old_pid = session.address.port, broker.pid
    for i in range(1, 151):
        session.publish("in", {"value": 1000 + i})
        if i == 100:  # mid-stream: some of these are in flight, unacknowledged
            os.kill(old_pid, signal.SIGKILL)
    assert wait_until(session.bus._state, lambda: broker.restarts == 1 and session.bus.connected, 30)
    assert (broker.pid != old_pid, session.address.port) == (True, port)
    for i in range(151, 301):
        session.publish("in", {"value": 1000 + i})
    session.close()  # the drain waits until every outbox is empty and echo has answered everything

    db = connect(session.recording.run_dir, readonly=True)
    assert seqs(db, "main:%", "in") == list(range(1, 301))  # the script's messages, once each
    assert seqs(db, "echo", "out") == list(range(1, 301))  # echo's answers, once each, no gaps
    answered = sorted(
        json.loads(r[0])["value"] for r in db.execute("SELECT payload FROM messages WHERE topic = 'out'")
    )
    assert answered == [1000 + i for i in range(1, 301)]  # each input processed once
    assert open_gaps(db) == [] and summary(db)["status"] == "complete"
    restarted = db.execute("SELECT detail FROM events WHERE kind = 'broker_restarted'").fetchall()
    assert [json.loads(r[0])["restarts"] for r in restarted] == [1]


def test_a_broker_that_cannot_be_restarted_ends_the_session_with_the_unsaved_counted(run_session, tmp_path):
    """The broker dies and its port is taken: the session ends at once (nothing waits for a broker that
    is not there) and the seal counts, per publisher, what was published but never saved."""
    session, observer = run_session(config(tmp_path))
    for i in range(1, 51):
        session.publish("in", {"value": 1000 + i})
    observer.wait_for("out", 50)
    with socket.socket() as taken:  # where the broker would listen again: someone else's now
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        session.embedded.requested_port = taken.getsockname()[1]
        os.kill(session.embedded.pid, signal.SIGKILL)
        for i in range(51, 101):  # no broker: only the script's outbox has them
            session.publish("in", {"value": 1000 + i})
        assert session.end_requested.wait(60)  # `ether run` and ether.run() end on this
    session.close()

    run_dir = session.recording.run_dir
    db = connect(run_dir, readonly=True)
    manifest = read_manifest(db)
    stored = set(seqs(db, "main:%", "in"))
    (outbox,) = (run_dir / "outbox").glob("main*.sqlite")  # the evidence beside the store
    with sqlite3.connect(outbox) as kept:
        unsaved = {r[0] for r in kept.execute("SELECT seq FROM outbox")}
    assert stored | unsaved == set(range(1, 101)) and set(range(51, 101)) <= unsaved  # none lost silently
    assert manifest["status"] == "incomplete" and manifest["unsaved"] >= len(unsaved)
    kinds = [r[0] for r in db.execute("SELECT kind FROM events")]
    assert "broker_lost" in kinds and "broker_restarted" not in kinds


def test_a_killed_instance_resends_its_unsaved_messages_after_restart(run_session, tmp_path):
    """Recorder down, the instance killed with unconfirmed results: its next process sends them."""
    session, observer = run_session(config(tmp_path))
    recorder = session.recording.process
    recorder._stopping.set()  # keep it down until we say so
    os.kill(recorder.pid, signal.SIGKILL)
    recorder.child.process.wait(10)
    for i in range(1, 51):
        session.publish("in", {"value": 1000 + i})
    first = observer.wait_for("out", 50)  # sent, but nobody confirmed them: they wait in echo's outbox
    old_pid, old_boot = first[0][0]["pid"], first[0][1].boot
    os.kill(old_pid, signal.SIGKILL)
    echo = session.supervisor.instances["echo"]
    assert wait_until(session.supervisor._changed, lambda: echo.restarts == 1 and echo.state == "ready", 30)
    recorder._stopping.clear()
    recorder.launch()
    recorder.wait_ready(30)
    session.close()

    db = connect(session.recording.run_dir, readonly=True)
    old = db.execute("SELECT seq FROM messages WHERE src = 'echo' AND boot = ? ORDER BY seq", (old_boot,))
    assert [r[0] for r in old] == list(range(1, 51))  # every result of the killed process, once
    assert seqs(db, "main:%", "in") == list(range(1, 51))
    assert open_gaps(db) == [] and summary(db)["status"] == "complete"


@pytest.mark.parametrize("broker", [None, "mosquitto"], ids=["embedded", "managed-mosquitto"])
def test_a_killed_recorder_is_announced_dead_by_its_supervisor_until_it_is_back(
    run_session, tmp_path, broker
):
    """kill -9 of the recorder, its restart held: the retained status says `dead` with the exit code
    the supervisor saw (not only a Last Will, which a recorder killed early never set); an anonymous
    client and an instance cannot overwrite it; the restart makes it `ready` again; the store keeps a
    `recorder_dead` event."""
    session, observer = run_session(config(tmp_path, broker=broker))
    recorder = session.recording.process
    topic, old_pid = session.topics.recorder_status(), recorder.pid
    gate = threading.Event()
    launch = recorder.launch
    recorder.launch = lambda: (gate.wait(60), launch())  # the restart waits for us
    restarts = kill_recorder(session)

    def retained() -> dict:
        reader = Observer(session.address, topic)
        try:
            return reader.wait_for(topic)[-1][0]
        finally:
            reader.close()

    def dead(messages) -> bool:
        return any(
            t == topic and p.get("state") == "dead" and p.get("exit_code") == -9 for t, p, _ in messages
        )

    observer.wait_until(dead, "dead status with the exit code", 30)
    assert retained() == {"state": "dead", "pid": old_pid, "exit_code": -9, "restarts": 0}
    forged = encode(RecorderStatus(state="ready", pid=old_pid).payload())
    forgers = [Observer(session.address), Observer(logged_in(session.address, "instance", "echo"))]
    for n, forger in enumerate(forgers):
        forger.publish(topic, forged)  # refused by the broker: only the recorder and its supervisor
        forger.publish("forged", str(n))  # allowed, and after the forgery: once it is here, so would be that
        observer.wait_until(lambda m, n=n: ("forged", n) in [(t, p) for t, p, _ in m], "the marker")
        forger.close()
    assert [p["state"] for p, _ in observer.on(topic)][-1] == "dead"
    assert retained()["state"] == "dead"

    gate.set()
    wait_recorder_back(session, restarts)
    assert retained()["state"] == "ready" and retained()["pid"] == recorder.pid != old_pid
    session.close()
    db = connect(session.recording.run_dir, readonly=True)
    events = [json.loads(r[0]) for r in db.execute("SELECT detail FROM events WHERE kind = 'recorder_dead'")]
    assert [(e["pid"], e["exit_code"]) for e in events] == [(old_pid, -9)]
