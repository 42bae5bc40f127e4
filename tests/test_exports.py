"""`ether export` to NWB, Zarr and MCAP, each read back with its own library's reader
(docs/data.md#export-what-maps-to-what)."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import ether
from ether.contract.topics import STRUCTURE
from ether.data.columns import board_clocks
from ether.data.recorded import RecordedSession, export
from ether.runtime.session import new_session
from test_arrays import assert_same_array

RATE, N = 1000.0, 100
CHANNELS = list("abcd")


def ephys_block(k: int) -> np.ndarray:
    return (np.arange(N * 4, dtype=np.int16).reshape(N, 4) + k).astype(np.int16)


def frame_payload(k: int) -> dict:
    return {
        "image": np.full((2, 3), k, np.uint8),
        "n": k,
        "tag": bytes([k, 0, 255]),
        "label": f"frame {k}",
        "ok": k % 2 == 0,
        "spectrum": np.arange(k + 1, dtype=np.float64),  # a shape per message: ragged
        "when": np.array(["2026-12-03T10:00:00"], dtype="M8[ns]") + k,  # no HDF5 or NWB type
        "names": np.array(["left", "right"]),
    }


@pytest.fixture(scope="module")
def recorded(tmp_path_factory):
    """One session: two block topics (one with a lost block), a topic of mixed fields, and results an
    instance derived (``in`` -> Echo -> ``out``)."""
    folder = tmp_path_factory.mktemp("exports")
    config = {
        "recorder": {"path": str(folder)},
        "instances": {"echo": {"class_path": "lab_classes.Echo"}},
    }
    session = new_session(config)
    session.open(30)
    try:
        t0 = time.time()
        for k in range(5):
            if k != 3:  # a lost block: a gap of N samples in ephys
                block = ether.block(ephys_block(k), RATE, t0=t0 + k * N / RATE, channels=CHANNELS, units="uV")
                session.publish("ephys", block)
            session.publish(
                "lfp", ether.block(np.full(50, k, np.float32), 500.0, t0=t0 + k * 0.1, units="mV")
            )
            session.publish("frames", frame_payload(k))
            session.publish("in", {"value": k})
        structure = [  # a run holding two trials, as any MQTT client sends them (docs/experiments.md)
            {"event": "start", "kind": "run", "name": "block 1", "id": "run-1"},
            {"event": "start", "kind": "trial", "name": "stim A", "id": "t-1", "metadata": {"stim": "A"}},
            {"event": "stop", "kind": "trial", "id": "t-1"},
            {"event": "start", "kind": "trial", "name": "stim B", "id": "t-2", "metadata": {"stim": "B"}},
            {"event": "stop", "kind": "trial", "id": "t-2", "status": "failed", "error": "no response"},
            {"event": "stop", "kind": "run", "id": "run-1"},
        ]
        for event in structure:
            session.publish(STRUCTURE, event)
    finally:
        session.close()
    run = RecordedSession(session.recording.run_dir)
    assert run.manifest["status"] == "complete" and len(run.records("out")) == 5
    yield run
    run.close()


def exported(run: RecordedSession, fmt: str, tmp_path: Path) -> Path:
    (path,) = export(run, tmp_path / fmt, fmt)
    return path


def test_nwb_holds_every_topic_as_timeseries_with_the_session_metadata(recorded, tmp_path):
    pynwb = pytest.importorskip("pynwb")
    path = exported(recorded, "nwb", tmp_path)
    start = recorded.manifest["started_at"]
    with pynwb.NWBHDF5IO(str(path), "r") as io:
        nwb = io.read()
        assert nwb.identifier == recorded.manifest["run_id"]
        assert nwb.session_start_time.timestamp() == pytest.approx(start, abs=1e-6)
        assert "complete" in nwb.session_description
        assert nwb.source_script == recorded.manifest["config_text"]
        notes = json.loads(nwb.notes)
        assert notes["manifest"]["run_id"] == recorded.manifest["run_id"]
        assert "frames: field 'tag' (bytes)" in notes["not_exported"]

        ephys = nwb.acquisition["ephys"]  # a gap: per-sample timestamps
        want = recorded.blocks("ephys")
        assert_same_array(ephys.data[()], np.concatenate([ephys_block(k) for k in (0, 1, 2, 4)]))
        assert np.allclose(ephys.timestamps[()], want.times - start, rtol=0, atol=1e-9)
        assert ephys.unit == "uV" and "channels a, b, c, d" in ephys.description
        detail = json.loads(ephys.comments)
        assert detail["channels"] == CHANNELS and detail["gaps"][0]["missing"] == N

        lfp = nwb.acquisition["lfp"]  # no gap: a rate and a starting time
        assert lfp.rate == 500.0 and lfp.timestamps is None and lfp.unit == "mV"
        assert lfp.starting_time == pytest.approx(recorded.blocks("lfp").times[0] - start, abs=1e-9)
        assert_same_array(lfp.data[()], np.concatenate([np.full(50, k, np.float32) for k in range(5)]))

        frames = recorded.records("frames")
        t_recorded = np.array([r["_ether.t_recorded"] for r in frames]) - start
        image = nwb.acquisition["frames.image"]
        assert_same_array(image.data[()], np.stack([frame_payload(k)["image"] for k in range(5)]))
        assert np.allclose(image.timestamps[()], t_recorded, rtol=0, atol=1e-9)  # the recorder's clock
        assert list(nwb.acquisition["frames.n"].data[()]) == [0, 1, 2, 3, 4]
        assert list(nwb.acquisition["frames.ok"].data[()]) == [True, False, True, False, True]

        out = nwb.processing["ether"]["out.value"]  # derived: in the processing module
        assert sorted(out.data[()]) == [0, 1, 2, 3, 4]

        trials, epochs = nwb.trials.to_dataframe(), nwb.epochs.to_dataframe()  # ether.trial / ether.run
        want = recorded.structure_records().entries
        assert list(trials["label"]) == ["stim A", "stim B"] and list(trials["status"]) == ["ok", "failed"]
        assert json.loads(trials["metadata"].iloc[0]) == {"stim": "A"}
        assert trials["start_time"].iloc[0] == pytest.approx(want[1]["start"] - start, abs=1e-6)
        assert list(trials["parent_id"]) == [want[0]["id"]] * 2 and trials["error"].iloc[1] == "no response"
        assert (
            list(epochs["label"]) == ["block 1"] and epochs["stop_time"].iloc[0] > trials["stop_time"].max()
        )


def test_zarr_has_the_hdf5_layout(recorded, tmp_path):
    zarr = pytest.importorskip("zarr")
    root = zarr.open_group(str(exported(recorded, "zarr", tmp_path)), mode="r")
    assert json.loads(root.attrs["run_id"]) == recorded.manifest["run_id"]
    ephys = root["ephys"]
    assert_same_array(ephys["data"][:], np.concatenate([ephys_block(k) for k in (0, 1, 2, 4)]))
    assert (
        ephys.attrs["rate"] == RATE and ephys.attrs["channels"] == CHANNELS and ephys.attrs["units"] == "uV"
    )
    assert ephys.attrs["gaps"][0]["missing"] == N and ephys["times"].shape == (4 * N,)
    frames = root["frames"]
    assert_same_array(frames["image"][:], np.stack([frame_payload(k)["image"] for k in range(5)]))
    assert list(frames["label"][:]) == [f"frame {k}" for k in range(5)]
    data, offsets = frames["tag/data"][:], frames["tag/offsets"][:]
    assert [bytes(data[a:b]) for a, b in zip(offsets, offsets[1:], strict=False)] == [
        frame_payload(k)["tag"] for k in range(5)
    ]
    assert_same_array(frames["spectrum/4"][:], np.arange(5, dtype=np.float64))
    assert frames["names"][:].tolist() == [["left", "right"]] * 5
    assert list(frames["_ether/seq"][:]) == [r["_ether.seq"] for r in recorded.records("frames")]


def decode_array(value: dict) -> np.ndarray:
    """The documented JSON form of an array in the MCAP export, read without Ether."""
    ref = value["$array"]
    return np.frombuffer(base64.b64decode(ref["base64"]), ref["dtype"]).reshape(ref["shape"])


def test_mcap_has_a_json_channel_per_topic_in_time_order(recorded, tmp_path):
    pytest.importorskip("mcap")
    jsonschema = pytest.importorskip("jsonschema")
    from mcap.reader import make_reader

    with exported(recorded, "mcap", tmp_path).open("rb") as f:
        reader = make_reader(f)
        (manifest,) = [m for m in reader.iter_metadata() if m.name == "ether.manifest"]
        assert json.loads(manifest.metadata["run_id"]) == recorded.manifest["run_id"]
        messages = list(reader.iter_messages())
    topics: dict[str, list] = {}
    for schema, channel, message in messages:
        assert channel.message_encoding == "json" and schema.encoding == "jsonschema"
        body = json.loads(message.data)
        jsonschema.validate(body, json.loads(schema.data))
        topics.setdefault(channel.topic, []).append((message, body))
    assert sorted(topics) == sorted(recorded.topics)
    log_times = [m.log_time for _, _, m in messages]
    assert log_times == sorted(log_times)
    frames = topics["frames"]
    assert [b["n"] for _, b in frames] == [0, 1, 2, 3, 4]
    for k, (message, body) in enumerate(frames):
        assert_same_array(decode_array(body["image"]), frame_payload(k)["image"])
        assert_same_array(decode_array(body["spectrum"]), frame_payload(k)["spectrum"])
        assert base64.b64decode(body["tag"]) == frame_payload(k)["tag"]
        assert message.log_time == round(body["_ether"]["t_recorded"] * 1e9)
        assert message.publish_time == round(body["_ether"]["t_sent"] * 1e9)
    blocks = [b for _, b in topics["ephys"]]
    assert [b["channels"] for b in blocks] == [CHANNELS] * 4
    assert_same_array(
        np.concatenate([decode_array(b["data"]) for b in blocks]), recorded.blocks("ephys").data
    )


@pytest.mark.parametrize("fmt, module", [("nwb", "pynwb"), ("zarr", "zarr"), ("mcap", "mcap")])
def test_a_missing_extra_names_the_pip_command(recorded, tmp_path, fmt, module):
    script = (
        f"import sys; sys.modules[{module!r}] = None; from ether.cli import main;"
        f" main(['export', {str(recorded.path)!r}, '--format', {fmt!r}, '--out', {str(tmp_path)!r}])"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    assert f"--format {fmt} needs {module}: pip install 'ether-lab[{fmt}]'" in done.stderr


def test_the_export_command_writes_nwb(recorded, tmp_path):
    pytest.importorskip("pynwb")
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "ether",
            "export",
            str(recorded.path),
            "--format",
            "nwb",
            "--out",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert (
        tmp_path / f"{recorded.path.name}.nwb"
    ).exists() and "exported 6 topics" in done.stdout  # ether.structure too


def test_hdf5_writes_times_and_unicode_arrays(recorded, tmp_path):
    h5py = pytest.importorskip("h5py")
    with h5py.File(exported(recorded, "hdf5", tmp_path)) as f:
        when = f["frames/when"]
        want = np.stack([frame_payload(k)["when"] for k in range(5)])
        assert_same_array(when[()].view(when.attrs["dtype"]), want)
        assert [s.decode() for s in f["frames/names"][0]] == ["left", "right"]


def clock_event(src: str, t_board: float, offset: float) -> dict:
    detail = {"offset": offset, "t_board": t_board, "t_host": t_board + offset, "seq": 1}
    return {"kind": "device_clock", "src": src, "boot": "b", "detail": detail}


def test_a_boards_block_times_move_to_the_host_clock_by_the_offset_of_their_time():
    """A board counting from power-on, whose clock is then set (NTP): each sample is moved by the
    estimate in effect when it was taken; a host source has no estimates and is not moved."""
    events = [clock_event("board", 100.0, 900.0), clock_event("board", 1001.5, 0.0)]
    events.append({"kind": "new_boot", "src": "board", "boot": "b", "detail": {}})
    clocks = board_clocks(events)
    assert set(clocks) == {"board"}
    times = np.array([99.0, 100.0, 100.5, 1001.5, 1002.0])
    assert clocks["board"].to_host(times).tolist() == [999.0, 1000.0, 1000.5, 1001.5, 1002.0]
