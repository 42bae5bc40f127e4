"""The package face: light to import, every public name of the original Ether still there."""

from __future__ import annotations

import json
import subprocess
import sys

import ether

HEAVY = ("pydantic", "yaml", "paho", "amqtt", "textual", "asyncio")


def loaded_after(statement: str) -> list[str]:
    """The modules a fresh interpreter loads for ``statement`` (beyond its own start-up)."""
    probe = (
        "import sys, json; before = set(sys.modules); "
        f"{statement}; print(json.dumps(sorted(set(sys.modules) - before)))"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True
    )
    return json.loads(done.stdout)


def test_importing_the_topic_layout_loads_no_library():
    loaded = loaded_after("import ether.contract.topics")
    assert not [m for m in loaded if m.split(".")[0] in HEAVY], loaded
    assert len(loaded) < 30, loaded


def test_the_cli_parser_loads_no_library():
    loaded = loaded_after("from ether.cli import build_parser; build_parser()")
    assert not [m for m in loaded if m.split(".")[0] in HEAVY], loaded


def test_an_instance_process_loads_only_what_it_runs():
    """The process hosting one instance (what the fork server preloads): no YAML, broker, monitor,
    data analysis or config loader, and at most 60 modules beyond paho and pydantic (what those two
    bring when a model is built is theirs, as in bench/startup.py)."""
    loaded = set(loaded_after("import ether.forkserver, ether.runtime.instance"))
    libraries = set(
        loaded_after("import paho.mqtt.client, pydantic; pydantic.create_model('M', a=(int, ...))")
    )
    unwanted = ("yaml", "amqtt", "textual", "numpy", "pandas")
    assert not [m for m in loaded if m.split(".")[0] in unwanted], sorted(loaded)
    assert "ether.config.loading" not in loaded
    assert len(loaded - libraries) <= 60, sorted(loaded - libraries)


def test_every_public_name_is_there_and_devices_is_one_object():
    from ether import ConfigError, ether_pub, ether_sub

    assert callable(ether_pub) and callable(ether_sub) and issubclass(ConfigError, Exception)
    assert ether.ether is ether and ether.tap and ether.shutdown
    assert ether.devices is ether.devices and type(ether.devices).__name__ == "Devices"
    for name in ether.__all__:  # session_info is None until a session is tapped
        assert name == "session_info" or getattr(ether, name) is not None, name
    assert set(ether.__all__) <= set(dir(ether))


def test_an_unknown_name_is_an_attribute_error():
    try:
        ether.tapp  # noqa: B018
    except AttributeError as exc:
        assert "tapp" in str(exc)
    else:
        raise AssertionError("ether.tapp did not raise")
