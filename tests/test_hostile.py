"""Hostile input with real processes: bad metadata, forged system messages, conflicts, oversized payloads.

Every message from the network is hostile: none of these may crash a process, lose other messages, or
change the record beyond what the message itself is.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import struct
from dataclasses import replace

import pytest

from ether.contract.wire import Meta
from ether.data.recorder.store import connect
from support import Observer, logged_in, recorder_barrier
from test_control_plane import mosquitto, needs_mosquitto  # noqa: F401 (a fixture)

ECHO = {"echo": {"class_path": "lab_classes.Echo"}}


def recorded(tmp_path, instances=None, **extra) -> dict:
    return {"recorder": {"path": str(tmp_path)}, "instances": instances or {}, **extra}


def store_of(session) -> sqlite3.Connection:
    return connect(session.recording.run_dir, readonly=True)


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
    recorder_barrier(session)
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


def errors_of(observer, count: int = 1, **match) -> list[dict]:
    """Wait for ``count`` error events whose fields include ``match``; return them."""
    topic = "ether/default/errors"
    with observer._changed:
        observer._changed.wait_for(lambda: len(_matching(observer.on(topic), match)) >= count, 15)
    found = _matching(observer.on(topic), match)
    assert len(found) >= count, f"expected {count} error events like {match}, got {observer.on(topic)}"
    return found


def _matching(messages, match: dict) -> list[dict]:
    return [p for p, _ in messages if all(p.get(k) == v for k, v in match.items())]


def test_an_instance_reports_bad_metadata_and_handles_the_next_message(run_session, tmp_path):
    session, observer = run_session(recorded(tmp_path, ECHO))
    bad = {
        "seq": '{"value": 1, "_ether": {"seq": 1e400}}',
        "t": '{"value": 2, "_ether": {"t": NaN}}',
        "parents": json.dumps({"value": 3, "_ether": {"parents": ["p"] * 10_000}}),
        "src": json.dumps({"value": 4, "_ether": {"src": "x" * 1000}}),
        "reply_to": json.dumps({"value": 5, "_ether": {"reply_to": "ether/#", "corr": "1"}}),
    }
    for raw in bad.values():
        observer.publish("in", raw)
    observer.publish("in", '{"value": 6}')
    outs = observer.wait_for("out", 6)  # foreign-with-error: still handled, without provenance
    assert sorted(p["value"] for p, _ in outs) == [1, 2, 3, 4, 5, 6]
    for field in bad:
        (event,) = errors_of(observer, instance="echo", field=field)
        assert event["topic"] == "in" and f"'_ether.{field}'" in event["reason"]
    assert not errors_of(observer, 0, instance="echo", traceback=None, field=None)  # no internal error


def test_an_ack_removes_nothing_beyond_what_the_outbox_has(run_session, tmp_path):
    session, observer = run_session(recorded(tmp_path))
    data = session.recording.data
    source, boot = session.stamper.source, session.stamper.boot
    recorder = session.recording.process.child.process
    os.kill(recorder.pid, signal.SIGSTOP)  # nothing is acknowledged but what the test sends
    forger = Observer(logged_in(session.address, "recorder"))  # the one role that may acknowledge
    try:
        for i in range(3):
            session.publish("x", {"n": i})
        ack_topic = session.topics.recorder_ack(source)
        forger.publish(ack_topic, json.dumps({boot: 10**9}))  # far beyond the 3 written: not believed
        forger.publish(ack_topic, json.dumps({boot: True}))  # not an ack: ignored, with an error event
        forger.publish(ack_topic, json.dumps({boot: 2**64}))
        assert len(errors_of(observer, 2, instance=source, topic=ack_topic)) == 2
        assert data.pending == 3  # the −999,997,000 of issue 12 is gone
    finally:
        forger.close()
        os.kill(recorder.pid, signal.SIGCONT)
    session.publish("x", {"n": 3})
    observer.wait_for("x", 4)
    recorder_barrier(session)
    session.close()
    db = store_of(session)
    assert db.execute("SELECT COUNT(*) FROM messages WHERE topic = 'x'").fetchone()[0] == 4
    assert json.loads(db.execute("SELECT value FROM manifest WHERE key = 'unsaved'").fetchone()[0]) == 0


def signed(session, payload: dict) -> bytes:
    """``payload`` as its ``src`` (or, for data, its ``_ether.src``) sends it: signed with that
    source's key, so the recorder believes who sent it and checks what it says."""
    from ether.contract.wire import Stamper, encode
    from ether.transport.access import BrokerKey
    from ether.transport.signing import sign

    meta = payload.pop("_ether", None)
    src = payload["src"] if meta is None else meta["src"]
    body = encode(payload, Stamper(src).control() if meta is None else Meta(**meta))
    return sign(body, BrokerKey.find(session.address).signing_key(session.topics.session, src))


def test_a_closing_report_cannot_add_phantom_gaps(run_session, tmp_path):
    session, observer = run_session(recorded(tmp_path))
    source, boot = session.stamper.source, session.stamper.boot
    session.publish("x", {"n": 1})
    observer.wait_for("x", 1)
    closing = session.topics.recorder_closing()
    reporter = Observer(logged_in(session.address, "instance"))
    try:
        reporter.publish(closing, signed(session, {"src": source, "boots": {boot: 10**9}}))
        reporter.publish(closing, signed(session, {"src": source, "boots": {boot: 2**64}}))
        reporter.publish(closing, signed(session, {"src": "a/b", "boots": {}}))
        reporter.publish(closing, signed(session, {"src": "ghost", "boots": {"b": 10**9}}))  # never heard of
        refused = errors_of(observer, 4, instance="recorder", topic=closing)
    finally:
        reporter.close()
    assert any("ahead of the highest seen (1)" in e["reason"] for e in refused)
    recorder_barrier(session)
    session.close()
    db = store_of(session)
    assert db.execute("SELECT COUNT(*) FROM gaps").fetchone()[0] == 0
    manifest = {r[0]: json.loads(r[1]) for r in db.execute("SELECT key, value FROM manifest")}
    assert manifest["status"] == "complete" and manifest["missing"] == 0
    kinds = [r[0] for r in db.execute("SELECT kind FROM events WHERE kind = 'bad_system_message'")]
    assert len(kinds) == 4


def test_a_duplicate_with_other_content_is_a_conflict(run_session, tmp_path):
    import ether
    from ether.data.recorder.store import payload_of

    session, observer = run_session(recorded(tmp_path))
    meta = {"id": "b0.1", "src": "sensor", "boot": "b0", "seq": 1, "t": 1.0}
    real = signed(session, {"v": 1, "_ether": meta})
    observer.publish("x", real)
    observer.publish("x", real)  # a resend: identical, deduplicated
    observer.publish("x", signed(session, {"v": 666, "_ether": meta}))  # a bug of the source itself
    observer.publish("x", signed(session, {"v": 666, "_ether": meta}))  # kept once
    binary = {**meta, "id": "b0.2", "seq": 2}
    for blob in (b"abc", b"abc", b"abd", b"abd"):  # the same header, other bytes: a conflict too
        observer.publish("x", signed(session, {"v": 2, "blob": blob, "_ether": binary}))
    events = errors_of(observer, 2, instance="recorder", field="seq")
    assert len(events) == 2 and events[0]["sender"] == "sensor" and "(sensor, b0, 1)" in events[0]["reason"]
    observer.wait_for("x", 8)
    recorder_barrier(session)
    session.close()
    run = ether.open_session(session.recording.run_dir)
    assert [(r["v"], r.get("blob")) for r in run.records("x")] == [(1, None), (2, b"abc")]
    assert [(c["src"], c["boot"], c["seq"], payload_of(c)) for c in run.conflicts] == [
        ("sensor", "b0", 1, {"v": 666}),
        ("sensor", "b0", 2, {"v": 2, "blob": b"abd"}),
    ]
    assert run.manifest["status"] == "incomplete" and run.manifest["conflicts"] == 2
    run.close()


def attacker(session) -> Observer:
    """A client that ignores the session's max_payload (as any foreign client may)."""
    return Observer(replace(session.address, max_payload=2**30))


def test_the_embedded_broker_refuses_an_oversized_message(run_session, tmp_path):
    session, observer = run_session(recorded(tmp_path, ECHO))
    big = attacker(session)
    try:
        size = 50 * 2**20
        big.publish("in", b'{"value": 7, "pad": "' + b"x" * (size - 30) + b'"}')
        big.publish("in", '{"value": 8}')  # the same connection goes on
        (event,) = errors_of(observer, instance="broker", topic="in")
        assert event["sender"] == big.bus.client_id and event["size"] >= size - 30
        assert [p["value"] for p, _ in observer.wait_for("out", 1)] == [8]
    finally:
        big.close()
    recorder_barrier(session)
    session.close()
    db = store_of(session)
    assert [json.loads(r[0]) for r in db.execute("SELECT payload FROM messages WHERE topic = 'in'")] == [
        {"value": 8}
    ]
    store = session.recording.run_dir / "session.sqlite"
    assert os.path.getsize(store) < 2**20  # the 188 MB of issue 12


def test_a_publisher_cannot_send_an_oversized_message(run_session, tmp_path):
    from ether.transport.bus import PayloadTooLarge

    session, observer = run_session(recorded(tmp_path, limits={"max_payload": "1KiB"}))
    with pytest.raises(PayloadTooLarge, match="max_payload"):
        session.publish("x", {"pad": "x" * 2000})
    with pytest.raises(PayloadTooLarge, match="max_payload"):  # arrays and bytes count whole
        session.publish("x", {"pad": os.urandom(2000)})
    session.publish("x", {"n": 1})  # its number was taken back: no gap
    observer.wait_for("x", 1)
    session.close()
    db = store_of(session)
    assert db.execute("SELECT seq FROM messages WHERE topic = 'x'").fetchall()[0][0] == 1
    assert (
        json.loads(db.execute("SELECT value FROM manifest WHERE key = 'status'").fetchone()[0]) == "complete"
    )


@needs_mosquitto
def test_receivers_refuse_what_a_broker_without_limit_delivers(mosquitto, tmp_path):  # noqa: F811
    from ether.runtime.session import new_session

    session = new_session(recorded(tmp_path, ECHO, limits={"max_payload": "1MiB"}), broker_url=mosquitto.url)
    session.open()
    observer = attacker(session)
    try:
        observer.publish("in", b'{"value": 7, "pad": "' + b"x" * 2**21 + b'"}')
        observer.publish("in", '{"value": 8}')
        for who in ("echo", "recorder"):
            (event,) = errors_of(observer, instance=who, topic="in")
            assert event["size"] > 2**21 and "max_payload" in event["reason"]
        assert [p["value"] for p, _ in observer.wait_for("out", 1)] == [8]
        recorder_barrier(session)
    finally:
        observer.close()
        session.close()
    db = store_of(session)
    assert db.execute("SELECT COUNT(*) FROM messages WHERE topic = 'in'").fetchone()[0] == 1
    (detail,) = [json.loads(r[0]) for r in db.execute("SELECT detail FROM events WHERE kind = 'oversized'")]
    assert detail["topic"] == "in" and detail["size"] > 2**21


@needs_mosquitto
def test_a_managed_mosquitto_drops_an_oversized_message(tmp_path):
    """Dropped, and the sender's next message gets through (with max_queued_messages 0, Mosquitto
    2.0.11 disconnected the sender for each such message and paho's resends made a loop: issue 12)."""
    from ether.runtime.session import new_session

    config = recorded(tmp_path, ECHO, limits={"max_payload": "1KiB"})
    session = new_session(config, broker_url="mosquitto")  # its message_size_limit is max_payload
    session.open()
    big = attacker(session)
    try:
        big.publish("in", b'{"value": 7, "pad": "' + b"x" * 2048 + b'"}')
        big.publish("in", '{"value": 8}')
        assert [p["value"] for p, _ in big.wait_for("out", 1)] == [8]
        recorder_barrier(session)
    finally:
        big.close()
        session.close()
    db = store_of(session)
    assert [json.loads(r[0]) for r in db.execute("SELECT payload FROM messages WHERE topic = 'in'")] == [
        {"value": 8}
    ]
    assert (
        db.execute("SELECT COUNT(*) FROM events WHERE kind = 'oversized'").fetchone()[0] == 0
    )  # never delivered


# -- fuzz ------------------------------------------------------------------------------------------

HUGE = "1e400"  # JSON text no Python float holds: replaced into the dumped text
BAD_FIELDS = {  # for each field of _ether: values it must refuse
    "seq": [HUGE, float("nan"), 2**64, 2**63, -1, -5, True, 3.5, "7", [1], {"a": 1}],
    "t": [HUGE, float("nan"), float("inf"), -1, 1e12, True, "now", [1], {}],
    "src": ["a/b", "a#", "x+y", "two words", "\n", "x" * 200, 5, True, [], {}],
    "boot": ["x" * 200, 5, 1.5, True, [], {"a": []}],
    "id": ["x" * 200, 5, False, [None]],
    "corr": ["x" * 200, 5, []],
    "parents": ["p", 5, {"a": 1}, [1], [None], ["x" * 200], ["p"] * 300],
    "reply_to": ["a/#", "+", "$SYS/x", "nul\x00", "x" * 2000, 5, [], {}],
}
GOOD_FIELDS = {
    "seq": 0,
    "t": 1.5,
    "src": "fuzz",
    "boot": "f0",
    "id": "f0.c1",
    "corr": "c",
    "parents": ["a.1"],
}
BAD_VALUES = [{"a": 1}, [1], "abc", None, HUGE, float("nan"), "x" * 1000, 1.5, [[[[]]]]]  # for `value: int`


def _dumps(value) -> bytes:
    return json.dumps(value).replace(json.dumps(HUGE), HUGE).encode()


MAGIC = b"\x89ETH"


def _frame(
    header: dict, data: bytes, magic: bytes = MAGIC, version: int = 1, length: int | None = None
) -> bytes:
    """Ether's binary encoding built by hand, so that any part of it can be wrong."""
    text = _dumps(header)
    head = (
        magic + bytes([version, 0, 0, 0]) + struct.pack("<I", len(text) if length is None else length) + text
    )
    return head + b"\0" * (-len(head) % 8) + data


def _binary(value: int, block=None) -> bytes:
    """A good frame holding ``value``, 8 bytes and three float64 (with ``block`` as its ``_ether``)."""
    header = {
        "value": value,
        "blob": {"$bytes": {"offset": 0, "nbytes": 8}},
        "x": {"$array": {"dtype": "<f8", "shape": [3], "order": "C", "offset": 8, "nbytes": 24}},
    }
    if block is not None:
        header["_ether"] = block
    return _frame(header, bytes(range(8)) + struct.pack("<3d", 1.0, 2.0, 3.0))


BAD_REFS = {  # for each field of an $array reference: values a reader must refuse
    "offset": [4096, -8, 2**70, 1.5, "0", None],
    "nbytes": [16, 4096, -24, True, None],
    "dtype": ["|O", "V8", "<f0", "x" * 100, 5, None, "i4,i4"],
    "shape": [[4], [-3], [2**40, 2**40], [1] * 40, "3", None],
    "order": ["Z", 1],
}


def bad_frame(rng) -> bytes:
    """A message that is not a valid frame: bad magic, version, header length, header or reference."""
    good = _binary(rng.randint(0, 9))
    (length,) = struct.unpack_from("<I", good, 8)
    kind = rng.randrange(6)
    if kind == 0:  # not the magic: a foreign binary payload
        return b"\x89ET" + rng.choice([b"X", b"h", b"\x00"]) + good[4:]
    if kind == 1:
        return good[:4] + bytes([rng.choice([0, 2, 255])]) + good[5:]
    if kind == 2:  # a header length past the end, or cutting the header short
        return good[:8] + struct.pack("<I", rng.choice([len(good), 2**32 - 1, length // 2, 0])) + good[12:]
    if kind == 3:
        return good[: rng.randint(0, 11)] if rng.random() < 0.5 else _frame({}, b"")[:8] + b"\x04\0\0\0{{{{"
    header = json.loads(good[12 : 12 + length])
    data = good[-32:]
    if kind == 4:
        field = rng.choice(sorted(BAD_REFS))
        header["x"]["$array"][field] = rng.choice(BAD_REFS[field])
    else:
        header["blob"] = rng.choice([{"$bytes": 5}, {"$bytes": {"offset": 30, "nbytes": 8}}, {"$array": []}])
    return _frame(header, data)


def fuzzed(rng, n: int) -> list[tuple[str, bytes]]:
    """``n`` hostile messages, each ('meta' | 'payload' | 'frame', raw): a bad ``_ether`` block on a good
    payload (JSON or binary), a payload Echo must refuse (not JSON, too deep, not an object, a ``value``
    that is no int), or a malformed binary frame."""
    out = []
    for i in range(n):
        if i % 2 == 0:
            if rng.random() < 0.1:
                block = rng.choice([5, "s", [1, 2], True, HUGE])
            else:
                block = {k: v for k, v in GOOD_FIELDS.items() if rng.random() < 0.5}
                for field in rng.sample(sorted(BAD_FIELDS), rng.randint(1, 3)):
                    block[field] = rng.choice(BAD_FIELDS[field])
            if rng.random() < 0.3:  # the same block in a binary message's header
                out.append(("meta", _binary(200_000 + i, block)))
            else:
                out.append(("meta", _dumps({"value": 200_000 + i, "_ether": block})))
            continue
        kind = rng.randrange(6)
        if kind == 5:
            out.append(("frame", bad_frame(rng)))
            continue
        if kind == 0:
            raw = b"\xff" + rng.randbytes(rng.randint(0, 64))
        elif kind == 1:
            raw = _dumps({"value": 1, "label": "x" * rng.randint(0, 50)})[: -rng.randint(1, 5)]
        elif kind == 2:
            depth = rng.randint(300, 3000)
            raw = b'{"value": ' + b"[" * depth + b"]" * depth + b"}"
        elif kind == 3:
            raw = _dumps(rng.choice([5, "str", [1, 2], None, True, HUGE]))
        else:
            raw = _dumps({"value": rng.choice(BAD_VALUES), "label": rng.choice(["", "l"])})
        out.append(("payload", raw))
    return out


FUZZ_BATCH = 50  # bad messages (each followed by a good one) sent before waiting for their answers


def test_fuzzed_messages_crash_nothing_and_each_is_an_error_event(run_session, tmp_path):
    import random

    from ether.contract.wire import MetaError, WireError, decode

    session, observer = run_session(recorded(tmp_path, ECHO))
    rng = random.Random(12)
    bad = fuzzed(rng, 700)
    good = list(range(len(bad)))  # after each bad one, a good one
    closings = [
        _dumps({"src": rng.choice(BAD_FIELDS["src"]), "boots": {"b": 1}})
        if rng.random() < 0.5
        else _dumps({"src": "fuzz", "boots": {rng.choice(["b", "x" * 200]): rng.choice(BAD_FIELDS["seq"])}})
        for _ in range(300)
    ]
    metas = [raw for kind, raw in bad if kind == "meta"]
    frames = [raw for kind, raw in bad if kind == "frame"]
    claimed = [raw for raw in frames if raw[:4] == MAGIC]  # the rest are foreign binary payloads
    # Paced: each batch's replies and error events come before the next batch is sent. Sent at once,
    # the ~10,000 deliveries they fan out to took amqtt over a minute at load 20-35 (each is still
    # made: its "Timeout waiting for PUBACK" only means the client read it more than 5 s after).
    outs_due = echo_due = recorder_due = 0
    for start in range(0, len(bad), FUZZ_BATCH):
        for i, (kind, raw) in enumerate(bad[start : start + FUZZ_BATCH], start):
            observer.publish("in", raw)
            observer.publish("in", json.dumps({"value": 100_000 + i}))
            outs_due += 1 + (kind == "meta")
            echo_due += 1
            recorder_due += kind == "meta" or (kind == "frame" and raw[:4] == MAGIC)
        observer.wait_for("out", outs_due, timeout=60)
        errors_of(observer, echo_due, instance="echo", topic="in")
        errors_of(observer, recorder_due, instance="recorder")
    reporter = Observer(logged_in(session.address, "instance"))  # a login that may send closing reports
    for start in range(0, len(closings), FUZZ_BATCH):
        for raw in closings[start : start + FUZZ_BATCH]:
            reporter.publish(session.topics.recorder_closing(), raw)
        recorder_due += len(closings[start : start + FUZZ_BATCH])
        errors_of(observer, recorder_due, instance="recorder")
    assert len(metas) > 300 and len(frames) > 40 and len(claimed) > 30
    assert sum(raw[:4] == MAGIC for raw in metas) > 50
    foreign_values = []
    for raw in metas:  # each refused by the reference reader, not only by the instance
        with pytest.raises(MetaError) as refused:
            decode(raw)
        foreign_values.append(refused.value.payload["value"])
    for raw in frames:
        with pytest.raises(WireError):
            decode(raw)
    # Echo handles every good message, and every bad block's (good) payload as a foreign message
    outs = observer.wait_for("out", len(good) + len(metas), timeout=60)
    values = sorted(p["value"] for p, _ in outs)
    assert values == sorted([100_000 + i for i in good] + foreign_values)
    echo_errors = errors_of(observer, len(bad), instance="echo", topic="in")
    assert len(echo_errors) == len(bad) and not any(e.get("traceback") for e in echo_errors)
    assert len([e for e in echo_errors if "field" in e]) == len(metas)  # "" for the whole block
    errors_of(observer, len(metas) + len(closings) + len(claimed), instance="recorder")
    reporter.close()
    recorder_barrier(session)
    assert session.recording.process.restarts == 0
    session.close()
    db = store_of(session)
    assert db.execute("SELECT COUNT(*) FROM messages WHERE topic = 'in'").fetchone()[0] == 2 * len(bad)
    kinds = dict(db.execute("SELECT kind, COUNT(*) FROM events GROUP BY kind").fetchall())
    assert kinds["bad_metadata"] == len(metas) and kinds["bad_system_message"] == len(closings)
    assert kinds["bad_frame"] == len(claimed)
    binary_metas = db.execute(  # foreign, their bytes kept
        "SELECT COUNT(*) FROM messages WHERE topic = 'in' AND src IS NULL AND data IS NOT NULL"
        " AND json_extract(payload, '$.x.\"$array\".dtype') = '<f8'"
    ).fetchone()[0]
    assert binary_metas == sum(raw[:4] == MAGIC for raw in metas)
    assert kinds["recorder_start"] == 1 and "unreadable" not in kinds
    assert (
        json.loads(db.execute("SELECT value FROM manifest WHERE key = 'status'").fetchone()[0]) == "complete"
    )
