"""The wire format: plain JSON, metadata optional and in one reserved key."""

import itertools
import json

import pytest

from ether.contract.wire import Meta, MetaError, Stamper, WireError, decode, encode


def test_object_payload_keeps_fields_beside_metadata():
    meta = Stamper("gen").stamp(parents=["p1"])
    body = json.loads(encode({"data": 42}, meta))
    assert body["data"] == 42
    assert (
        body["_ether"]["src"] == "gen" and body["_ether"]["seq"] == 1 and body["_ether"]["parents"] == ["p1"]
    )
    payload, back = decode(encode({"data": 42}, meta))
    assert payload == {"data": 42} and back.id == meta.id


def test_non_object_payloads_travel_as_root():
    assert json.loads(encode([1, 2], None)) == {"root": [1, 2]}
    assert decode(b"42") == (42, None)  # a foreign client's bare value


def test_foreign_json_has_no_metadata():
    assert decode(b'{"data": 42}') == ({"data": 42}, None)


def test_sequence_is_gap_free_and_boot_is_per_process():
    s = Stamper("x")
    assert [s.stamp().seq for _ in range(3)] == [1, 2, 3]
    assert Stamper("x").boot != s.boot


def test_invalid_json_is_a_clear_error():
    with pytest.raises(WireError, match="invalid JSON"):
        decode(b"{not json")
    with pytest.raises(WireError, match="must be an object"):
        decode(b'{"a": 1, "_ether": 5}')


def test_metadata_checked_at_once_agrees_with_the_checks_field_by_field():
    """A data message's metadata is checked in one expression first (the hot path); on every value
    near or past a limit it decides what the field-by-field checks decide, errors included."""
    values = [
        None,
        "",
        "a",
        "x" * 128,
        "x" * 129,
        "a/b",
        0,
        1,
        -1,
        2**63,
        1.5,
        1e11,
        float("nan"),
        True,
        ["p"],
        [1],
    ]

    def outcome(check, meta):
        try:
            return check(meta)
        except MetaError as exc:
            return str(exc)

    for key, value in itertools.product(["id", "src", "boot", "seq", "t", "parents", "sig", "corr"], values):
        meta = Stamper("s").stamp(["parent"]).to_dict() | {"sig": "f" * 32, key: value}
        assert outcome(Meta.from_dict, meta) == outcome(Meta._checked, meta), (key, value)
