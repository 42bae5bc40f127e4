"""ether_lite against the host contract: what a board publishes (schema, state, readings, replies, error
events) fits docs/schemas/, and what the host sends it (through the host's own device view) is accepted.
Real MicroPython and CPython, against the host's real embedded broker."""

from __future__ import annotations

import pytest
from harness import TIMEOUT, body_of

from ether.boards.devices import DeviceView
from ether.contract import schemas
from ether.contract.topics import Topics
from ether.contract.wire import Stamper
from ether.transport.bus import Bus
from ether.transport.requests import Requester

TOPICS = Topics()


@pytest.fixture(params=["micropython", "cpython"])
def target(request) -> str:
    return request.param


@pytest.fixture
def host(broker):
    """The host's side: a bus, a requester and the device view, as an instance or script has them."""
    bus = Bus(broker.address, client_id="contract-host")
    bus.connect()
    requester = Requester(bus, TOPICS, Stamper("contract-host"))
    yield DeviceView(bus, TOPICS, requester)
    bus.close()


def board_messages(observer) -> list[tuple[str, dict]]:
    """Every message the board sent, by topic kind (its readings are data; replies go to reply topics)."""
    found = []
    with observer.changed:
        items = list(observer.items)
    for topic, raw, _ in items:
        where = TOPICS.parse(topic)
        if where is None or raw == b"{}":  # a client's probe
            continue
        body = body_of(raw)
        meta = body.get("_ether") if isinstance(body, dict) else None
        from_board = (meta and meta.get("src") == "thermo1") or where.kind in (
            "device_schema",
            "device_state",
        )
        if from_board:
            found.append((where.kind, body))
    return found


def test_what_a_board_publishes_fits_the_contract(broker, observer, start_board, host):
    start_board("thermostat.py", broker.address.host, str(broker.address.port))
    host.wait_online("thermo1", TIMEOUT)
    # host-built commands, through the host's own path: an actuator on its topic, a sensor by call
    assert host.call("thermo1", "heater", {"on": True}, TIMEOUT) is True
    assert host.call("thermo1", "fan", {"level": 2, "label": "low", "gain": 1.5}, TIMEOUT) == "low:2:1.5"
    assert host.call("thermo1", "firmware_note", {}, TIMEOUT) == "simulated"
    observer.publish("thermo1.heater", {"on": "yes"})  # no reply_to: an error event
    observer.wait_for(TOPICS.errors())
    observer.wait_for("thermo1.temperature", count=3)
    sent = board_messages(observer)
    for kind, body in sent:
        schemas.check(kind, body)
    kinds = {kind for kind, _ in sent}
    assert kinds == {"device_schema", "device_state", "data", "reply", "errors"}, kinds


def test_a_board_refusal_fits_the_one_error_shape(broker, observer, start_board, host):
    start_board("thermostat.py", broker.address.host, str(broker.address.port))
    host.wait_online("thermo1", TIMEOUT)
    observer.publish(
        "thermo1.heater", {"on": "yes", "_ether": {"reply_to": "ether/default/reply/t", "corr": "1"}}
    )
    (reply,) = observer.wait_for("ether/default/reply/t")
    schemas.check("reply", reply)
    assert reply["error"]["kind"] == "validation", reply
