"""Using recorded data: ether sessions / lineage / export, and ether.open_session as DataFrames."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import pytest

import ether
from ether.data.recorded import META_COLUMNS, lineage
from ether.data.recorder.store import Row, Store, connect, same_content
from ether.data.replay import sources_of
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
    assert {f"_ether.{c}" for c in META_COLUMNS} <= set(frame.columns)
    assert set(frame["_ether.src"]) == {"processor2x"} and recorded.gaps == []
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
    assert sorted(int(r["result"]) for r in rows) == [2, 4, 6] and rows[0]["_ether.src"] == "processor2x"

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


def store_of_rows(folder, rows: list[tuple[str, list[str]]]) -> Path:
    """A real session store holding messages (msg_id, parents) on topic 'step'."""
    store = Store(folder)
    store.set_manifest(status="complete")
    with store.transaction():
        store.insert(
            Row("step", f'{{"i": {i}}}', mid, "src", "b", i, parents, 0.0, 0.0)
            for i, (mid, parents) in enumerate(rows, 1)
        )
    store.close()
    return folder


def test_payload_fields_named_like_metadata_are_never_shadowed(run_session, tmp_path):
    session, observer = run_session({"recorder": {"path": str(tmp_path)}})
    mine = {"src": "my probe", "seq": -7, "boot": "cold", "msg_id": "m1", "parents": "none", "t_sent": 3}
    session.publish("readings", mine)
    observer.wait_for("readings", 1)
    session.close()
    recorded = ether.open_session(session.recording.run_dir)
    (record,) = recorded.records("readings")
    assert {k: record[k] for k in mine} == mine
    assert record["_ether.src"].startswith("main:") and record["_ether.seq"] == 1
    frame = recorded["readings"]
    assert frame["src"][0] == "my probe" and frame["_ether.seq"][0] == 1
    target = tmp_path / "csv"
    done = ether_cli("export", str(session.recording.run_dir), "--out", str(target))
    assert done.returncode == 0, done.stderr
    with (target / "readings.csv").open() as f:
        (row,) = list(csv.DictReader(f))
    assert (row["src"], row["seq"], row["_ether.seq"]) == ("my probe", "-7", "1")


def test_lineage_of_a_long_chain_is_not_recursive(tmp_path):
    n = 10_000  # the recursive walk failed at ~3,000 steps (bench/analysis.py times 100k)
    folder = store_of_rows(
        tmp_path / "run", [(f"b.{i}", [f"b.{i - 1}"] if i > 1 else []) for i in range(1, n + 1)]
    )
    db = connect(folder, readonly=True)
    chain = lineage(db, {}, f"b.{n}")
    assert [(depth, e["msg_id"]) for depth, e in chain[:2]] == [(0, f"b.{n}"), (1, f"b.{n - 1}")]
    assert len(chain) == n and (chain[-1][0], chain[-1][1]["msg_id"]) == (n - 1, "b.1")
    assert sources_of(db)[f"b.{n}"] == {"b.1"}
    out = ether_cli("lineage", f"b.{n}", "--session", str(folder))
    assert out.returncode == 0 and f"<- [{n - 1}] b.1  step  from src" in out.stdout, out.stderr[-500:]


def test_sources_of_joins_branches_and_survives_hostile_parents(tmp_path):
    folder = store_of_rows(
        tmp_path / "run",
        [
            ("a", []),
            ("b", []),
            ("left", ["a"]),
            ("right", ["a", "b"]),
            ("join", ["left", "right"]),
            ("orphan", ["never-recorded"]),
            ("loop1", ["loop2", "a"]),  # claims a descendant as parent: must not loop forever
            ("loop2", ["loop1"]),
        ],
    )
    sources = sources_of(connect(folder, readonly=True))
    assert sources["join"] == {"a", "b"} and sources["left"] == {"a"} and sources["a"] == {"a"}
    assert sources["orphan"] == frozenset() and sources["loop1"] == {"a"}


def test_open_session_without_pandas_names_the_extra(recorded_pipeline):
    _, session, _ = recorded_pipeline
    script = (
        "import sys; sys.modules['pandas'] = None  # as if pandas were not installed\n"
        "import ether\n"
        f"run = ether.open_session({str(session.recording.run_dir)!r})\n"
        "print(sorted(r['result'] for r in run.records('result')))\n"
        "try:\n    run['result']\nexcept ImportError as exc:\n    print(exc)\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines()[0] == "[2, 4, 6]" and "pip install 'ether-lab[analysis]'" in out.stdout


def test_a_resend_of_an_array_is_the_same_content_whatever_holds_its_bytes(tmp_path):
    """The recorder tells a resend (dropped) from a conflict (kept) by content: a data section held
    as a memoryview (received) equals the same bytes read back from the store, and one byte differs."""
    data = bytes(range(256)) * 4
    row = Row("x", "{}", "b.1", "s", "b", 1, [], 1.0, 2.0, memoryview(bytearray(data)))
    store = Store(tmp_path / "run")
    store.insert([row])
    store.db.commit()
    saved = tuple(store.saved_content("s", "b", 1))
    assert same_content(saved, row.content())
    changed = bytearray(data)
    changed[-1] ^= 1
    assert not same_content(saved, Row("x", "{}", "b.1", "s", "b", 1, [], 1.0, 2.0, changed).content())
    assert not same_content(saved, Row("x", "{}", "b.1", "s", "b", 1, [], 9.0, 2.0, data).content())
    store.close()
