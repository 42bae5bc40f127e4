"""The recorder with real processes: every message saved once, with provenance; the ledger; sealing."""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import lab_classes
from ether.contract.messages import InstanceStatus
from ether.contract.wire import encode
from ether.data.recorder.ledger import Stream
from ether.data.recorder.recording import seal_crashed
from ether.data.recorder.store import CRASHED, RUNNING, Store, connect, open_gaps, summary
from ether.transport.bus import Bus
from support import logged_in, recorder_barrier


def store_of(session) -> sqlite3.Connection:
    return connect(session.recording.run_dir, readonly=True)


def recorded(tmp_path, instances=None, **extra) -> dict:
    return {"recorder": {"path": str(tmp_path)}, "instances": instances or {}, **extra}


def test_ledger_opens_and_fills_gaps():
    s = Stream("a", "b")
    assert s.add(1, 0.0) == (True, [], [])
    new, opened, _ = s.add(5, 1.0)
    assert new and [(g.first, g.last) for g in opened] == [(2, 4)] and s.contiguous == 1
    assert s.add(3, 2.0)[0] and [(g.first, g.last) for g in s.gaps] == [(2, 2), (4, 4)]
    assert s.add(3, 2.5)[0] is False  # a resend is not new
    s.add(2, 3.0)
    s.add(4, 3.0)
    assert s.gaps == [] and s.contiguous == 5
    tail = s.expect_until(8, 4.0)
    assert (tail.first, tail.last, tail.cause) == (6, 8, "tail")


def test_every_message_is_saved_once_with_provenance(run_session, tmp_path):
    session, observer = run_session(
        recorded(
            tmp_path,
            {"echo": {"class_path": "lab_classes.Echo"}, "ticker": {"class_path": "lab_classes.Ticker"}},
        )
    )
    for i in range(200):
        session.publish("in", {"value": 1000 + i, "label": "x"})
    observer.publish("in", '{"value": 1000, "label": "foreign"}')  # a plain MQTT client, no metadata
    outs = observer.wait_for("out", 200)
    session.close()

    db = store_of(session)
    manifest = summary(db)
    assert manifest["status"] == "complete" and manifest["missing"] == 0 and manifest["unsaved"] == 0
    rows = db.execute("SELECT * FROM messages WHERE topic = 'in' ORDER BY seq").fetchall()
    mine = [r for r in rows if r["src"]]
    assert [r["seq"] for r in mine] == list(range(1, 201))  # each exactly once
    assert [json.loads(r["payload"]) for r in rows if not r["src"]] == [{"value": 1000, "label": "foreign"}]
    out_ids = {m.id for _, m in outs}
    saved_out = {r["msg_id"]: r for r in db.execute("SELECT * FROM messages WHERE topic = 'out'")}
    assert out_ids <= set(saved_out)
    # provenance: each result names the message that caused it, and that message is in the store
    some = saved_out[next(iter(out_ids))]
    parent = json.loads(some["parents"])[0]
    assert db.execute("SELECT topic FROM messages WHERE msg_id = ?", (parent,)).fetchone()["topic"] == "in"
    m = dict((k, json.loads(v)) for k, v in db.execute("SELECT key, value FROM manifest"))
    assert m["code"]["lab_classes.Echo"]["sha256"] and m["git"]["commit"]
    assert m["config_resolved"]["instances"]["echo"]["class_path"] == "lab_classes.Echo"
    assert m["packages"]["paho-mqtt"] and m["host"] == socket.gethostname()
    assert m["stopped_at"] >= m["started_at"] and m["instance_exit_codes"]["echo"] == 0
    assert open_gaps(db) == []


def test_errors_and_restart_events_are_data(run_session, tmp_path):
    session, observer = run_session(recorded(tmp_path, {"echo": {"class_path": "lab_classes.Echo"}}))
    observer.publish("in", '{"value": 13}')  # raises inside the instance: an error event
    observer.wait_for("ether/default/errors", 1)
    session.close()
    db = store_of(session)
    errors = db.execute("SELECT payload FROM messages WHERE topic = 'ether/default/errors'").fetchall()
    error = json.loads(errors[0]["payload"])
    assert error["reason"] == "ValueError: unlucky number"
    source = Path(lab_classes.__file__).read_text().splitlines()
    raised_at = source.index('            raise ValueError("unlucky number")') + 1
    assert f'lab_classes.py", line {raised_at}, in echo' in error["traceback"]
    assert "ether/runtime" not in error["traceback"]  # Ether's calling frames are left out
    kinds = [r["kind"] for r in db.execute("SELECT kind FROM events")]
    assert "instance_ready" in kinds and "instance_stopped" in kinds and kinds[-1] == "sealed"


def test_recording_can_be_disabled(run_session, tmp_path):
    session, observer = run_session({"recorder": {"enabled": False, "path": str(tmp_path)}})
    session.publish("x", 1)
    observer.wait_for("x", 1)
    assert session.recording.run_dir is None and not list(tmp_path.iterdir())


def test_a_crashed_session_is_sealed_on_the_next_start(tmp_path):
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    store = Store(tmp_path / "20200101-000000-default-abcdef")
    store.set_manifest(status=RUNNING, pid=gone.pid, host=socket.gethostname(), started_at=1.0)
    store.close()
    alive = Store(tmp_path / "20200101-000001-default-000000")
    alive.set_manifest(status=RUNNING, pid=os.getpid(), host=socket.gethostname(), started_at=1.0)
    alive.close()
    assert [p.name for p in seal_crashed(tmp_path)] == ["20200101-000000-default-abcdef"]
    db = connect(tmp_path / "20200101-000000-default-abcdef", readonly=True)
    assert summary(db)["status"] == CRASHED


def test_a_forced_end_that_loses_data_is_recorded(run_session, tmp_path):
    session, observer = run_session({"recorder": {"path": str(tmp_path), "drain_timeout": 0.5}})
    process = session.recording.process
    process._stopping.set()  # as if the recorder could not be brought back
    os.kill(process.pid, 9)
    process.child.process.wait(10)
    for i in range(5):
        session.publish("lost", {"i": i})
    observer.wait_for("lost", 5)
    session.close()
    db = store_of(session)
    s = summary(db)
    assert s["status"] == "incomplete" and s["unsaved"] == 5
    forced = db.execute("SELECT detail FROM events WHERE kind = 'forced_end'").fetchone()
    assert json.loads(forced["detail"])["unsaved"] == 5


def test_kill_9_of_everything_leaves_a_readable_store_sealed_as_crashed(run_session, tmp_path):
    script = (
        "import sys, ether\n"
        f"ether.tap({{'recorder': {{'path': {str(tmp_path)!r}}}}})\n"
        "for i in range(50): ether.pub({'i': i}, 'samples')\n"
        "print('published', flush=True)\n"
        "sys.stdin.read()\n"
    )
    victim = subprocess.Popen(
        [sys.executable, "-c", script], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert victim.stdout.readline().strip() == "published"
    victim.kill()
    victim.wait(10)
    session, _ = run_session({"recorder": {"path": str(tmp_path)}})  # the next start seals the old one
    crashed = [p for p in tmp_path.iterdir() if p.name != session.recording.run_id]
    db = connect(crashed[0], readonly=True)
    s = summary(db)
    assert s["status"] == CRASHED and s["messages"] <= 50


def test_a_second_supervisor_joins_the_running_recorder(run_session, tmp_path):
    owner, observer = run_session({"recorder": {"path": str(tmp_path / "owner")}})
    script = (
        "import ether\n"
        f"ether.tap({{'recorder': {{'path': {str(tmp_path / 'guest')!r}}}}}, broker={owner.address.url!r})\n"
        "for i in range(20): ether.pub({'i': i}, 'joined')\n"
        "ether.shutdown()\n"
    )
    guest = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert guest.returncode == 0 and "joining that recorder" in guest.stderr, guest.stderr
    observer.wait_for("joined", 20)
    owner.close()
    db = store_of(owner)
    rows = db.execute("SELECT seq FROM messages WHERE topic = 'joined' ORDER BY seq").fetchall()
    assert [r[0] for r in rows] == list(range(1, 21)) and open_gaps(db) == []
    guest_store = next((tmp_path / "guest").iterdir())
    manifest = summary(connect(guest_store, readonly=True))
    assert manifest["messages"] == 0 and manifest["status"] == "complete"
    recorded_by = (
        connect(guest_store, readonly=True)
        .execute("SELECT value FROM manifest WHERE key = 'recorded_by'")
        .fetchone()[0]
    )
    assert json.loads(recorded_by)["run_dir"] == str(owner.recording.run_dir)


def test_recorder_and_streams_config_is_checked(tmp_path):
    import pytest

    from ether.config import ConfigError, load

    config = load({"recorder": {"path": "data", "drain_timeout": 3}, "streams": {"cam/#": "latest"}})
    assert config.recorder.policy("cam/preview") == "latest" and config.recorder.policy("data") == "durable"
    assert config.recorder.drain_timeout == 3 and config.recorder.path.endswith("data")
    assert load({"recorder": False}).recorder.enabled is False
    bad = tmp_path / "lab.yaml"
    bad.write_text("recorder:\n  paht: x\n")
    with pytest.raises(ConfigError, match=r"lab.yaml:2: recorder.paht: unknown key 'paht'"):
        load(bad)
    bad.write_text("streams:\n  cam: sometimes\n")
    with pytest.raises(ConfigError, match=r"lab.yaml:2: streams.cam: must be 'durable' or 'latest'"):
        load(bad)


def test_a_named_session_records_its_own_topics_only(run_session, tmp_path):
    lab1, observer = run_session({"session": "lab1", "recorder": {"path": str(tmp_path)}})
    lab1.publish("x", {"v": 1})
    observer.publish("x", '{"v": "not lab1"}')  # the default session's topic: not ours
    observer.wait_for("lab1/x", 1)
    lab1.close()
    db = store_of(lab1)
    rows = db.execute("SELECT topic, payload FROM messages").fetchall()
    assert [(r["topic"], r["payload"]) for r in rows] == [("x", '{"v":1}')]


def test_ether_run_ctrl_c_drains_and_seals_the_session(tmp_path):
    import signal

    from support import REPO

    lab = tmp_path / "lab.yaml"
    lab.write_text(
        f"recorder: {{path: {tmp_path / 'data'}}}\ninstances:\n  ticker: {{class_path: lab_classes.Ticker}}\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "ether", "run", str(lab), "--port", "0"],
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO / "tests")},
    )
    for line in proc.stderr:
        if "Ether is running" in line:
            break
    proc.send_signal(signal.SIGINT)
    _, rest = proc.communicate(timeout=60)
    assert proc.returncode == 0, rest
    assert "sealed complete" in rest
    run = next((tmp_path / "data").iterdir())
    db = connect(run, readonly=True)
    ticks = [r[0] for r in db.execute("SELECT seq FROM messages WHERE topic = 'tick' ORDER BY seq")]
    assert ticks == list(range(1, len(ticks) + 1)) and open_gaps(db) == []  # whatever ticked, all of it
    assert summary(db)["status"] == "complete"


def test_a_script_that_forgets_shutdown_still_stops_in_order_and_saves(tmp_path):
    from support import REPO

    steps = tmp_path / "steps.txt"
    script = (
        "import ether\n"
        f"ether.tap({{'recorder': {{'path': {str(tmp_path / 'data')!r}}}, 'instances': {{'life': "
        f"{{'class_path': 'lab_classes.Lifecycle', 'kwargs': {{'path': {str(steps)!r}}}}}, "
        "'ticker': {'class_path': 'lab_classes.Ticker'}}})\n"
        "ether.start()\n"  # ... and the script ends here, without ether.shutdown()
    )
    done = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO / "tests")},
    )
    assert done.returncode == 0, done.stderr
    assert "ended without ether.shutdown()" in done.stderr
    assert steps.read_text().split()[-3:] == ["save_all", "cleanup", "shutdown"]
    db = connect(next((tmp_path / "data").iterdir()), readonly=True)
    assert summary(db)["status"] == "complete" and open_gaps(db) == []


def test_the_recorder_status_counts_live_what_a_paused_instance_has_not_processed(run_session, tmp_path):
    """While someone polls its status (the monitor does), the recorder counts per instance what the
    store holds on its topics that it has not processed yet: a paused echo falls behind, then catches up."""
    session, observer = run_session(
        {"recorder": {"path": str(tmp_path)}, "instances": {"echo": {"class_path": "lab_classes.Echo"}}}
    )
    process = session.recording.process

    def unprocessed() -> dict | None:
        reply = process.requester.request(session.topics.recorder_control(), {"command": "status"}, 10)
        return reply["result"].get("unprocessed")

    session.pause(True, ["echo"])
    for i in range(5):
        session.publish("in", {"value": i})
    assert session.recording.data.drain(30) == 0  # all five in the store
    for expected in (5, 0):
        deadline = time.monotonic() + 60
        while (counted := unprocessed()) is None or counted.get("echo", 0) != expected:
            assert time.monotonic() < deadline, counted  # each ask keeps the count going (every 2 s)
            time.sleep(0.2)  # the monitor's pace of asking; the wait is on the condition above
        session.pause(False, ["echo"])
        observer.wait_for("out", 5)


def test_a_last_will_after_a_clean_stop_is_not_recorded_as_a_death(run_session, tmp_path):
    """Under load a broker now and then sends the Last Will of a client that had stopped: a ``dead``
    after its own ``stopped`` (same process) is not believed; a later process's death is."""
    session, _ = run_session({"recorder": {"path": str(tmp_path)}, "instances": {}})
    ghost = Bus(logged_in(session.address, "instance", "ghost"), client_id="ghost")  # its own login
    ghost.connect()
    topic = session.topics.instance_status("ghost")
    for state, pid in (("ready", 11), ("stopped", 11), ("dead", 11), ("ready", 12), ("dead", 12)):
        status = InstanceStatus.model_validate(
            {"instance": "ghost", "class": "m:C", "state": state, "pid": pid}
        )
        assert ghost.publish_and_wait(topic, encode(status.payload()))
    ghost.close()
    recorder_barrier(session)
    db = connect(session.recording.run_dir, readonly=True)
    events = [
        (k, json.loads(d)["pid"])
        for k, d in db.execute("SELECT kind, detail FROM events WHERE src = 'ghost'")
    ]
    assert events == [
        ("instance_ready", 11),
        ("instance_stopped", 11),
        ("instance_ready", 12),
        ("instance_dead", 12),
    ]
