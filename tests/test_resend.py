"""Resending with flow control (real processes, the embedded amqtt broker): a recorder that comes back
to a large backlog gets it at the broker's pace; the broker keeps answering, nothing is lost and the
resend never dies."""

from __future__ import annotations

import logging
import uuid

from ether.data.recorder.store import connect, summary
from support import Observer, recorder_kept_down

BACKLOG = 3_000  # three resend windows; the resend before flow control sent it all at once


def test_a_recorder_back_to_a_large_backlog_stalls_nothing(run_session, tmp_path, monkeypatch, caplog):
    caplog.set_level(logging.WARNING, logger="ether.outbox")
    # the recorder's restart waits for `back`: the backlog is built while it is away
    session, back = recorder_kept_down(run_session, monkeypatch, f"resend{uuid.uuid4().hex[:6]}", tmp_path)
    for i in range(BACKLOG):
        session.publish("backlog", {"i": i})
    data = session.recording.data
    assert data.flush(60)  # all sent before the recorder is back: what it gets is the resend
    assert data.pending == BACKLOG  # nobody confirmed any of it

    back.set()
    probe = Observer(session.address, session.topics.data("probe"))
    try:
        for i in range(20):  # while the backlog is resent, a round trip through the broker still returns
            probe.publish(session.topics.data("probe"), b'{"i": %d}' % i)
            probe.wait_for(session.topics.data("probe"), i + 1, timeout=30)
    finally:
        probe.close()
    assert data.drain(300, closing=False) == 0
    session.close()

    db = connect(session.recording.run_dir, readonly=True)
    seqs = [r[0] for r in db.execute("SELECT seq FROM messages WHERE topic = 'backlog' ORDER BY seq")]
    assert seqs == list(range(1, BACKLOG + 1))  # every one, once
    assert summary(db)["status"] == "complete"
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.text
