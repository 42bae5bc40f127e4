"""Devices on the host: ether_lite boards in the live registry, calling them through ether.devices, typed
subscribers of their readings, the clock offset in the store, and the thermostat example run for real."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time

import pytest

import ether
from ether.boards.devices import check_arguments, view_of
from ether.data.recorder.store import connect, read_manifest
from ether.transport.broker import BrokerAddress
from ether.transport.waiting import wait_until
from support import REPO, Observer, ether_run

THERMOSTAT = REPO / "examples" / "thermostat" / "config.yaml"
TIMEOUT = 15.0

LAB = {
    "session": "lab7",  # a named session: every data topic is prefixed lab7/, the boards' too
    "instances": {
        "bench": {
            "class_path": "ether.boards.simulator.SimulatedBoard",
            "kwargs": {"device": "bench1", "board": "device_classes.Bench"},
        },
        "taker": {"class_path": "device_classes.ReadingTaker"},
    },
}


def test_devices_need_a_session():
    with pytest.raises(RuntimeError, match="no Ether session"):
        ether.devices["bench1"]


@pytest.fixture(scope="module")
def lab():
    """One session for the module: a simulated board 'bench1' and a typed subscriber of its readings."""
    ether.tap(LAB)
    session = ether._current()
    yield session
    ether.shutdown()


def wait_for_payload(observer: Observer, topic: str, predicate) -> None:
    """Wait until a message on ``topic`` whose payload satisfies ``predicate`` was seen."""
    with observer._changed:
        seen = observer._changed.wait_for(lambda: any(predicate(p) for p, _ in observer.on(topic)), TIMEOUT)
    assert seen, f"no such message on {topic!r}: {observer.on(topic)}"


@pytest.fixture
def observer(lab):
    observer = Observer(lab.address)
    yield observer
    observer.close()


def test_board_appears_beside_instances(lab):
    assert {"bench", "taker"} <= set(ether.get_active_instances())
    devices = ether.get_active_devices()
    assert "bench1" in devices and "bench1" in ether.devices and "bench1" in list(ether.devices)
    bench = devices["bench1"]
    assert bench["state"] == "online" and bench["firmware"] == "simulated" and bench["boot"]
    assert bench["methods"]["set_heater"] == {
        "kind": "actuator",
        "args": {"on": "bool"},
        "unit": None,
        "period": None,
    }
    assert bench["methods"]["fan"]["optional"] == ["label"]
    assert bench["implementation"].startswith("cpython") and time.time() - bench["last_seen"] < TIMEOUT
    view = view_of(lab)  # readings keep "last seen" fresh and tell the board's clock offset
    assert wait_until(view.changed, lambda: view.devices["bench1"].clock_offset is not None, TIMEOUT)
    assert abs(view.devices["bench1"].clock_offset) < 5  # one host, one clock: only the delivery delay
    assert "set_heater(on: bool)" in repr(ether.devices["bench1"])


def test_actuators_return_the_board_result(lab, observer):
    bench = ether.devices["bench1"]
    assert bench.set_heater(on=True) is True
    wait_for_payload(observer, "lab7/bench1.temperature", lambda p: p["heater"])  # the board's state changed
    assert bench.fan(level=2) == "auto:2"  # an optional argument may be left out
    assert bench.fan(level=2, label="max") == "max:2"
    assert bench.set_heater(False) is False  # the only argument may be given by position
    assert bench.call("set_heater", {"on": True}, timeout=TIMEOUT) is True
    (command, meta), *_ = observer.wait_for("lab7/bench1.set_heater", 1)  # commands travel (and are recorded)
    assert command == {"on": True} and meta.reply_to  # on the actuator's own topic


def test_sensor_reading_on_demand(lab, observer):
    assert ether.devices["bench1"].battery() == 3.7
    ((reading, meta),) = observer.wait_for("lab7/bench1.battery", 1)  # published like a periodic reading
    assert reading == {"root": 3.7} and meta.src == "bench1" and meta.seq > 0


def test_typed_subscriber_takes_device_readings(lab, observer):
    ((taken, meta),) = observer.wait_for("lab7/taken", 1)
    assert taken["types"] == ["float", "bool"] and taken["temperature"] == 21.0
    boot = ether.get_active_devices()["bench1"]["boot"]
    assert re.fullmatch(rf"{boot}\.\d+", meta.parents[0])  # provenance: the board's reading
    ether.devices["bench1"].battery()  # a bare value reaches a `root` parameter
    ((battery, _),) = observer.wait_for("lab7/battery_taken", 1)
    assert battery == {"volts": 3.7}
    assert [p for p, _ in observer.on(lab.topics.errors()) if p.get("instance") == "taker"] == []


@pytest.mark.parametrize(
    "args, expected",
    [
        ({"on": "yes"}, "device 'bench1' method 'set_heater': argument 'on': expected bool, got str 'yes'"),
        ({}, "device 'bench1' method 'set_heater': missing argument 'on' (bool)"),
        ({"on": True, "of": 1}, "device 'bench1' method 'set_heater': unknown argument 'of' (declared: on)"),
        ({"on": 1}, "argument 'on': expected bool, got int 1"),
    ],
)
def test_bad_arguments_are_refused_before_sending(lab, observer, args, expected):
    with pytest.raises(ether.InvalidArguments, match=re.escape(expected)):
        ether.devices["bench1"].set_heater(**args)
    assert ether.devices["bench1"].set_heater(on=False) is False
    observer.wait_for("lab7/bench1.set_heater", 1)
    assert [p for p, _ in observer.on("lab7/bench1.set_heater")][0] == {"on": False}  # the bad one never left


def test_argument_rules_match_the_board():
    spec = {"args": {"level": "int", "gain": "float", "label": "str", "x": "any"}, "optional": ["label", "x"]}
    assert check_arguments("d", "m", spec, {"level": 3, "gain": 2}) == {"level": 3, "gain": 2}
    with pytest.raises(ether.InvalidArguments) as err:
        check_arguments("d", "m", spec, {"level": True, "gain": "2", "label": 5})
    assert str(err.value) == (
        "device 'd' method 'm': argument 'level': expected int, got bool True; "
        "argument 'gain': expected float, got str '2'; argument 'label': expected str, got int 5"
    )


def test_several_arguments_are_given_by_name(lab):
    with pytest.raises(
        ether.InvalidArguments, match=r"'fan': give arguments by name, fan\(level: int, label: str\)"
    ):
        ether.devices["bench1"].fan(1, "x")


def test_unknown_device_and_method_name_what_exists(lab):
    with pytest.raises(
        ether.UnknownService, match=r"no device 'bench2' .*known: bench1; did you mean 'bench1'"
    ):
        ether.devices["bench2"]
    with pytest.raises(
        ether.UnknownService,
        match=r"device 'bench1' has no method 'set_heatr' \(has: battery, broken, fan, set_heater, slow, "
        r"temperature; did you mean 'set_heater'\?\)",
    ):
        ether.devices["bench1"].set_heatr(on=True)


def test_board_errors_and_timeouts_are_typed(lab):
    bench = ether.devices["bench1"]
    with pytest.raises(
        ether.ServiceFailed, match=r"device 'bench1' method 'broken': .*broken on purpose \(x=1.0\)"
    ):
        bench.broken(x=1)
    with pytest.raises(ether.ServiceTimeout, match=r"device 'bench1' did not answer 'slow' within 0.2 s"):
        bench.call("slow", {"seconds": 1.0}, timeout=0.2)
    assert bench.set_heater(on=False) is False  # the late "late" reply is not given to this call


def test_a_board_that_dies_is_lost(lab):
    address = lab.address
    board = subprocess.Popen(
        [
            sys.executable,
            str(REPO / "tests" / "device_classes.py"),
            address.host,
            str(address.port),
            "ghost1",
            "lab7",
        ],
        stdout=subprocess.DEVNULL,
        env={**os.environ, "PYTHONPATH": str(REPO / "lite")},
    )
    try:
        ghost = ether.devices.wait("ghost1", TIMEOUT)
        assert ghost.set_heater(on=True) is True and set(ether.get_active_devices()) == {"bench1", "ghost1"}
        board.send_signal(signal.SIGKILL)
        board.wait(TIMEOUT)
        view = view_of(lab)
        assert wait_until(view.changed, lambda: view.devices["ghost1"].state == "lost", TIMEOUT)
        with pytest.raises(ether.UnknownService, match=r"device 'ghost1' is lost, last seen [\d.]+ s ago"):
            ghost.set_heater(on=False)
        assert set(ether.get_active_devices()) == {"bench1"}
    finally:
        if board.poll() is None:
            board.kill()
            board.wait()


class Output:
    """The merged output of a process, line by line, waited on with a deadline."""

    def __init__(self, process: subprocess.Popen) -> None:
        self.lines: list[str] = []
        self.changed = threading.Condition()
        self.process = process
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.process.stdout:
            with self.changed:
                self.lines.append(line)
                self.changed.notify_all()

    def wait_for(self, pattern: str) -> re.Match:
        def found():
            return next((m for m in map(re.compile(pattern).search, self.lines) if m), None)

        with self.changed:
            assert self.changed.wait_for(found, TIMEOUT), "".join(self.lines)
            return found()


def test_thermostat_example_closes_the_loop(tmp_path):
    """`ether run examples/thermostat/config.yaml`: cold room -> heater on -> warmer -> heater off."""
    process = ether_run(THERMOSTAT, "--port", "0", env={**os.environ, "ETHER_DATA": str(tmp_path)})
    output = Output(process)
    try:
        port = int(output.wait_for(r"ready on mqtt://127\.0\.0\.1:(\d+)").group(1))
        observer = Observer(BrokerAddress(port=port), "thermo1.temperature")
        output.wait_for(r"Thermostat: 1\d\.\d\d C -> heater on")
        # the heater warms the room until the thermostat turns it off
        wait_for_payload(
            observer, "thermo1.temperature", lambda p: not p["heater"] and p["temperature"] > 20.5
        )
        output.wait_for(r"Thermostat: 2\d\.\d\d C -> heater off")
        observer.close()
    finally:
        process.send_signal(signal.SIGINT)
        process.wait(TIMEOUT * 2)
    assert process.returncode == 0, "".join(output.lines)

    db = connect(next(tmp_path.iterdir()), readonly=True)
    code = read_manifest(db)["code"]  # the simulated board's own class is hashed like the instances'
    assert code["room.Room"]["sha256"] and code["controller.Thermostat"]["sha256"]
    readings = db.execute(
        "SELECT * FROM messages WHERE topic = 'thermo1.temperature' ORDER BY seq"
    ).fetchall()
    assert [r["seq"] for r in readings] == list(range(1, len(readings) + 1))
    heating = [
        json.loads(r["payload"])["temperature"] for r in readings if json.loads(r["payload"])["heater"]
    ]
    assert heating[-1] > heating[0]  # the temperature rose while the heater was on
    switched = db.execute(
        "SELECT payload, parents FROM messages WHERE topic = 'thermostat.switched' ORDER BY row"
    )
    first, *_ = switched.fetchall()
    decision = json.loads(first["payload"])
    assert decision["on"] is True and decision["temperature"] < 19.5  # switched on because it was cold
    cause = json.loads(first["parents"])[0]
    assert (
        db.execute("SELECT topic FROM messages WHERE msg_id = ?", (cause,)).fetchone()[0]
        == "thermo1.temperature"
    )
    commands = db.execute(
        "SELECT payload, src, parents FROM messages WHERE topic = 'thermo1.set_heater'"
    ).fetchall()
    assert (commands[0]["payload"], commands[0]["src"]) == ('{"on":true}', "controller")
    assert json.loads(commands[0]["parents"]) == [cause]  # the command traces back to the reading too
    clocks = db.execute("SELECT src, boot, detail FROM events WHERE kind = 'device_clock'").fetchall()
    assert {(c["src"], c["boot"]) for c in clocks} == {("thermo1", readings[0]["boot"])}
    assert abs(json.loads(clocks[-1]["detail"])["offset"]) < 5  # the board's clock is this host's: small


def test_simulated_board_names_what_is_wrong():
    from ether.boards.simulator import SimulatedBoard

    with pytest.raises(ImportError, match="board: module 'device_classes' has no class 'Nope'"):
        SimulatedBoard("bench9", "device_classes.Nope")
    with pytest.raises(TypeError, match=r"board_kwargs: Bench\(celsius: .*float.* = 21.0\): .*'colour'"):
        SimulatedBoard("bench9", "device_classes.Bench", {"colour": "red"})
    with pytest.raises(ValueError, match="device 'a.b': a device name is a word"):
        SimulatedBoard("a.b", "device_classes.Bench")
    with pytest.raises(ValueError, match="board: device_classes.ReadingTaker has no @sensor or @actuator"):
        SimulatedBoard("bench9", "device_classes.ReadingTaker")


def test_simulated_board_outside_a_session(lab, observer):
    from ether.boards.simulator import SimulatedBoard

    board = SimulatedBoard("solo1", "device_classes.Bench", broker=lab.address.url)  # plain Python
    assert board.board.set_heater(True) is True  # the board's own object, called directly
    board.connect()  # returns once online
    try:
        wait_for_payload(observer, "ether/default/device/solo1/state", lambda p: p["state"] == "online")
    finally:
        board.disconnect()
    wait_for_payload(observer, "ether/default/device/solo1/state", lambda p: p["state"] == "offline")


def test_graph_of_the_example_shows_the_board_feeding_the_controller():
    from ether.config import load
    from ether.runtime.graph import TopicGraph

    graph = TopicGraph.of(load(THERMOSTAT))
    assert graph.edges() == [("room", "thermo1.temperature", "controller")]
