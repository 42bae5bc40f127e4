"""Instance runtime: validation, error isolation, data fidelity, lifecycle order, periodic publishers."""

import json

import pytest

from ether.contract.topics import Topics

ERRORS = Topics().errors()


def one(name, class_path, **extra):
    return {"instances": {name: {"class_path": class_path, **extra}}}


def test_bad_message_then_good_message(run_session):
    session, observer = run_session(one("echo", "lab_classes.Echo"))
    observer.publish("in", b"{not json")
    observer.publish("in", json.dumps({"value": "abc"}))
    observer.publish("in", json.dumps({"label": "no value"}))
    observer.publish("in", "42")  # a bare number where an object is expected
    observer.publish("in", json.dumps({"value": 7}))
    out = observer.wait_for("out", 1)
    assert out[0][0]["value"] == 7
    errors = [p for p, _ in observer.wait_for(ERRORS, 4)]
    assert all(e["instance"] == "echo" and e["topic"] == "in" for e in errors)
    reasons = [e["reason"] for e in errors]
    assert "invalid JSON" in reasons[0]
    assert "field 'value'" in reasons[1] and "valid integer" in reasons[1]
    assert "field 'value': Field required" in reasons[2]
    assert "expected a JSON object" in reasons[3]


def test_exception_in_user_code_then_next_message(run_session):
    session, observer = run_session(one("echo", "lab_classes.Echo"))
    observer.publish("in", json.dumps({"value": 13}))
    observer.publish("in", json.dumps({"value": 14}))
    assert observer.wait_for("out", 1)[0][0]["value"] == 14
    error = observer.wait_for(ERRORS, 1)[0][0]
    assert error["reason"] == "ValueError: unlucky number" and error["method"] == "echo"
    assert session.active_instances()["echo"]["state"] == "ready"
    assert session.supervisor.instances["echo"].restarts == 0


@pytest.mark.parametrize(
    "payload",
    [
        {"nested": {"list": [1, 2, {"deep": [None, True, 1.5]}]}, "s": "ü"},
        [1, [2, [3]]],
        42,
        2.5,
        "text",
        True,
    ],
)
def test_data_fidelity_through_root(run_session, payload):
    session, observer = run_session(one("root", "lab_classes.RootEcho"))
    observer.publish("raw", json.dumps(payload))
    got, meta = observer.wait_for("raw_out", 1)[0]
    assert got == (payload if isinstance(payload, dict) else {"root": payload})
    assert meta.src == "root" and meta.seq == 1


def test_lifecycle_order_is_init_start_save_all_cleanup_shutdown(run_session, tmp_path):
    log = tmp_path / "steps.txt"
    session, _ = run_session(one("life", "lab_classes.Lifecycle", kwargs={"path": str(log)}))
    assert log.read_text().split() == ["constructed", "init"]  # init ran before tap returned
    session.start()
    assert session.close() == {"life": 0}
    assert log.read_text().split() == ["constructed", "init", "start", "save_all", "cleanup", "shutdown"]


def test_periodic_publisher_runs_after_start_with_gap_free_sequence(run_session):
    session, observer = run_session(one("ticker", "lab_classes.Ticker"))
    assert observer.on("tick") == []  # nothing before start
    session.start()
    ticks = observer.wait_for("tick", 10)
    assert [p["n"] for p, _ in ticks[:10]] == list(range(1, 11))
    assert [m.seq for _, m in ticks[:10]] == list(range(1, 11))


def test_a_blocking_handler_does_not_stop_status_or_shutdown(run_session):
    session, observer = run_session(one("blocker", "lab_classes.Blocker"))
    observer.publish("block", json.dumps({"seconds": 60}))
    reply = session.supervisor.requester.request(
        session.topics.instance_control("blocker"), {"command": "status"}, timeout=10
    )
    assert reply["ok"] and reply["result"]["state"] == "ready"
    codes = session.supervisor.stop(["blocker"], timeout=2)
    assert codes["blocker"] is not None  # stopped (terminated after the grace period), not left running


def test_pub_from_inside_and_direct_call_of_own_publisher(run_session):
    session, observer = run_session(one("chatty", "lab_classes.Chatty"))
    observer.publish("go", json.dumps({"n": 5}))
    chat = observer.wait_for("chat", 2)
    assert {p["via"] for p, _ in chat} == {"ether.pub", "direct call"}
    # both were caused by the "go" message: same parent
    assert len({tuple(m.parents) for _, m in chat}) == 1


def test_main_script_can_publish(run_session):
    session, observer = run_session(one("echo", "lab_classes.Echo"))
    session.publish("in", {"value": 3, "label": "from main"})
    assert observer.wait_for("out", 1)[0][0]["label"] == "from main"


@pytest.mark.parametrize("recorder", [True, False])
def test_a_handler_that_loops_sends_its_messages_while_it_runs(run_session, recorder, tmp_path):
    """What a handler publishes waits for it to return (one transaction with its input), but not
    longer than HOLD_SECONDS after the first: a loop in a handler streams, in order, none lost."""
    session, observer = run_session(
        {"recorder": recorder, "instances": {"loop": {"class_path": "lab_classes.LongLoop"}}}
    )
    flag = tmp_path / "stop"
    observer.publish("loop_go", json.dumps({"flag": str(flag)}))
    observer.wait_for("loop_tick", 1, timeout=30)  # the handler is still running: it waits for the flag
    flag.touch()
    done = observer.wait_for("loop_done", 1, timeout=30)[0][0]
    assert done["flagged"], done  # it stopped because a tick had arrived, not at its limit
    ticks = [p["n"] for p, _ in observer.on("loop_tick")]
    assert ticks == list(range(1, done["n"] + 1)), ticks


@pytest.mark.parametrize("recorder", [True, False])
@pytest.mark.parametrize("overlap", ["Overlap", "CrossedFilters"])
def test_overlapping_filters_handle_each_message_once(run_session, recorder, overlap):
    """A broker sends a client one copy of a message per subscription it matches: an instance whose
    filters overlap (ov/# and ov/b; or +/b and ov/+) still calls each handler once per message from an
    Ether source, with and without the recorder's ledger; and from a foreign client, whose messages
    have no identity, where one filter covers the other (no second subscription, so no copy)."""
    session, observer = run_session(
        {
            "recorder": recorder,
            "instances": {
                "overlap": {"class_path": f"lab_classes.{overlap}"},
                "sender": {"class_path": "lab_classes.OverlapSender"},
            },
        }
    )

    def outputs_until(end: dict) -> list:
        observer.wait_until(lambda ms: any(t == "ov_out" and p["got"] == end for t, p, _ in ms), f"{end}")
        return [p for p, _ in observer.on("ov_out")]

    observer.publish("ov_send", json.dumps({"n": 1}))
    observer.publish("ov_send_end", json.dumps({"n": 1}))
    got = outputs_until({"end": 1})
    assert sorted(p["by"] for p in got if p["got"] == {"n": 1}) == ["narrow", "wide"], got

    if overlap == "CrossedFilters":
        return  # a foreign message comes twice, and nothing tells the copies from two sends
    observer.publish("ov/b", json.dumps({"foreign": 2}))  # no _ether block: no identity to dedupe by
    observer.publish("ov/end", json.dumps({"end": 2}))
    got = outputs_until({"end": 2})
    assert sorted(p["by"] for p in got if p["got"] == {"foreign": 2}) == ["narrow", "wide"], got
