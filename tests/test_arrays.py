"""Arrays and bytes as payloads: the binary encoding, schemas, the store, blocks (docs/topics.md#arrays-and-bytes)."""

from __future__ import annotations

import base64
import csv
import hashlib
import inspect
import json
import os
import shutil
import struct
import subprocess
import sys
from pathlib import Path
from typing import Annotated

import numpy as np
import pydantic_core
import pytest

import ether
from ether.contract.wire import Stamper, WireError, decode, encode
from ether.runtime.schema import ArgumentError, MethodSchema
from support import recorder_barrier


def foreign_frame(fields: dict) -> bytes:
    """Ether's binary encoding written as the docs tell a foreign client to: struct, json, numpy only."""
    header, data = {}, b""
    for name, value in fields.items():
        if isinstance(value, bytes):
            header[name] = {"$bytes": {"offset": len(data), "nbytes": len(value)}}
            buffer = value
        else:
            ref = {"dtype": value.dtype.str, "shape": list(value.shape), "order": "C"}
            header[name] = {"$array": {**ref, "offset": len(data), "nbytes": value.nbytes}}
            buffer = np.ascontiguousarray(value).tobytes()
        data += buffer + b"\0" * (-len(buffer) % 8)
    text = json.dumps(header).encode()
    head = b"\x89ETH" + bytes([1, 0, 0, 0]) + struct.pack("<I", len(text)) + text
    return head + b"\0" * (-len(head) % 8) + data


def assert_same_array(got, want) -> None:
    assert isinstance(got, np.ndarray), f"got {type(got).__name__}"
    assert got.dtype == want.dtype and got.shape == want.shape
    assert np.array_equal(got, want, equal_nan=want.dtype.kind in "fc")


VALUES = {
    "int16": np.arange(-6, 6, dtype=np.int16).reshape(3, 4),
    "fortran": np.asfortranarray(np.linspace(0, 1, 15).reshape(3, 5)),
    "bool": np.array([True, False, True]),
    "complex": np.array([1 + 2j, np.nan - 1j], dtype=np.complex64),
    "zero_d": np.array(3.5),
    "empty": np.zeros((0, 3), np.float32),
    "uint8_image": np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3),
    "big_endian": np.arange(3, dtype=">i4"),
    "strided": np.arange(20.0)[::3],
    "times": np.array(["2026-01-01T00:00:00.000000001"], dtype="M8[ns]"),
}


def test_arrays_and_bytes_round_trip_with_dtype_shape_and_order():
    meta = Stamper("gen").stamp()
    raw = encode(
        {**VALUES, "blob": b"\xff\x00\x89ETH", "nested": {"list": [np.int8(-3), {"a": np.ones(2)}]}}, meta
    )
    assert raw[:4] == b"\x89ETH" and raw[4] == 1
    payload, back = decode(raw)
    assert back.id == meta.id
    for name, value in VALUES.items():
        assert_same_array(payload[name], value)
    assert payload["fortran"].flags.f_contiguous
    assert payload["blob"] == b"\xff\x00\x89ETH" and isinstance(payload["blob"], bytes)
    assert payload["nested"]["list"][0] == -3
    assert_same_array(payload["nested"]["list"][1]["a"], np.ones(2))
    root, _ = decode(encode(np.arange(4)))
    assert_same_array(root["root"], np.arange(4))


def test_payloads_without_arrays_stay_plain_json():
    meta = Stamper("gen").stamp()
    body = {"data": 42, "label": "x", "values": [1.5, 2.5]}
    assert encode(body, meta) == pydantic_core.to_json({**body, "_ether": meta.to_dict()})
    assert encode({"n": np.int64(7), "x": np.float32(0.5)}) == b'{"n":7,"x":0.5}'  # numpy scalars: numbers


def test_a_foreign_frame_is_read_and_buffers_are_aligned():
    frame = foreign_frame({"samples": np.arange(5, dtype=np.float64), "tag": b"abc"})
    payload, meta = decode(frame)
    assert meta is None and payload["tag"] == b"abc"
    assert_same_array(payload["samples"], np.arange(5, dtype=np.float64))
    raw = encode({"a": np.arange(3, dtype=np.uint8), "b": np.arange(3, dtype=np.float64)})
    (length,) = struct.unpack_from("<I", raw, 8)
    start = 12 + length + (-(12 + length) % 8)
    header = json.loads(raw[12 : 12 + length])
    assert start % 8 == 0 and header["b"]["$array"]["offset"] % 8 == 0


@pytest.mark.parametrize(
    "frame, reason",
    [
        (b"\x89ETH\x01", "shorter than"),
        (b"\x89ETH\x02\0\0\0\0\0\0\0", "version 2"),
        (b"\x89ETH\x01\0\0\0\xff\0\0\0{}", "runs past its end"),
        (None, "dtype '|O'"),
        (None, "needs 24 bytes, has 16"),
        (None, "do not fit"),
    ],
)
def test_a_malformed_frame_is_a_clear_error(frame, reason):
    if frame is None:
        good = foreign_frame({"x": np.arange(3, dtype=np.float64)})
        (length,) = struct.unpack_from("<I", good, 8)
        header = json.loads(good[12 : 12 + length])
        ref = header["x"]["$array"]
        if "dtype" in reason:
            ref["dtype"] = "|O"
        elif "needs" in reason:
            ref["nbytes"] = 16
        else:
            ref["offset"] = 4096
        text = json.dumps(header).encode()
        head = good[:8] + struct.pack("<I", len(text)) + text
        frame = head + b"\0" * (-len(head) % 8) + np.arange(3, dtype=np.float64).tobytes()
    with pytest.raises(WireError, match=reason.replace("|", r"\|")):
        decode(frame)


def test_what_cannot_be_encoded_is_named():
    with pytest.raises(WireError, match="field 'rec': an array of dtype"):
        encode({"rec": np.zeros(2, dtype=[("a", "i4")])})
    with pytest.raises(WireError, match="reserved"):
        encode({"x": {"$array": 1}, "y": b""})


def test_a_foreign_binary_payload_is_stored_byte_exact(run_session, tmp_path):
    """A camera frame or packed struct that is not Ether's encoding comes back as the same bytes."""
    session, observer = run_session({"recorder": {"path": str(tmp_path)}, "instances": {}})
    blob = os.urandom(4096)
    observer.publish("camera", blob)
    observer.publish("camera", "hello, not JSON")
    observer.publish("frames", foreign_frame({"image": np.arange(12, dtype=np.uint8).reshape(3, 4)}))
    observer.wait_for("frames")  # the broker has passed all three on, to the recorder too
    recorder_barrier(session)
    session.close()
    recorded = ether.open_session(session.recording.run_dir)
    assert [r["root"] for r in recorded.records("camera")] == [blob, b"hello, not JSON"]
    (frame,) = recorded.records("frames")
    assert_same_array(frame["image"], np.arange(12, dtype=np.uint8).reshape(3, 4))
    assert recorded.manifest["status"] == "complete"


def test_a_subscriber_of_bytes_receives_a_foreign_binary_payload_as_root(run_session, tmp_path):
    """Not JSON, not Ether's encoding: the handler's ``root: bytes`` gets the bytes as they came."""
    config = {
        "recorder": {"path": str(tmp_path)},
        "instances": {"taker": {"class_path": "array_classes.BlobTaker"}},
    }
    session, observer = run_session(config)
    jpeg = b"\xff\xd8\xff\xe0" + os.urandom(4092)
    for blob in (jpeg, b"hello, not JSON"):
        observer.publish("camera", blob)
    seen = [p for p, _ in observer.wait_for("blob_seen", 2)]
    want = [{"nbytes": len(b), "sha256": hashlib.sha256(b).hexdigest()} for b in (jpeg, b"hello, not JSON")]
    assert seen == want
    assert not observer.on(session.topics.errors())


@pytest.fixture
def camera_and_viewer(run_session, tmp_path):
    config = {
        "recorder": {"path": str(tmp_path)},
        "instances": {
            "camera": {"class_path": "array_classes.Camera"},
            "viewer": {"class_path": "array_classes.Viewer"},
        },
    }
    return run_session(config)


def assert_frame(got: dict, n: int) -> None:
    from array_classes import frame

    want = frame(n)
    for name, value in want.items():
        if isinstance(value, np.ndarray):
            assert_same_array(got[name], value)
        else:
            assert got[name] == value, name


def test_arrays_and_bytes_reach_a_subscriber_in_another_process(camera_and_viewer):
    session, observer = camera_and_viewer
    session.publish("snap", {"n": 1})  # returned by an @ether_pub method
    session.publish("snap_pub", {"n": 2})  # ether.pub inside an instance
    from array_classes import frame

    session.publish("frames", frame(3))  # ether.pub's path from the main script
    seen = sorted((p for p, _ in observer.wait_for("seen", 3)), key=lambda p: p["n"])
    for n, payload in zip((1, 2, 3), seen, strict=True):
        assert_frame(payload, n)
        assert payload["fortran_order"] is True
    session.close()
    recorded = ether.open_session(session.recording.run_dir)
    stored = sorted(recorded.records("frames"), key=lambda r: r["n"])
    for n, record in zip((1, 2, 3), stored, strict=True):
        assert_frame(record, n)
    # signed over header and data: believed as their sources, not stored as foreign
    assert {r["_ether.src"] for r in stored} == {"camera", session.stamper.source}
    assert not [e for e in recorded.events if e["kind"] == "unverified_source"]
    assert recorded.manifest["status"] == "complete"


def test_an_array_of_the_wrong_dtype_or_shape_is_rejected_by_name(camera_and_viewer):
    session, observer = camera_and_viewer
    from array_classes import frame

    wrong = {**frame(4), "samples": np.zeros((31, 300), np.float32)}
    session.publish("frames", wrong)
    (error, _), *_ = observer.wait_for(session.topics.errors())
    assert error["instance"] == "viewer" and "field 'samples'" in error["reason"]
    assert "expected dtype int16, got dtype float32" in error["reason"]
    wrong = {**frame(5), "samples": np.zeros((31, 300), np.int16)}
    session.publish("frames", wrong)
    errors = observer.wait_for(session.topics.errors(), 2)
    assert "expected shape (32, any), got shape (31, 300)" in errors[1][0]["reason"]


def test_blocks_join_into_one_array_with_its_time_axis_and_gaps(run_session, tmp_path):
    session, _ = run_session({"recorder": {"path": str(tmp_path)}})
    rate, n, t0 = 30_000.0, 300, 1_800_000_000.0
    channels = [f"ch{i}" for i in range(32)]
    sent = []
    for k in range(10):
        if k == 6:
            continue  # a lost block: the stream has a gap of 300 samples there
        samples = np.arange(n * 32, dtype=np.int16).reshape(n, 32) + k
        sent.append((k, samples))
        session.publish(
            "ephys", ether.block(samples, rate, t0=t0 + k * n / rate, channels=channels, units="uV")
        )
    session.close()
    recorded = ether.open_session(session.recording.run_dir)
    whole = recorded.blocks("ephys")
    assert_same_array(whole.data, np.concatenate([s for _, s in sent]))
    assert whole.rate == rate and whole.channels == channels and whole.units == "uV"
    assert whole.times[0] == t0 and whole.times.shape == (9 * n,)
    assert np.allclose(np.diff(whole.times[:n]), 1 / rate, rtol=0, atol=1e-6)  # float64 epoch: ~0.2 µs
    assert whole.gaps == [{"start": t0 + 6 * n / rate, "stop": t0 + 7 * n / rate, "missing": 300}]

    start, stop = t0 + 2.5 * n / rate, t0 + 4 * n / rate  # the second half of block 2, and block 3
    part = recorded.blocks("ephys", start, stop)
    assert_same_array(part.data, np.concatenate([sent[2][1][n // 2 :], sent[3][1]]))
    assert part.times[0] == start and part.gaps == []
    plan = " ".join(
        str(r[-1])
        for r in recorded.db.execute(
            "EXPLAIN QUERY PLAN SELECT * FROM messages WHERE topic = 'ephys' AND data IS NOT NULL"
            " AND json_extract(payload, '$.t0') >= 0 AND json_extract(payload, '$.t0') < 1"
        )
    )
    assert "messages_by_block_time" in plan  # a slice reads only its blocks


def test_a_block_without_a_time_axis_is_refused():
    with pytest.raises(ValueError, match="either a sample rate or the time of each sample"):
        ether.block(np.zeros((3, 2)))
    with pytest.raises(ValueError, match="3 channel names for data of shape"):
        ether.block(np.zeros((4, 2)), 100.0, channels=["a", "b", "c"])


EXAMPLES = Path(__file__).resolve().parent.parent / "examples" / "arrays"
DOCS = Path(__file__).resolve().parent.parent / "docs"


def test_the_documented_python_client_reads_and_writes_without_ether():
    sys.path.insert(0, str(EXAMPLES))
    import no_ether

    raw = encode({**VALUES, "blob": b"\x00\xff", "nested": [{"a": np.arange(3)}]}, Stamper("gen").stamp())
    payload = no_ether.decode(raw)
    for name, value in VALUES.items():
        assert_same_array(payload[name], value)
    assert payload["blob"] == b"\x00\xff" and payload["_ether"]["src"] == "gen"
    assert_same_array(payload["nested"][0]["a"], np.arange(3))
    theirs, _ = decode(no_ether.encode({"data": VALUES["int16"], "raw": b"abc", "rate": 30000.0}))
    assert_same_array(theirs["data"], VALUES["int16"]) and theirs["raw"] == b"abc" and theirs[
        "rate"
    ] == 30000.0
    assert inspect.getsource(no_ether.decode) in (DOCS / "topics.md").read_text()


@pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed")
def test_the_documented_javascript_client_reads_and_writes_without_ether():
    script = f"""
        import {{ decode, encode }} from "{EXAMPLES / "no_ether.mjs"}";
        const input = Buffer.from(process.argv[1], "base64");
        const got = decode(input);
        const out = {{}};
        for (const [k, v] of Object.entries(got))
          out[k] = v && v.data ? {{ ...v, data: Array.from(v.data, Number) }} : v && v.length !== undefined ? Array.from(v) : v;
        const mine = encode({{ samples: new Int16Array([1, -2, 3, -4, 5, -6]), gain: 2 }}, {{ samples: [3, 2] }});
        console.log(JSON.stringify({{ got: out, mine: Buffer.from(mine).toString("base64") }}));
    """
    fortran = np.asfortranarray(np.arange(6, dtype=np.float64).reshape(2, 3))
    frame = encode({"a": np.arange(4, dtype=np.int16), "f": fortran, "b": b"hi", "n": 7})
    done = subprocess.run(
        ["node", "--input-type=module", "-e", script, base64.b64encode(frame).decode()],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    got = result["got"]
    assert got["a"] == {"dtype": "<i2", "shape": [4], "order": "C", "data": [0, 1, 2, 3]}
    assert got["f"]["order"] == "F" and got["f"]["data"] == list(fortran.ravel(order="F"))
    assert got["b"] == [104, 105] and got["n"] == 7
    theirs, _ = decode(base64.b64decode(result["mine"]))
    assert_same_array(theirs["samples"], np.array([[1, -2], [3, -4], [5, -6]], dtype=np.int16))
    assert theirs["gain"] == 2


def test_export_writes_blocks_and_arrays_to_hdf5_and_arrays_as_json_to_csv(run_session, tmp_path):
    h5py = pytest.importorskip("h5py")
    session, _ = run_session({"recorder": {"path": str(tmp_path)}})
    samples = np.arange(40, dtype=np.int16).reshape(10, 4)
    for k in range(3):
        session.publish("ephys", ether.block(samples + k, 1000.0, t0=100.0 + k * 0.01, channels=list("abcd")))
        session.publish("frames", {"image": np.full((2, 3), k, np.uint8), "n": k, "tag": b"\x00\x01"})
    session.close()
    folder = session.recording.run_dir
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "ether",
            "export",
            str(folder),
            "--format",
            "hdf5",
            "--out",
            str(tmp_path / "h5"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    with h5py.File(tmp_path / "h5" / f"{Path(folder).name}.h5") as f:
        assert json.loads(f.attrs["status"]) == "complete" and "config_resolved" in f.attrs
        ephys = f["ephys"]
        assert_same_array(ephys["data"][()], np.concatenate([samples + k for k in range(3)]))
        assert ephys["times"][0] == 100.0 and ephys.attrs["rate"] == 1000.0
        assert list(ephys.attrs["channels"]) == list("abcd") and json.loads(ephys.attrs["gaps"]) == []
        frames = f["frames"]
        assert_same_array(frames["image"][()], np.stack([np.full((2, 3), k, np.uint8) for k in range(3)]))
        assert list(frames["n"][()]) == [0, 1, 2] and bytes(frames["tag"][0]) == b"\x00\x01"
        assert list(frames["_ether/seq"][()]) == [2, 4, 6]
    csv_out = tmp_path / "csv"
    assert (
        subprocess.run(
            [sys.executable, "-m", "ether", "export", str(folder), "--out", str(csv_out)],
            capture_output=True,
            timeout=60,
        ).returncode
        == 0
    )
    with (csv_out / "frames.csv").open() as f:
        row = next(csv.DictReader(f))
    assert json.loads(row["image"]) == [[0, 0, 0], [0, 0, 0]] and base64.b64decode(row["tag"]) == b"\x00\x01"


class Taker:  # at module level: its annotations (strings here) resolve in this module's names
    def take(
        self, samples: Annotated[np.ndarray, ether.Array(dtype="int16")], any_array: np.ndarray
    ) -> None: ...


def test_a_json_list_becomes_an_array_only_if_it_fits_the_dtype():
    schema = MethodSchema(Taker.take)
    got = schema.arguments({"samples": [1, -2], "any_array": [[0.5, 1.5]]})
    assert_same_array(got["samples"], np.array([1, -2], dtype=np.int16))
    assert_same_array(got["any_array"], np.array([[0.5, 1.5]]))
    with pytest.raises(
        ArgumentError, match="field 'samples': .*expected dtype int16, got values that do not fit"
    ):
        schema.arguments({"samples": [1.5], "any_array": [1]})
    with pytest.raises(ArgumentError, match="field 'any_array': .*expected an array, got str"):
        schema.arguments({"samples": [1], "any_array": "x"})
