"""Hostile input with real processes: bad metadata, forged system messages, conflicts, oversized payloads.

Every message from the network is hostile: none of these may crash a process, lose other messages, or
change the record beyond what the message itself is.
"""

from __future__ import annotations

import json
import sqlite3

from ether.data.recorder.store import connect

ECHO = {"echo": {"class_path": "lab_classes.Echo"}}


def recorded(tmp_path, instances=None, **extra) -> dict:
    return {"recorder": {"path": str(tmp_path)}, "instances": instances or {}, **extra}


def store_of(session) -> sqlite3.Connection:
    return connect(session.recording.run_dir, readonly=True)


def barrier(session) -> None:
    """Return once the recorder has committed everything it received so far."""
    process = session.recording.process
    reply = process.requester.request(session.topics.recorder_control(), {"command": "barrier"}, 10)
    assert reply["ok"]


def test_bad_metadata_neither_crashes_the_recorder_nor_loses_its_batch(run_session, tmp_path):
    session, observer = run_session(recorded(tmp_path))
    bad = ['{"n": 100, "_ether": {"seq": 1e400}}', '{"n": 101, "_ether": {"seq": 18446744073709551616}}']
    for i in range(20):
        observer.publish("plain", json.dumps({"n": i}))
    for raw in bad:
        observer.publish("plain", raw)
    for i in range(20, 40):
        observer.publish("plain", json.dumps({"n": i}))
    observer.wait_for("plain", 42)  # through the broker: the recorder has them too, or soon
    barrier(session)
    pid = session.recording.process.pid
    session.close()
    db = store_of(session)
    rows = db.execute("SELECT payload, src, seq FROM messages WHERE topic = 'plain' ORDER BY row").fetchall()
    assert sorted(json.loads(r["payload"])["n"] for r in rows) == [*range(40), 100, 101]
    assert all(r["src"] is None and r["seq"] is None for r in rows)  # the bad ones are stored as foreign
    starts = db.execute("SELECT COUNT(*) FROM events WHERE kind = 'recorder_start'").fetchone()[0]
    assert starts == 1 and session.recording.process.pid == pid  # never crashed, never restarted
    events = [json.loads(r[0]) for r in db.execute("SELECT detail FROM events WHERE kind = 'bad_metadata'")]
    assert [(e["topic"], e["field"]) for e in events] == [("plain", "seq"), ("plain", "seq")]
