"""The outbox's large bodies live in files beside its SQLite file: kept until acknowledged, read back
byte-exact for a resend (also by the next process of the source), and deleted once acknowledged."""

from __future__ import annotations

import os
import signal
import threading
import uuid

import numpy as np

import ether
from ether.contract.wire import Stamper
from ether.data import outbox as outbox_module
from ether.data.outbox import SPOOL_FROM, Outbox
from ether.data.recorder.process import RecorderProcess


def test_large_bodies_are_kept_in_files_until_acknowledged(tmp_path, monkeypatch):
    monkeypatch.setattr(outbox_module, "SEGMENT_BYTES", 3 * SPOOL_FROM)  # a few bodies per file
    stamper = Stamper("camera")
    bodies = [os.urandom(SPOOL_FROM + i) for i in range(8)] + [b'{"small": 1}']
    box = Outbox(tmp_path / "camera.sqlite")
    with box.transaction():
        box.add([(stamper.stamp(), "frames", body) for body in bodies])
    folder = tmp_path / "camera.bodies"
    assert len(list(folder.iterdir())) == 3  # 8 large bodies, 3 per file; the small one in SQLite

    # the next process of the source (this one was killed: never closed) resends them as they were
    again = Outbox(tmp_path / "camera.sqlite")
    sent = again.unacknowledged(100, {})
    assert [(seq, body) for _, seq, _, body in sent] == list(enumerate(bodies, 1))

    assert again.ack(stamper.boot, 7)
    with again.transaction():
        again.delete_acknowledged()
    again.drop_bodies()  # the files whose every body is acknowledged
    assert sorted(os.listdir(folder)) == ["3"]  # bodies 7 and 8; a new process writes to file 4 on
    assert [seq for _, seq, _, _ in again.unacknowledged(100, {})] == [8, 9]

    assert again.ack(stamper.boot, 9)
    again.close()
    assert not folder.exists()  # nothing left to resend


def test_frames_kept_in_body_files_reach_a_restarted_recorder_byte_exact(run_session, tmp_path, monkeypatch):
    """The recorder is killed; frames published meanwhile wait in the outbox's body files and are
    resent, whole, when it is back."""
    back = threading.Event()
    restart = RecorderProcess._watch

    def restart_when_told(self, child, code):
        back.wait(120)
        restart(self, child, code)

    monkeypatch.setattr(RecorderProcess, "_watch", restart_when_told)
    session, _ = run_session(
        {"session": f"bodies{uuid.uuid4().hex[:6]}", "recorder": {"path": str(tmp_path)}}
    )
    process = session.recording.process
    os.kill(process.pid, signal.SIGKILL)
    process.child.process.wait(10)
    rng = np.random.default_rng(1)
    frames = [rng.integers(0, 255, (120, 160, 3), dtype=np.uint8) for _ in range(5)]  # 57,600 B each
    blobs = [os.urandom(SPOOL_FROM * 2) for _ in range(5)]
    for frame, blob in zip(frames, blobs, strict=True):
        session.publish("camera", {"image": frame, "raw": blob})
    data = session.recording.data
    assert data.flush(60)
    assert data.pending == 5
    back.set()
    assert data.drain(120, closing=False) == 0
    session.close()

    recorded = ether.open_session(session.recording.run_dir)
    records = recorded.records("camera")
    assert [r["raw"] for r in records] == blobs
    for record, frame in zip(records, frames, strict=True):
        assert np.array_equal(record["image"], frame)
    assert recorded.manifest["status"] == "complete"
    assert not (session.recording.run_dir / "outbox").exists()  # nothing unsaved: no file left behind
