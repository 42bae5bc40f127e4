"""Using recorded data: ether sessions / lineage / export, and ether.open_session as DataFrames."""

from __future__ import annotations

import csv
import subprocess
import sys

import pytest

import ether
from support import REPO


def ether_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "ether", *args], capture_output=True, text=True, cwd=REPO, timeout=60
    )


@pytest.fixture
def recorded_pipeline(run_session, tmp_path):
    config = {
        "recorder": {"path": str(tmp_path)},
        "instances": {
            "processor2x": {"class_path": "lab_pipeline.DataProcessor", "kwargs": {"multiplier": 2}},
            "collector1": {"class_path": "lab_pipeline.DataCollector"},
        },
    }
    session, observer = run_session(config)
    for value in (1, 2, 3):
        session.publish("data", {"data": value})
    results = observer.wait_for("result", 3)
    session.close()
    return tmp_path, session, results


def test_open_session_gives_dataframes_per_topic(recorded_pipeline):
    root, session, _ = recorded_pipeline
    recorded = ether.open_session(session.recording.run_dir)
    assert set(recorded.topics) >= {"data", "result"}
    frame = recorded["result"]
    assert sorted(frame["result"]) == [2, 4, 6]
    assert {"msg_id", "src", "boot", "seq", "parents", "t_sent", "t_recorded"} <= set(frame.columns)
    assert set(frame["src"]) == {"processor2x"} and recorded.gaps == []
    assert recorded.manifest["status"] == "complete"
    with pytest.raises(KeyError, match="no topic 'nope'"):
        recorded["nope"]


def test_lineage_sessions_and_export_commands(recorded_pipeline, tmp_path):
    root, session, results = recorded_pipeline
    result_id = results[0][1].id
    out = ether_cli("lineage", result_id, "--data", str(root))
    assert out.returncode == 0, out.stderr
    assert "result  from processor2x lab_pipeline.DataProcessor sha256:" in out.stdout
    assert "<- " in out.stdout and "data  from main:" in out.stdout  # traced back to the raw sample

    listing = ether_cli("sessions", "--data", str(root))
    assert session.recording.run_id in listing.stdout and "complete" in listing.stdout

    target = tmp_path / "csv"
    done = ether_cli("export", "last", "--format", "csv", "--out", str(target), "--data", str(root))
    assert done.returncode == 0, done.stderr
    with (target / "result.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert sorted(int(r["result"]) for r in rows) == [2, 4, 6] and rows[0]["src"] == "processor2x"

    parquet = ether_cli(
        "export", "last", "--format", "parquet", "--out", str(tmp_path / "pq"), "--data", str(root)
    )
    try:
        import pyarrow  # noqa: F401
    except ImportError:
        assert parquet.returncode == 1 and "needs pyarrow" in parquet.stderr
    else:
        assert parquet.returncode == 0 and (tmp_path / "pq" / "result.parquet").exists()

    missing = ether_cli("lineage", "nope.1", "--data", str(root))
    assert missing.returncode == 1 and "in no recorded session" in missing.stderr


def test_replay_reports_where_a_changed_pipeline_differs(tmp_path):
    def lab(name: str, multiplier: int):
        path = tmp_path / f"{name}.yaml"
        path.write_text(
            f"recorder: {{path: {tmp_path / 'data'}}}\n"
            "instances:\n"
            "  processor: {class_path: lab_pipeline.DataProcessor, kwargs: {multiplier: %d}}\n" % multiplier
        )
        return str(path)

    from ether.data.replay import replay
    from ether.runtime.session import new_session

    original = new_session(lab("original", 2))
    original.open()
    for value in (1, 2, 3):
        original.recording.publish("data", {"data": value})
    original.close()

    same = replay(str(original.recording.run_dir), lab("same", 2))
    assert same["sources"] == 3 and same["same"] == 3 and same["differ"] == []
    changed = replay(str(original.recording.run_dir), lab("changed", 3))
    assert changed["same"] == 0 and len(changed["differ"]) == 3
    first = changed["differ"][0]
    assert (
        first["topic"] == "result"
        and first["recorded"] == ['{"result":2}']
        and first["replayed"] == ['{"result":3}']
    )


def test_last_is_not_a_run_that_joined_another_recorder(tmp_path):
    from ether.data.recorded import find_session
    from ether.data.recorder.store import Store

    for run_id, extra in (
        ("20261123-101500-default-aaaaaa", {}),
        ("20261123-101600-default-bbbbbb", {"recorded_by": {}}),
    ):
        Store(tmp_path / run_id).set_manifest(run_id=run_id, **extra)
    assert find_session("last", tmp_path).name == "20261123-101500-default-aaaaaa"
