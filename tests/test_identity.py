"""Attacks by a client on the same machine, with real processes and brokers: each must do no harm.

The attacker is a plain MQTT client: anonymous (any local user on loopback), or holding an instance's
login (as if an instance, or anyone on a broker without our ACL, tried it)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import time
import uuid

import pytest

from ether.contract.messages import (
    InstanceCommand,
    RecorderClosing,
    RecorderCommand,
    SessionCommand,
    read_reply,
)
from ether.contract.wire import Meta, Stamper, encode
from ether.data.outbox import Outbox
from ether.data.recorder.store import connect, summary
from ether.transport.access import BrokerKey
from ether.transport.bus import Bus
from ether.transport.permissions import Login
from ether.transport.signing import sign, signed_by, source_key
from support import Observer

ECHO = {"echo": {"class_path": "lab_classes.Echo"}}


def recorded(tmp_path, instances=ECHO) -> dict:
    return {"recorder": {"path": str(tmp_path)}, "instances": instances}


def attacker(session, role: str | None = None) -> Bus:
    """Anonymous, or with a login of ``role`` derived from this user's key of the broker."""
    address = session.address
    if role is not None:
        address = BrokerKey.find(address).address(address, Login(role, "default", "mallory"))
    bus = Bus(address, client_id=f"mallory-{uuid.uuid4().hex[:6]}")
    bus.connect()
    return bus


def in_order(bus: Bus, observer: Observer) -> None:
    """Return once the broker handled everything ``bus`` sent before: its next message arrived."""
    marker = {"marker": uuid.uuid4().hex}
    bus.publish("sync", json.dumps(marker).encode())
    with observer._changed:
        assert observer._changed.wait_for(lambda: any(p == marker for p, _ in observer.on("sync")), 15)


def forged(src: str, boot: str, seq: int, key: bytes | None = None) -> bytes:
    meta = Meta(f"{boot}.{seq}", src, boot, seq, time.time())
    return sign(encode({"value": -seq, "label": "forged"}, meta), key)


def events(run_dir, kind: str) -> list[dict]:
    db = connect(run_dir, readonly=True)
    try:
        rows = db.execute("SELECT src, detail FROM events WHERE kind = ?", (kind,)).fetchall()
        return [{"src": r["src"], **json.loads(r["detail"])} for r in rows]
    finally:
        db.close()


def test_signatures_bind_a_message_to_its_source():
    key = source_key(b"k" * 32, "default", "echo")
    body = sign(encode({"x": 1}, Stamper("echo").stamp()), key)
    assert signed_by(body, key)
    assert not signed_by(body.replace(b'"x":1', b'"x":2'), key)  # content changed
    assert not signed_by(body, source_key(b"k" * 32, "default", "other"))  # another source's key
    assert not signed_by(encode({"x": 1}, Stamper("echo").stamp()), key)  # unsigned


def test_a_binary_frame_is_signed_over_its_header_and_its_data():
    import numpy as np

    from ether.contract.wire import decode

    key = source_key(b"k" * 32, "default", "amp")
    frame = sign(encode({"block": np.arange(6, dtype="<i2"), "raw": b"abc"}, Stamper("amp").stamp()), key)
    assert signed_by(frame, key)
    payload, _ = decode(frame)  # still Ether's binary encoding, its data section aligned
    assert payload["block"].tolist() == list(range(6)) and payload["raw"] == b"abc"
    assert not signed_by(frame[:-1] + b"d", key)  # a byte of the data section changed
    assert not signed_by(frame.replace(b'"seq":1', b'"seq":2'), key)  # the header changed
    assert not signed_by(frame, source_key(b"k" * 32, "default", "other"))


def unsigned_frame(src: str = "cam", data=b"\x07" * 1000) -> bytes:
    return encode({"frame": data, "n": 1}, Stamper(src).stamp())


def sig_of(frame: bytes) -> str:
    from ether.contract.arrays import sections

    return json.loads(bytes(sections(frame)[0]))["_ether"]["sig"]


def test_a_frame_signature_is_the_documented_scheme_2():
    """``2.<nonce>.<tag>``: the Poly1305 tag of the data section under the one-time key
    HMAC-SHA256(source key, "ether.frame.2", NUL, nonce, NUL, header), computed as docs/operations.md
    says."""
    import hashlib
    import hmac

    from cryptography.hazmat.primitives.poly1305 import Poly1305

    from ether.contract.arrays import sections

    key = source_key(b"k" * 32, "default", "cam")
    frame = sign(unsigned_frame(), key)
    scheme, nonce, tag = sig_of(frame).split(".")
    assert scheme == "2" and len(nonce) == 24 and len(tag) == 32
    header, data = (bytes(part) for part in sections(frame))
    as_signed = header[: header.index(b',"sig":')] + b"}}"  # the header without its sig
    once = hmac.new(key, b"ether.frame.2\0" + nonce.encode() + b"\0" + as_signed, hashlib.sha256).digest()
    assert Poly1305.generate_tag(once, data).hex() == tag


def test_equal_data_in_two_frames_gets_different_tags():
    key = source_key(b"k" * 32, "default", "cam")
    stamper = Stamper("cam")
    first, second = (sign(encode({"frame": b"\x07" * 1000}, stamper.stamp()), key) for _ in range(2))
    same_header = unsigned_frame()  # even the very same message, signed twice: a fresh one-time key each
    tags = {sig_of(f).split(".")[2] for f in (first, second, sign(same_header, key), sign(same_header, key))}
    assert len(tags) == 4
    assert all(signed_by(f, key) for f in (first, second))


def test_a_frame_signed_by_an_older_ether_still_verifies():
    """Scheme 1 on a frame (an older Ether's, or an outbox written by one): HMAC-SHA256 over the
    header and the data section, 32 hex digits."""
    import hashlib
    import hmac

    from ether.contract.arrays import assemble, sections

    key = source_key(b"k" * 32, "default", "cam")
    header, data = sections(unsigned_frame())
    sig = hmac.new(key, bytes(header) + bytes(data), hashlib.sha256).hexdigest()[:32].encode()
    old = assemble(bytes(header)[:-2] + b',"sig":"' + sig + b'"}}', [data])
    assert signed_by(old, key)
    assert not signed_by(old[:-1] + b"\x08", key)
    assert not signed_by(old, source_key(b"k" * 32, "default", "other"))


def test_a_frame_signature_out_of_place_is_refused():
    key = source_key(b"k" * 32, "default", "cam")
    frame = sign(unsigned_frame(), key)
    sig = sig_of(frame).encode()
    assert not signed_by(frame.replace(sig, sig[:-2]), key)  # a shortened tag
    assert not signed_by(frame.replace(sig, b"3" + sig[1:]), key)  # an unknown scheme
    body = sign(encode({"x": 1}, Stamper("cam").stamp()), key)  # a JSON message takes scheme 1 only
    json_sig = body[body.index(b',"sig":"') + 8 : -3]
    assert not signed_by(body.replace(json_sig, sig), key)


def test_the_recorder_refuses_a_frame_altered_or_signed_with_another_key(run_session, tmp_path):
    session, observer = run_session(recorded(tmp_path))
    mallory = attacker(session, "instance")
    keys = BrokerKey.find(session.address)
    own = keys.signing_key("default", "mallory")
    good = sign(unsigned_frame("mallory"), own)
    altered = bytearray(sign(unsigned_frame("mallory"), own))
    altered[-1] ^= 1  # one byte of the data section
    other = sign(unsigned_frame("echo"), own)  # claims echo, signed with mallory's key
    for frame in (good, bytes(altered), other):
        mallory.publish("frames", frame)
    in_order(mallory, observer)
    session.close()

    db = connect(session.recording.run_dir, readonly=True)
    rows = db.execute("SELECT src FROM messages WHERE topic = 'frames' ORDER BY row").fetchall()
    db.close()
    assert [r["src"] for r in rows] == ["mallory", None, None]
    unverified = events(session.recording.run_dir, "unverified_source")
    assert [e["claimed_src"] for e in unverified] == ["mallory", "echo"]


def test_a_copied_source_with_seqs_ahead_is_stored_as_foreign(run_session, tmp_path):
    session, observer = run_session(recorded(tmp_path))
    session.publish("in", {"value": 1})
    ((_, real),) = observer.wait_for("out", 1)
    mallory = attacker(session, "instance")
    for seq in range(real.seq + 1, real.seq + 6):  # just ahead of echo, as echo, on echo's topic
        mallory.publish("out", forged(real.src, real.boot, seq, key=os.urandom(32) if seq % 2 else None))
    in_order(mallory, observer)
    for value in range(2, 7):
        session.publish("in", {"value": value})
    observer.wait_for("out", 11)
    errors = observer.wait_for(session.topics.errors(), 5)
    session.close()

    db = connect(session.recording.run_dir, readonly=True)
    rows = db.execute("SELECT src, seq, payload FROM messages WHERE topic = 'out' ORDER BY row").fetchall()
    assert summary(db)["status"] == "complete" and summary(db)["missing"] == 0
    db.close()
    echo = [(r["seq"], json.loads(r["payload"])["value"]) for r in rows if r["src"] == "echo"]
    assert echo == [(n, n) for n in range(1, 7)]  # every real message, once
    foreign = [json.loads(r["payload"]) for r in rows if r["src"] is None]
    assert [f["label"] for f in foreign] == ["forged"] * 5
    unverified = events(session.recording.run_dir, "unverified_source")
    assert [e["claimed_src"] for e in unverified] == ["echo"] * 5
    assert all(p["instance"] == "recorder" and "'echo'" in p["reason"] for p, _ in errors)


def test_a_subscriber_still_handles_the_real_messages_of_a_copied_source(run_session, tmp_path):
    session, observer = run_session(recorded(tmp_path))
    session.publish("in", {"value": 1})
    ((_, real),) = observer.wait_for("in", 1)
    mallory = attacker(session)
    for seq in (2, 3, 4):  # the script's next seqs, first: echo must not take the real ones for resends
        mallory.publish("in", forged(real.src, real.boot, seq))
    in_order(mallory, observer)
    for value in (2, 3, 4):
        session.publish("in", {"value": value})
    outs = observer.wait_for("out", 7)
    assert sorted(p["value"] for p, _ in outs) == [-4, -3, -2, 1, 2, 3, 4]  # the forged ones as foreign
    assert session.close() == {"echo": 0}


def test_a_forged_acknowledgement_deletes_nothing(run_session, tmp_path):
    session, observer = run_session(recorded(tmp_path, {}))
    data = session.recording.data
    recorder = session.recording.process.child.process
    os.kill(recorder.pid, signal.SIGSTOP)  # it receives nothing while stopped: nothing is acknowledged
    try:
        for i in range(20):
            session.publish("in", {"value": i})
        assert data.pending == 20
        ack = session.topics.recorder_ack(data.stamper.source)
        watcher = Observer(
            BrokerKey.find(session.address).address(session.address, Login("supervisor", "default", "w")),
            ack,
        )
        for role in (None, "instance"):
            mallory = attacker(session, role)
            mallory.publish(ack, json.dumps({data.stamper.boot: 20}).encode())
            mallory.publish(ack, json.dumps({data.stamper.boot: 10**9}).encode())
            in_order(mallory, observer)
            mallory.close()
        assert watcher.on(ack) == [] and data.pending == 20  # the broker let no forged ack through
        watcher.close()
    finally:
        os.kill(recorder.pid, signal.SIGCONT)
    session.close()
    db = connect(session.recording.run_dir, readonly=True)
    saved = db.execute("SELECT COUNT(*) FROM messages WHERE topic = 'in'").fetchone()[0]
    assert (summary(db)["status"], saved) == ("complete", 20)
    db.close()


def test_an_outbox_believes_no_acknowledgement_beyond_what_it_sent(tmp_path):
    outbox = Outbox(tmp_path / "o.sqlite")
    meta = Stamper("s").stamp()
    outbox.add([(meta, "t", b"{}")])
    assert not outbox.ack(meta.boot, 10**9) and outbox.pending == 1
    assert outbox.ack(meta.boot, 1) and outbox.pending == 0
    outbox.close()


def test_a_forged_closing_report_adds_no_gap(run_session, tmp_path):
    session, observer = run_session(recorded(tmp_path))
    session.publish("in", {"value": 1})
    ((_, real),) = observer.wait_for("out", 1)
    report = RecorderClosing(src=real.src, boots={real.boot: 10**9})
    for role in (None, "instance"):  # anonymous: refused by the broker; an instance: not echo's signature
        mallory = attacker(session, role)
        key = BrokerKey.find(session.address).signing_key("default", "mallory")
        mallory.publish(
            session.topics.recorder_closing(),
            sign(encode(report.payload(), Stamper("mallory").control()), key),
        )
        in_order(mallory, observer)
        mallory.close()
    session.close()
    db = connect(session.recording.run_dir, readonly=True)
    assert summary(db)["status"] == "complete" and summary(db)["missing"] == 0
    assert db.execute("SELECT COUNT(*) FROM gaps").fetchone()[0] == 0
    db.close()
    assert [e["claimed_src"] for e in events(session.recording.run_dir, "unverified_source")] == ["echo"]


def test_forged_stop_and_end_of_session_are_ignored(run_session, tmp_path):
    session, observer = run_session(recorded(tmp_path))
    topics = session.topics
    for role in (None, "instance"):
        mallory = attacker(session, role)
        mallory.publish(topics.session_control(), encode(SessionCommand(command="shutdown").payload()))
        mallory.publish(
            topics.session_control(), encode(SessionCommand(command="stop", instance="echo").payload())
        )
        mallory.publish(
            topics.recorder_control(), encode(RecorderCommand(command="shutdown", forced_by="x").payload())
        )
        mallory.publish(
            topics.instance_control("echo"), encode(InstanceCommand(command="shutdown").payload())
        )
        in_order(mallory, observer)
        mallory.close()
    assert not session.end_requested.is_set()
    status = read_reply(
        session.supervisor.requester.request(topics.recorder_control(), RecorderCommand(command="status"), 10)
    )
    assert status.ok and status.result["state"] == "ready"
    session.publish("in", {"value": 5})
    assert observer.wait_for("out", 1)[0][0]["value"] == 5  # echo still runs
    assert session.close() == {"echo": 0}
    db = connect(session.recording.run_dir, readonly=True)
    assert summary(db)["status"] == "complete"
    db.close()


@pytest.mark.skipif(
    not shutil.which("mosquitto") and not os.path.exists("/usr/sbin/mosquitto"), reason="no mosquitto"
)
def test_managed_mosquitto_refuses_the_same_attacks(tmp_path):
    from ether.runtime.session import new_session

    session = new_session(recorded(tmp_path), broker_url="mosquitto")
    session.open()
    observer = Observer(session.address)
    try:
        session.publish("in", {"value": 1})
        ((_, real),) = observer.wait_for("out", 1)
        mallory = attacker(session)
        mallory.publish(
            session.topics.session_control(), encode(SessionCommand(command="shutdown").payload())
        )
        mallory.publish(session.topics.recorder_ack("echo"), json.dumps({real.boot: 10**9}).encode())
        mallory.publish("out", forged(real.src, real.boot, real.seq + 1))
        in_order(mallory, observer)
        mallory.close()
        assert not session.end_requested.is_set()
        session.publish("in", {"value": 2})
        observer.wait_for("out", 3)
    finally:
        observer.close()
        session.close()
    db = connect(session.recording.run_dir, readonly=True)
    rows = db.execute("SELECT src, seq FROM messages WHERE topic = 'out' ORDER BY row").fetchall()
    assert summary(db)["status"] == "complete"
    db.close()
    assert [(r["src"], r["seq"]) for r in rows] == [("echo", 1), (None, None), ("echo", 2)]
