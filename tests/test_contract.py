"""The contract: committed JSON Schemas match the models, Topics.parse inverts the builders, and every
message a real session sends (instances, supervisor, recorder, a simulated ether_lite board) fits it."""

from __future__ import annotations

import json
import threading

import pytest

import ether
from ether.contract import schemas
from ether.contract.messages import (
    ON_TOPIC,
    EtherMeta,
    InstanceCommand,
    RecorderCommand,
    SessionCommand,
    ok,
    read_reply,
    refused,
)
from ether.contract.topics import KINDS, Topic, Topics, covers
from ether.contract.wire import Meta, Stamper
from ether.transport.bus import Bus


def test_committed_schemas_match_the_models():
    committed = {p.name: p.read_text() for p in schemas.FOLDER.glob("*.json")}
    generated = schemas.schemas()
    stale = sorted(n for n in generated if committed.get(n) != generated[n])
    extra = sorted(
        set(committed) - set(generated) - {"config.schema.json"}
    )  # ether.config's own, tested there
    assert not stale and not extra, (
        f"docs/schemas/ differs from ether.contract.messages (stale: {stale}, no model: {extra});"
        " run python -m ether.contract.schemas"
    )


def test_every_topic_kind_has_a_message():
    assert set(ON_TOPIC) == set(KINDS)


@pytest.mark.parametrize("session", ["default", "lab1"])
def test_parse_inverts_every_builder(session):
    t = Topics(session)
    built = {
        t.data("Sensor.read"): Topic("data", "", "Sensor.read"),
        t.data("a/b"): Topic("data", "", "a/b"),
        t.instance_status("gen1"): Topic("instance_status", "gen1"),
        t.instance_control("gen1"): Topic("instance_control", "gen1"),
        t.instance_call("store", "DataStore.get_value"): Topic(
            "instance_call", "store", "DataStore.get_value"
        ),
        t.errors(): Topic("errors"),
        t.session_control(): Topic("session_control"),
        t.supervisor_status("host-1-ab"): Topic("supervisor_status", "host-1-ab"),
        t.replies("ether-x-main"): Topic("reply", "ether-x-main"),
        f"{t.replies('me')}/probe": Topic("reply", "me", "probe"),
        t.recorder_status(): Topic("recorder_status"),
        t.recorder_control(): Topic("recorder_control"),
        t.recorder_ack("main:host-1"): Topic("recorder_ack", "main:host-1"),
        t.recorder_resend(t.data("x/y")): Topic("recorder_resend", "", t.data("x/y")),
        t.recorder_closing(): Topic("recorder_closing"),
        t.device_call("thermo1"): Topic("device_call", "thermo1"),
        t.device_method("thermo1", "temperature"): Topic("data", "", "thermo1.temperature"),
        t.device_schema_all().replace("+", "thermo1"): Topic("device_schema", "thermo1"),
        t.device_state_all().replace("+", "thermo1"): Topic("device_state", "thermo1"),
    }
    for topic, expected in built.items():
        assert t.parse(topic) == expected, topic


@pytest.mark.parametrize(
    "topic",
    [
        "ether/other/errors",  # another session's
        "ether/lab1/instance//status",  # an empty name
        "ether/lab1/instance/a/b/status",
        "ether/lab1/recorder/unknown",
        "ether/lab1/reply",
        "$SYS/broker/uptime",
        "lab2/data",  # another named session's data
    ],
)
def test_parse_refuses_what_is_not_in_the_layout(topic):
    assert Topics("lab1").parse(topic) is None


@pytest.mark.parametrize(
    "wide, narrow, covered",
    [
        ("a/#", "a/b", True),
        ("a/#", "a", True),  # '#' also matches its parent level
        ("a/+", "a/b", True),
        ("a/#", "a/+/#", True),
        ("a/+", "a/#", False),
        ("a/+/#", "a/#", False),  # a/# matches 'a', a/+/# does not
        ("a/b", "a/#", False),
        ("+/b", "a/+", False),  # crossed: both match a/b, neither covers the other
        ("#", "$SYS/x", False),  # wildcards at the first level do not match $-topics
        ("$share/g/a/#", "a/b", False),  # a shared subscription covers nothing
        ("a/b", "a/b/c", False),
    ],
)
def test_covers_says_whether_every_topic_of_one_filter_matches_the_other(wide, narrow, covered):
    assert covers(wide, narrow) is covered


def test_the_wire_metadata_is_the_contract_envelope():
    """The data path checks ``_ether`` with wire.Meta (cheaper than pydantic): both say the same."""
    meta = Stamper("gen1").stamp(["a.1"])
    meta.reply_to, meta.corr = "ether/default/reply/me", "7"
    schemas.check("data", {"value": 1, "_ether": meta.to_dict()})
    assert set(Meta.__dataclass_fields__) <= set(EtherMeta.model_fields)
    assert EtherMeta.model_validate(meta.to_dict()).model_dump(exclude_none=True) == meta.to_dict()


def test_replies_have_one_error_shape():
    assert ok(None).payload() == {"ok": True, "result": None}  # null is a result
    assert refused("not_found", "no key 'k'").payload() == {
        "ok": False,
        "error": {"kind": "not_found", "message": "no key 'k'"},
    }
    schemas.check("reply", ok([1, 2]).payload())
    schemas.check("reply", refused("validation", "field 'x'").payload())
    with pytest.raises(ValueError, match="does not fit the contract"):
        schemas.check("reply", {"ok": False, "error": "a string"})
    # read tolerantly all the same: a foreign sender's text error, or something else entirely
    assert read_reply({"ok": False, "error": "boom"}).error.message == "boom"
    assert read_reply(42).error.message == "unexpected reply 42"


def test_commands_are_checked_where_they_are_built():
    schemas.check("session_control", SessionCommand(command="stop", instance="gen1").payload())
    schemas.check(
        "recorder_control", RecorderCommand(command="shutdown", forced_by="me", unconfirmed=3).payload()
    )
    with pytest.raises(ValueError, match="command"):
        InstanceCommand(command="explode")


class Traffic:
    """Every message on the broker, as raw JSON by topic."""

    def __init__(self, address) -> None:
        self.messages: list[tuple[str, bytes]] = []
        self.changed = threading.Condition()
        self.bus = Bus(address, client_id="contract-observer")
        self.bus.connect()
        self.bus.subscribe("#", self._on_message)

    def _on_message(self, topic: str, raw: bytes) -> None:
        with self.changed:
            self.messages.append((topic, raw))
            self.changed.notify_all()

    def wait_for(self, predicate, what: str, timeout: float = 15.0) -> None:
        with self.changed:
            assert self.changed.wait_for(lambda: any(predicate(t) for t, _ in self.messages), timeout), what


LAB = {
    "instances": {
        "store": {"class_path": "lab_classes.DataStore"},
        "echo": {"class_path": "lab_classes.Echo"},
        "bench": {
            "class_path": "ether.boards.simulator.SimulatedBoard",
            "kwargs": {"device": "bench1", "board": "device_classes.Bench"},
        },
    }
}


def test_everything_a_session_sends_fits_the_contract():
    ether.tap(LAB)
    session = ether._current()
    topics = session.topics
    traffic = Traffic(session.address)
    try:
        ether.save("DataStore", "put", {"key": "k", "value": 1})
        assert ether.get("DataStore", "get_value", {"key": "k"}) == 1
        with pytest.raises(ether.NotFound):
            ether.get("DataStore", "get_value", {"key": "missing"})
        traffic.bus.publish(topics.data("in"), b'{"value": "not a number"}')  # an error event
        traffic.wait_for(lambda t: t == topics.errors(), "an error event")
        session.pause(True, ["echo"])
        session.pause(False, ["echo"])
        board = ether.devices.wait("bench1")
        assert board.set_heater(on=True) is True
        assert board.call("battery") == 3.7  # through the device call topic
        ether.pub({"x": 1}, "from_main")  # the script's data: acknowledged, and in its closing report
        ether.pub({"value": 2}, "in")  # echo handles it: its processed report follows
        barrier = RecorderCommand(command="barrier")
        assert read_reply(session.supervisor.requester.request(topics.recorder_control(), barrier, 10)).ok
        traffic.wait_for(lambda t: t == topics.recorder_ack(session.stamper.source), "the script's ack")
    finally:
        ether.shutdown()
        traffic.bus.close()
    seen = set()
    for topic, raw in traffic.messages:
        where = topics.parse(topic)
        if where is None or (where.kind == "reply" and where.detail):  # a client's own probes
            continue
        schemas.check(where.kind, json.loads(raw))
        seen.add(where.kind)
    expected = set(ON_TOPIC) - {"session_control", "recorder_resend"}  # not sent in this session
    assert seen == expected, f"not seen: {expected - seen}"
