"""Arguments and return values are validated from type hints; errors name the field."""

from typing import Any

import pytest
from pydantic import BaseModel

from ether.runtime.schema import ArgumentError, MethodSchema


class Reading(BaseModel):
    temperature: float
    unit: str = "C"


class Target:
    def typed(self, data: int, scale: float = 1.0) -> dict:
        return {"data": data * scale}

    def whole(self, root: Any) -> Any:
        return root

    def nothing(self) -> None:
        return None

    def model(self, t: float) -> Reading:
        return Reading(temperature=t)

    def flexible(self, a: int, **rest) -> dict:
        return {"a": a, **rest}


def test_arguments_are_validated_and_coerced():
    s = MethodSchema(Target.typed)
    assert s.arguments({"data": "42"}) == {"data": 42, "scale": 1.0}
    assert s.arguments({"data": 1, "extra": "ignored"}) == {"data": 1, "scale": 1.0}


def test_errors_name_the_field():
    s = MethodSchema(Target.typed)
    with pytest.raises(ArgumentError, match=r"field 'data': .*valid integer.*'abc'"):
        s.arguments({"data": "abc"})
    with pytest.raises(ArgumentError, match=r"field 'data': Field required"):
        s.arguments({"scale": 2})
    with pytest.raises(ArgumentError, match=r"expected a JSON object with fields \(data, scale\)"):
        s.arguments(42)


@pytest.mark.parametrize("payload", [42, 3.5, "text", [1, [2, 3]], {"nested": {"a": [1, {"b": None}]}}])
def test_root_receives_the_whole_payload(payload):
    s = MethodSchema(Target.whole)
    assert s.arguments(payload) == {"root": payload}


def test_root_unwraps_a_root_envelope():
    assert MethodSchema(Target.whole).arguments({"root": [1, 2]}) == {"root": [1, 2]}


def test_return_values_are_validated():
    assert MethodSchema(Target.nothing).result(None) == {}
    assert MethodSchema(Target.model).result(Reading(temperature=1.5)) == {"temperature": 1.5, "unit": "C"}
    with pytest.raises(ArgumentError, match="return value does not match"):
        MethodSchema(Target.typed).result([1, 2])


def test_var_keyword_accepts_extra_fields():
    assert MethodSchema(Target.flexible).arguments({"a": "1", "b": 2}) == {"a": 1, "b": 2}
