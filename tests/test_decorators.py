"""Decorators attach metadata and leave direct calls alone (transparent fallback)."""

import pytest

from ether import ether_cleanup, ether_init, ether_pub, ether_start, ether_sub
from ether.contract.topics import TopicError
from ether.runtime.decorators import apply_registry, spec_of


class Plain:
    def __init__(self, k: int = 2):
        self.k = k

    @ether_sub
    @ether_pub
    def scale(self, x: int) -> dict:
        return {"x": x * self.k}

    @ether_sub()
    def bare(self) -> None:
        return None

    @ether_pub(subtopic="status")
    def report(self) -> dict:
        return {"ok": True}

    @ether_start
    @ether_init()
    @ether_cleanup
    def hooks(self) -> str:
        return "hooked"


def test_default_topics_are_class_dot_method():
    assert spec_of(Plain.scale).sub.topic == "Plain.scale"
    assert spec_of(Plain.scale).pub.topic == "Plain.scale"
    assert spec_of(Plain.bare).sub.topic == "Plain.bare"
    assert spec_of(Plain.report).pub.topic == "Plain.status"


def test_with_and_without_parentheses_and_lifecycle_sets():
    assert spec_of(Plain.hooks).lifecycle == {"start", "init", "cleanup"}


def test_direct_calls_are_unchanged():
    p = Plain(3)
    assert p.scale(2) == {"x": 6}
    assert p.bare() is None
    assert p.hooks() == "hooked"
    assert Plain.scale.__name__ == "scale" and Plain.scale.__wrapped__  # functools.wraps kept


def test_init_errors_are_not_swallowed():
    class Fails:
        def __init__(self):
            raise RuntimeError("hardware missing")

        @ether_pub
        def read(self) -> dict:
            return {}

    with pytest.raises(RuntimeError, match="hardware missing"):
        Fails()


def test_decorators_do_not_inject_methods():
    class Mine:
        def run(self):
            return "mine"

        def cleanup(self):
            return "my cleanup"

        @ether_sub
        def take(self, v: int) -> None:
            pass

    assert Mine().run() == "mine" and Mine().cleanup() == "my cleanup"
    assert {name for name in vars(Mine) if not name.startswith("__")} == {"run", "cleanup", "take"}


@pytest.mark.parametrize("topic", ["a/#", "a/+/b", "$SYS/x"])
def test_publish_topics_with_wildcards_are_refused(topic):
    with pytest.raises((TopicError, TypeError)):

        @ether_pub(topic=topic)
        def f(self) -> dict:
            return {}


def test_subscribe_filters_may_use_wildcards_but_well_formed():
    @ether_sub(topic="sensors/+/temperature")
    def ok(self, value: float) -> None: ...

    assert spec_of(ok).sub.topic == "sensors/+/temperature"
    with pytest.raises(TopicError):

        @ether_sub(topic="a/#/b")
        def bad(self) -> None: ...


def test_registry_decoration_is_idempotent():
    class ThirdParty:
        def produce(self) -> dict:
            return {"v": 1}

        def consume(self, v: int) -> None:
            pass

    methods = {
        "produce": {"ether_pub": {"topic": "v"}, "ether_start": {}},
        "consume": {"ether_sub": {"topic": "v"}},
    }
    apply_registry(ThirdParty, methods)
    first = ThirdParty.produce
    apply_registry(ThirdParty, methods)
    assert ThirdParty.produce is first  # not wrapped twice
    assert spec_of(ThirdParty.produce).pub.topic == "v"
    assert spec_of(ThirdParty.produce).lifecycle == {"start"}
    assert spec_of(ThirdParty.consume).sub.topic == "v"
    assert ThirdParty().produce() == {"v": 1}


def test_conflicting_redecoration_is_an_error():
    class C:
        @ether_pub(topic="a")
        def m(self) -> dict:
            return {}

    with pytest.raises(TypeError, match="already publishes to 'a'"):
        apply_registry(C, {"m": {"ether_pub": {"topic": "b"}}})
