"""The original Ether's API, as its README and docs/migrating.md describe it, with real processes on the
embedded broker: ``ether.tap`` with a path, a dict or an EtherConfig, ``restart``, ``ether_name``,
``get_active_instances``, ``session_info``, ``save_all``, ``cleanup``, ``get_ether_logger``."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import textwrap
import time

import pytest

import ether
from ether import ether_get, ether_pub, ether_save, ether_start, ether_sub
from ether.config import EtherConfig, EtherInstanceConfig
from ether.transport.broker import BrokerAddress
from ether.utils import get_ether_logger
from support import REPO, Observer

# -- classes the sessions below run (each instance process imports this module) -------------------


class Inventory:
    """The original's request/reply test service: ``heartbeat=`` is its ZMQ option, accepted here."""

    def __init__(self):
        self.items: dict[int, dict] = {1: {"name": "Item 1", "tags": ["a", "b"]}}

    @ether_get(heartbeat=True)
    def get_item(self, id: int) -> dict:
        if id not in self.items:
            raise KeyError(f"Item {id} not found")
        return self.items[id]

    @ether_get
    def get_stats(self) -> dict:
        return {"total_items": len(self.items)}

    @ether_save(heartbeat=True)
    def save_item(self, id: int, name: str, tags: list[str]) -> dict:
        if id in self.items:
            raise ValueError(f"Item {id} already exists")
        self.items[id] = {"name": name, "tags": tags}
        return self.items[id]


# The original README's "Real-World Example" (automated lab equipment), with a stand-in thermometer.
class TemperatureSensor:
    @ether_start()
    def begin(self) -> None:
        self.read_temperature()  # the instance's own call publishes (the README's pattern)

    @ether_pub(topic="DataLogger.log_temperature")
    def read_temperature(self) -> dict:
        return {"temperature": 41.5, "timestamp": time.time()}


class DataLogger:
    @ether_sub()
    @ether_pub(topic="ExperimentController.check_temperature")
    def log_temperature(self, temperature: float, timestamp: float) -> dict:
        return {"temperature": temperature, "timestamp": timestamp}


class ExperimentController:
    def __init__(self, max_temp: float = 40.0):
        self.max_temp = max_temp

    @ether_sub()
    @ether_pub(topic="safety_shutdown")
    def check_temperature(self, temperature: float, timestamp: float) -> dict:
        return {"over": temperature > self.max_temp}


# -- helpers -------------------------------------------------------------------------------------


@pytest.fixture
def tapped():
    """Whatever a test taps is shut down at its end, also when it fails."""
    yield
    ether.shutdown()


def observe(topic_filter: str = "#") -> Observer:
    """A plain MQTT client on the tapped session's broker (loopback needs no login)."""
    return Observer(BrokerAddress.parse(ether.session_info["broker"]), topic_filter)


def steps(path) -> list[str]:
    return path.read_text().split()


# -- tests ---------------------------------------------------------------------------------------


def test_tap_a_path_with_the_readme_registry_yaml(tmp_path, monkeypatch, tapped):
    """The README's ``registry:`` YAML decorates classes that import nothing from Ether."""
    monkeypatch.syspath_prepend(str(REPO / "examples" / "external_classes"))  # third_party_lab
    config = tmp_path / "external.yaml"
    config.write_text(
        textwrap.dedent("""\
        registry:
          third_party_lab.DataGenerator:
            methods:
              generate_data:
                ether_sub: {} # Empty dict for default settings
                ether_pub:
                  topic: "data"
          third_party_lab.DataProcessor:
            methods:
              process_data:
                ether_sub:
                  topic: "data"
                ether_pub:
                  topic: "processed_data"
        instances:
          generator:
            class_path: third_party_lab.DataGenerator
            kwargs:
              process_id: 1
          processor2x:
            class_path: third_party_lab.DataProcessor
            kwargs:
              multiplier: 2
        """)
    )
    ether.tap(config=config)
    assert set(ether.get_active_instances()) == {"generator", "processor2x"}
    observer = observe("processed_data")
    try:
        ether.pub({"data": 44}, topic="DataGenerator.generate_data")  # the default topic Class.method
        assert [p for p, _ in observer.wait_for("processed_data")] == [{"result": 88}]
    finally:
        observer.close()


def test_tap_a_dict_names_restart_and_lifecycle(tmp_path, tapped):
    first, second = tmp_path / "first.txt", tmp_path / "second.txt"
    config = {
        "instances": {
            "lifecycle": {
                "class_path": "lab_classes.Lifecycle",
                "kwargs": {"path": str(first), "ether_name": "life"},
            }
        }
    }
    ether.tap(config=config)
    active = ether.get_active_instances()
    assert list(active) == ["life"]  # kwargs.ether_name names the instance; the class never sees it
    life = active["life"]
    assert life["name"] == "life" and life["class"] == "lab_classes.Lifecycle"
    assert life["state"] == "ready" and life["pid"] != os.getpid()

    info = ether.session_info
    assert info["session"] == "default" and info["pid"] == os.getpid() and info["hosting"] is True
    assert info["broker"].startswith("mqtt://127.0.0.1:")

    ether.save_all()  # each returns when every instance acknowledged the step
    assert steps(first) == ["constructed", "init", "save_all"]
    ether.cleanup()
    assert steps(first) == ["constructed", "init", "save_all", "cleanup"]

    ether.tap(config=config)  # the same again (a re-run notebook cell) changes nothing
    assert ether.session_info == info
    other = {"instances": {"lifecycle": {"class_path": "lab_classes.Lifecycle", "args": [str(second)]}}}
    with pytest.raises(RuntimeError, match="restart=True"):
        ether.tap(config=other)
    assert ether.session_info == info

    ether.tap(config=other, restart=True)  # shuts the first session down (saving first), then taps
    assert steps(first)[4:] == ["save_all", "cleanup", "shutdown"]
    assert list(ether.get_active_instances()) == ["lifecycle"]
    assert ether.session_info["supervisor"] != info["supervisor"]

    ether.tap(restart=True)  # no config: a session with only its broker and recorder
    assert ether.get_active_instances() == {}
    assert steps(second)[-1] == "shutdown"
    ether.shutdown()
    assert ether.session_info is None
    ether.shutdown()  # twice is harmless
    with pytest.raises(RuntimeError, match=r"ether.tap"):
        ether.get_active_instances()


def test_tap_an_ether_config_and_its_services(tapped):
    config = EtherConfig(
        instances={
            "data_service": EtherInstanceConfig(
                class_path="test_compat.Inventory", kwargs={"ether_name": "inv"}
            )
        }
    )
    ether.tap(config=config)
    assert list(ether.get_active_instances()) == ["inv"]

    assert ether.get("Inventory", "get_item", params={"id": 1}) == {"name": "Item 1", "tags": ["a", "b"]}
    assert ether.get("Inventory", "get_stats", params={"unexpected": "param"}) == {"total_items": 1}
    assert ether.get("Inventory", "get_stats", instance="inv") == {"total_items": 1}
    # deliberate difference: the original returned None for both; here the error says what happened
    with pytest.raises(ether.NotFound, match="Item 999 not found"):
        ether.get("Inventory", "get_item", params={"id": 999})
    with pytest.raises(ether.InvalidArguments, match="id"):
        ether.get("Inventory", "get_item", params={"id": "not an int"})

    reply = ether.save("Inventory", "save_item", params={"id": 2, "name": "Two", "tags": []})
    assert reply == {"status": "success", "result": {"name": "Two", "tags": []}}
    duplicate = ether.request("Inventory", "save_item", {"id": 2, "name": "Dup", "tags": []}, "save")
    assert duplicate["status"] == "error" and "already exists" in duplicate["error"]
    assert ether.get("Inventory", "get_item", params={"id": 2})["name"] == "Two"
    with pytest.raises(ValueError, match="request_type"):
        ether.request("Inventory", "get_stats", request_type="put")


def test_readme_lab_equipment_example(tapped):
    """Sensor → logger → controller on the README's default topics ``ClassName.method``."""
    ether.tap(
        config={
            "instances": {
                "sensor": {"class_path": "test_compat.TemperatureSensor"},
                "logger": {"class_path": "test_compat.DataLogger"},
                "controller": {
                    "class_path": "test_compat.ExperimentController",
                    "kwargs": {"max_temp": 40.0},
                },
            }
        }
    )
    observer = observe()
    try:
        ether.start()
        (checked, meta), *_ = observer.wait_for("ExperimentController.check_temperature")
        assert checked["temperature"] == 41.5
        assert meta.src == "logger"
        assert [p for p, _ in observer.wait_for("safety_shutdown")] == [{"over": True}]
    finally:
        observer.close()


def test_get_ether_logger_logs_to_ethers_log_and_writes_no_files(tmp_path, monkeypatch, caplog):
    monkeypatch.chdir(tmp_path)
    logger = get_ether_logger("TestEtherGet", instance_name="data_service", console_level=logging.DEBUG)
    assert logger.name == "ether.TestEtherGet.data_service"
    ethers_log = logging.getLogger("ether")
    assert ethers_log.handlers  # the terminal log Ether set up: its lines reach it
    monkeypatch.setattr(ethers_log, "handlers", [caplog.handler])
    logger.debug("Starting Ether get test")
    assert [(r.name, r.levelno, r.message) for r in caplog.records] == [
        ("ether.TestEtherGet.data_service", logging.DEBUG, "Starting Ether get test")
    ]
    assert get_ether_logger("TestEtherGet", instance_name="data_service") is logger
    assert logger.level == logging.INFO  # the default console_level
    assert get_ether_logger("TestEtherSave").name == "ether.TestEtherSave"
    assert list(tmp_path.iterdir()) == []  # the original wrote ./logs/<Class>/<instance>.log


def test_the_originals_imports_work_first_thing_in_a_fresh_interpreter():
    """``from ether import EtherConfig`` loads ether.config, which imports ``from ether import exits``."""
    imports = "from ether import EtherConfig, get_ether_logger, ether_get; from ether.config import EtherSessionConfig"
    done = subprocess.run([sys.executable, "-c", imports], capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
