"""Request/reply services: ether.get / ether.save / ether.request, typed errors, targeting, load sharing."""

import threading

import pytest

import ether
from ether import InvalidArguments, NotFound, ServiceFailed, ServiceTimeout, UnknownService

TWO_STORES = {
    "instances": {
        "store_a": {"class_path": "lab_classes.DataStore"},
        "store_b": {"class_path": "lab_classes.DataStore"},
    }
}


@pytest.fixture(scope="module")
def stores():
    ether.tap(TWO_STORES)
    yield
    ether.shutdown()


def test_save_then_get_on_a_named_instance(stores):
    assert ether.save("DataStore", "put", {"key": "k", "value": [1, {"a": 2}]}, instance="store_a") == {
        "status": "success",
        "result": None,
    }
    assert ether.get("DataStore", "get_value", {"key": "k"}, instance="store_a") == [1, {"a": 2}]


def test_none_is_a_result_not_an_error(stores):
    assert ether.get("DataStore.nothing") is None


def test_errors_are_typed(stores):
    with pytest.raises(NotFound, match="KeyError"):
        ether.get("DataStore", "get_value", {"key": "missing"}, instance="store_b")
    with pytest.raises(InvalidArguments, match="field 'key': Field required"):
        ether.get("DataStore", "get_value", {})
    with pytest.raises(ServiceFailed, match="RuntimeError: disk on fire"):
        ether.request("DataStore", "broken")
    envelope = ether.save("DataStore", "get_value", {"key": "missing"}, instance="store_b")
    assert envelope["status"] == "error" and envelope["kind"] == "not_found"


def test_unknown_service_fails_at_once(stores):
    with pytest.raises(UnknownService, match="no ready instance serves 'Nobody.nothing'"):
        ether.get("Nobody", "nothing", timeout=60)
    with pytest.raises(UnknownService, match="instance 'store_z' does not serve"):
        ether.get("DataStore", "whoami", instance="store_z", timeout=60)


def test_instances_of_a_class_share_the_load(stores):
    pids = {ether.get("DataStore", "whoami") for _ in range(4)}
    assert len(pids) == 2


def test_timeout_and_a_late_reply_is_never_handed_to_a_later_call(stores):
    with pytest.raises(ServiceTimeout):
        ether.get("DataStore", "slow", {"seconds": 0.5}, instance="store_a", timeout=0.05)
    # the late "slow done" reply arrives while this call waits: it must not be taken for this answer
    assert isinstance(ether.get("DataStore", "whoami", instance="store_a", timeout=10), int)


def test_a_slow_handler_does_not_block_another_instance(stores):
    session = ether._session
    busy = session.supervisor.requester.send(
        session.topics.instance_call("store_a", "DataStore.slow"), {"seconds": 3}
    )
    assert isinstance(ether.get("DataStore", "whoami", instance="store_b", timeout=5), int)
    assert not busy.done()  # still busy: the other instance answered regardless
    assert busy.reply(10) == {"ok": True, "result": "slow done"}


def test_many_requests_in_flight_at_once(stores):
    ether.save("DataStore", "put", {"key": "n", "value": 7}, instance="store_b")
    results, errors = [], []

    def ask():
        try:
            results.append(ether.get("DataStore", "get_value", {"key": "n"}, instance="store_b", timeout=10))
        except Exception as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=ask) for _ in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert errors == [] and results == [7] * 20


def test_bad_arguments_are_also_an_error_event(stores):
    from support import Observer

    session = ether._current()
    errors = Observer(session.address, session.topics.errors())
    with pytest.raises(InvalidArguments):
        ether.get("DataStore", "get_value", {"key": ["not", "a", "string"]}, instance="store_a")
    (event, _), *_ = errors.wait_for(session.topics.errors())
    assert event["instance"] == "store_a" and event["topic"].endswith("/call/DataStore.get_value")
    assert "field 'key'" in event["reason"]
    errors.close()
