"""ether_lite as a board, on every target (MicroPython from .py and .mpy, with its own MQTT client and
with adafruit_minimqtt; CPython, CPython + minimqtt), against the host's real embedded broker: the
topic contract of docs/devices.md."""

from __future__ import annotations

import signal
import time

import pytest
from harness import TIMEOUT, Messages

from ether.transport.broker import EmbeddedBroker

SCHEMA = "ether/default/device/thermo1/schema"
STATE = "ether/default/device/thermo1/state"
CALL = "ether/default/device/thermo1/call"
ERRORS = "ether/default/errors"


def board_args(broker, session: str = "default", buffer: int = 32) -> list[str]:
    return [broker.address.host, str(broker.address.port), session, str(buffer)]


def test_schema_and_state_announced(broker, observer, start_board, target):
    start_board("thermostat.py", *board_args(broker))
    (schema,) = observer.wait_for(SCHEMA)
    (state,) = observer.wait_for(STATE, lambda s: s["state"] == "online")
    assert schema["device"] == "thermo1" and schema["kind"] == "ether_lite"
    assert schema["lib_version"] == "0.1.0" and schema["firmware"] == "sim-1"
    assert schema["implementation"].startswith("cpython" if target.startswith("cpython") else "micropython")
    assert schema["boot"] == state["boot"]
    methods = schema["methods"]
    assert methods["temperature"] == {"kind": "sensor", "args": {}, "unit": "C", "period": 0.2}
    assert methods["firmware_note"]["period"] is None
    assert methods["heater"] == {"kind": "actuator", "args": {"on": "bool"}, "unit": None, "period": None}
    assert methods["fan"]["args"] == {"level": "int", "label": "str", "gain": "float"}


def test_periodic_readings_are_stamped_gap_free(broker, observer, start_board):
    start_board("thermostat.py", *board_args(broker))
    readings = observer.wait_for("thermo1.temperature", count=8)
    metas = [r["_ether"] for r in readings]
    assert [m["seq"] for m in metas] == list(range(1, 9))
    boot = metas[0]["boot"]
    assert all(m["boot"] == boot and m["src"] == "thermo1" and m["id"] == f"{boot}.{m['seq']}" for m in metas)
    # the board's clock to the millisecond: readings 0.2 s apart have distinct, increasing times
    # (a float32 board's time.time() would give them all the same t, a whole-second clock five of them)
    times = [m["t"] for m in metas]
    assert all(isinstance(t, float) for t in times)
    assert times == sorted(times) and len(set(times)) == len(times), times
    assert abs(times[-1] - time.time()) < 60  # this machine's clock: the board runs here too
    assert set(readings[0]) == {"temperature", "heater", "_ether"}


def test_actuator_round_trip_and_call(broker, observer, start_board):
    start_board("thermostat.py", *board_args(broker))
    observer.wait_for(STATE, lambda s: s["state"] == "online")
    observer.publish(
        "thermo1.heater", {"on": True, "_ether": {"id": "host.1", "reply_to": "r/test", "corr": "c1"}}
    )
    (reply,) = observer.wait_for("r/test", lambda r: r["_ether"]["corr"] == "c1")
    assert reply["ok"] is True and reply["result"] is True
    assert reply["_ether"]["parents"] == ["host.1"] and reply["_ether"]["seq"] == 0
    observer.wait_for("thermo1.temperature", lambda r: r["heater"] is True)

    # a plain value fills an actuator's only argument; ints are accepted as floats
    observer.publish(
        "thermo1.fan", {"level": 3, "label": "low", "gain": 2, "_ether": {"reply_to": "r/test", "corr": "c2"}}
    )
    (reply,) = observer.wait_for("r/test", lambda r: r["_ether"]["corr"] == "c2")
    assert reply == {"ok": True, "result": "low:3:2.0", "_ether": reply["_ether"]}

    # any method on request, a sensor too: the reading is also published on its topic
    observer.publish(
        CALL, {"method": "firmware_note", "args": {}, "_ether": {"reply_to": "r/test", "corr": "c3"}}
    )
    (reply,) = observer.wait_for("r/test", lambda r: r["_ether"]["corr"] == "c3")
    assert reply["ok"] is True and reply["result"] == "simulated"
    (note,) = observer.wait_for("thermo1.firmware_note")
    assert note["root"] == "simulated" and note["_ether"]["seq"] >= 1


@pytest.mark.parametrize(
    "topic, body, kind, expected",
    [
        ("thermo1.heater", {"on": "yes"}, "validation", "argument 'on': expected bool"),
        ("thermo1.heater", {}, "validation", "missing argument 'on'"),
        ("thermo1.heater", {"on": True, "power": 3}, "validation", "unknown argument 'power'"),
        (
            "thermo1.fan",
            {"level": 1.5, "label": "x", "gain": 1.0},
            "validation",
            "argument 'level': expected int",
        ),
        ("thermo1.broken", {"x": 1.0}, "exception", "broken() raised ValueError: broken on purpose"),
        (CALL, {"method": "nope"}, "unknown_service", "no method 'nope'"),
        (CALL, {"args": {}}, "validation", "field 'method'"),
    ],
)
def test_bad_arguments_get_an_error_reply(broker, observer, start_board, topic, body, kind, expected):
    """Refusals in the contract's one error shape, {"ok": false, "error": {"kind", "message"}}."""
    start_board("thermostat.py", *board_args(broker))
    observer.wait_for(STATE, lambda s: s["state"] == "online")
    observer.publish(topic, {**body, "_ether": {"reply_to": "r/bad", "corr": "bad1"}})
    (reply,) = observer.wait_for("r/bad")
    assert reply["ok"] is False and set(reply["error"]) == {"kind", "message"}, reply
    assert reply["error"]["kind"] == kind and expected in reply["error"]["message"], reply
    assert reply["_ether"]["corr"] == "bad1"
    # the node is still alive and answering
    observer.publish("thermo1.heater", {"on": False, "_ether": {"reply_to": "r/bad", "corr": "ok1"}})
    observer.wait_for("r/bad", lambda r: r["_ether"]["corr"] == "ok1" and r["ok"] is True)


def test_errors_without_reply_to_go_to_the_errors_topic(broker, observer, start_board):
    start_board("thermostat.py", *board_args(broker))
    observer.wait_for(STATE, lambda s: s["state"] == "online")
    observer.publish("thermo1.heater", b"not json")
    observer.publish("thermo1.heater", {"on": 1})
    first, second = observer.wait_for(ERRORS, count=2)
    assert first["instance"] == "thermo1" and first["topic"] == "thermo1.heater"
    assert "invalid JSON" in first["reason"]
    assert "argument 'on'" in second["reason"]


def test_last_will_says_lost_when_the_board_dies(broker, observer, start_board):
    board = start_board("thermostat.py", *board_args(broker))
    (online,) = observer.wait_for(STATE, lambda s: s["state"] == "online")
    board.kill()
    (lost,) = observer.wait_for(STATE, lambda s: s["state"] == "lost")
    assert lost["device"] == "thermo1" and lost["boot"] == online["boot"]


def test_named_session_prefixes_data_topics(broker, observer, start_board):
    start_board("thermostat.py", *board_args(broker, session="lab2"))
    observer.wait_for("ether/lab2/device/thermo1/schema")
    observer.wait_for("lab2/thermo1.temperature")
    observer.publish("lab2/thermo1.heater", {"on": True, "_ether": {"reply_to": "r/s", "corr": "s1"}})
    (reply,) = observer.wait_for("r/s")
    assert reply["ok"] is True


def _stop_broker(broker, observer, board) -> None:
    """Stop the broker with the board paused: a reading the broker acknowledged while it was closing
    the observer's connection first would reach nobody (the broker's loss, not the board's)."""
    board.process.send_signal(signal.SIGSTOP)
    observer.connected.clear()  # not left to the observer noticing the stop: it may do so late
    broker.stop()
    board.process.send_signal(signal.SIGCONT)


def _restart_broker(broker, observer, board) -> EmbeddedBroker:
    """Start the broker again with the board paused until the observer is subscribed, so that the
    observer, not the board, cannot be the one that misses the buffered readings."""
    board.process.send_signal(signal.SIGSTOP)
    try:
        again = EmbeddedBroker(port=broker.address.port)
        again.address = again.start()
        assert observer.connected.wait(TIMEOUT)
    finally:
        board.process.send_signal(signal.SIGCONT)
    return again


def test_reconnect_after_broker_restart_delivers_buffered_readings(broker, observer, start_board, target):
    board = start_board("thermostat.py", *board_args(broker))
    observer.wait_for("thermo1.temperature", count=3)
    _stop_broker(broker, observer, board)
    board.wait_line("connection lost")
    board.wait_line("cannot connect", count=2)  # >= 1.5 s of readings taken while disconnected
    restarted = _restart_broker(broker, observer, board)
    try:
        board.wait_line("connected to", count=2)
        # the board's second "online" comes after its new subscriptions, on the same connection
        observer.wait_for(STATE, lambda s: s["state"] == "online", count=2)
        # resubscribed: an actuator call works on the new connection
        observer.publish("thermo1.heater", {"on": True, "_ether": {"reply_to": "r/re", "corr": "re1"}})
        observer.wait_for("r/re")
        last = observer.wait_for("thermo1.temperature", lambda r: r["heater"] is True)[0]["_ether"]["seq"]
        seqs = sorted(
            {r["_ether"]["seq"] for r in observer.all("thermo1.temperature") if r["_ether"]["seq"] <= last}
        )
        assert seqs == list(range(1, last + 1)), "a reading went missing across the broker restart"
        assert last > 10
    finally:
        restarted.stop()


def test_full_buffer_drops_oldest_and_counts(broker, observer, start_board, target):
    board = start_board("thermostat.py", *board_args(broker, buffer=3))
    observer.wait_for("thermo1.temperature", count=2)
    _stop_broker(broker, observer, board)
    board.wait_line("connection lost")
    board.wait_line("buffer full")
    restarted = _restart_broker(broker, observer, board)
    try:
        (state,) = observer.wait_for(STATE, lambda s: s["state"] == "online" and s.get("dropped", 0) > 0)
        # each reading carries the boot's running drop count once there is one, including the drop
        # its own arrival caused; once the link is back, nothing more is dropped
        (reading,) = observer.wait_for(
            "thermo1.temperature", lambda r: r["_ether"].get("dropped", 0) >= state["dropped"]
        )
        dropped = reading["_ether"]["dropped"]
        last = reading["_ether"]["seq"]
        seqs = {r["_ether"]["seq"] for r in observer.all("thermo1.temperature")}
        missing = set(range(1, last + 1)) - seqs
        assert len(missing) == dropped, f"{dropped} dropped, but these are missing: {sorted(missing)}"
        assert dropped == state["dropped"], "a reading was dropped after the reconnect"
    finally:
        restarted.stop()


def test_oversize_message_is_dropped_with_an_error_event(broker, observer, start_board):
    """100 KB to an actuator topic: the board drops it as it arrives (a board has no room to hold it)
    and says so on the errors topic, then carries on."""
    board = start_board("thermostat.py", *board_args(broker))
    observer.wait_for(STATE, lambda s: s["state"] == "online")
    observer.publish("thermo1.heater", b'{"on": true, "pad": "' + b"x" * 100_000 + b'"}')
    (error,) = observer.wait_for(ERRORS)
    assert error["topic"] == "thermo1.heater" and "over 2048 bytes" in error["reason"], error
    observer.publish("thermo1.heater", {"on": True, "_ether": {"reply_to": "r/big", "corr": "b1"}})
    (reply,) = observer.wait_for("r/big")
    assert reply["ok"] is True
    assert "connection lost" not in board.output


def test_calls_during_readings_are_answered_once(broker, observer, start_board):
    """Calls arriving while the board waits for a reading's acknowledgement (minimqtt waits inside
    publish) are each answered once, and no reading is sent twice."""
    start_board("thermostat.py", *board_args(broker))
    observer.wait_for(STATE, lambda s: s["state"] == "online")
    for n in range(20):
        observer.publish(
            "thermo1.heater", {"on": n % 2 == 0, "_ether": {"reply_to": "r/many", "corr": str(n)}}
        )
    replies = observer.wait_for("r/many", count=20)
    assert sorted(int(r["_ether"]["corr"]) for r in replies) == list(range(20))
    last = observer.wait_for("thermo1.temperature", count=5)[-1]["_ether"]["seq"]
    seqs = [r["_ether"]["seq"] for r in observer.all("thermo1.temperature")]
    assert len(seqs) == len(set(seqs)), "a reading was sent twice"
    assert set(range(1, last + 1)) <= set(seqs)
    assert len(observer.all("r/many")) == 20


@pytest.mark.parametrize("target", ["micropython", "micropython-minimqtt"])
def test_frozen_board_is_shown_lost_by_keepalive(broker, observer, start_board, target):
    """A board that hangs (here: SIGSTOP) keeps its TCP connection open; the broker's keep-alive
    (1.5 x the board's 5 s) ends it and publishes the Last Will."""
    board = start_board("thermostat.py", *board_args(broker))
    (online,) = observer.wait_for(STATE, lambda s: s["state"] == "online")
    board.process.send_signal(signal.SIGSTOP)
    try:
        (lost,) = observer.wait_for(STATE, lambda s: s["state"] == "lost")
        assert lost["boot"] == online["boot"]
    finally:
        board.process.send_signal(signal.SIGCONT)


def test_observer_helper_reports_what_it_saw(broker):
    """The waiting helper fails with the topics it did see, not silently (guards the tests above)."""
    messages = Messages(broker.address.host, broker.address.port)
    try:
        messages.publish("x/y", {"a": 1})
        assert messages.wait_for("x/y") == [{"a": 1}]
    finally:
        messages.close()


def test_a_board_publishes_arrays_and_bytes_the_host_reads_as_numpy(broker, observer, start_board, target):
    np = pytest.importorskip("numpy")
    args = [broker.address.host, str(broker.address.port)] + (["minimqtt"] if "minimqtt" in target else [])
    start_board("adc.py", *args)
    first, second = observer.wait_for("adc1.block", count=2)
    for reading in (first, second):
        n = reading["n"]
        samples = reading["samples"]
        assert isinstance(samples, np.ndarray) and samples.dtype == np.int16 and samples.shape == (256,)
        assert np.array_equal(samples, np.arange(256) * 7 - 900 + n)
        assert np.array_equal(reading["pairs"], np.array([[0.5, 1.5], [2.5, 3.5]], dtype=np.float32))
        assert reading["raw"] == bytes(range(10)) and reading["rate"] == 1000.0
        assert reading["_ether"]["src"] == "adc1"
    assert [first["_ether"]["seq"], second["_ether"]["seq"]] == [1, 2]
