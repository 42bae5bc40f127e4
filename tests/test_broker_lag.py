"""A broker that falls behind is said to be behind: the supervisor's log, its retained status
(broker_lag_s), the monitor's banner and the store. Made deterministic by stopping the broker
(SIGSTOP): nothing it carries comes back, as with a broker minutes behind."""

from __future__ import annotations

import json
import os
import signal
import threading

from ether.data.recorder.store import connect
from ether.monitor.model import SessionModel
from ether.runtime.session import LAG_BEHIND
from ether.transport.waiting import wait_until


def test_a_stalled_broker_is_shown_behind_then_caught_up(run_session, tmp_path, caplog):
    session, observer = run_session({"recorder": {"path": str(tmp_path)}})
    model = SessionModel(session.address, session.topics.session)
    model.connect()
    lag, behind = session.lag, threading.Event()
    measured = lag.on_tick

    def watch(value: float) -> None:
        measured(value)
        if value >= LAG_BEHIND:
            behind.set()

    lag.on_tick = watch
    status = session.topics.supervisor_status(session.name)
    os.kill(session.embedded.pid, signal.SIGSTOP)
    try:
        assert behind.wait(30), "the session never measured its stopped broker behind"
    finally:
        os.kill(session.embedded.pid, signal.SIGCONT)

    def lags() -> list[float]:
        return [p["broker_lag_s"] for p, _ in observer.on(status)]

    assert wait_until(observer._changed, lambda: max(lags()) >= LAG_BEHIND, 30), lags()
    said = next(p for p, _ in observer.on(status) if p["broker_lag_s"] >= LAG_BEHIND)
    model._on_supervisor(session.name, said)  # what the monitor's banner makes of it
    assert any("BROKER BEHIND" in p for p in model.snapshot().problems)
    caught_up = lambda: lags()[-1] < LAG_BEHIND and max(lags()) >= LAG_BEHIND  # noqa: E731
    assert wait_until(observer._changed, caught_up, 30), lags()  # caught up: said again
    assert "s behind: every message is delayed" in caplog.text and "the broker caught up" in caplog.text
    model.close()
    session.close()

    db = connect(session.recording.run_dir, readonly=True)
    (event,) = [
        json.loads(r[0]) for r in db.execute("SELECT detail FROM events WHERE kind = 'broker_behind'")
    ]
    assert event["worst_lag_s"] >= LAG_BEHIND and "at_end" not in event
