"""Structure inside a session (docs/experiments.md): runs, trials and markers from a tapped script, an
instance and a plain MQTT client (mosquitto_pub), read back with open_session and used to slice a topic."""

from __future__ import annotations

import datetime
import json
import os
import re
import sqlite3
import subprocess
import sys
import time

import pytest

import ether
from ether import ether_pub, ether_sub
from ether.contract.topics import STRUCTURE
from ether.contract.wire import Stamper
from ether.runtime.hostclock import HostClock
from ether.transport.bus import Bus
from ether.transport.requests import Requester
from support import REPO, ether_run, logged_in, recorder_barrier

# -- a class the sessions below run (its instance process imports this module) ---------------------


class Stimulator:
    """Runs one trial per request, with a marker inside it, from an instance's own method."""

    @ether_sub(topic="stimulate")
    def stimulate(self, level: float) -> None:
        with ether.trial("stim", level=level):
            ether.mark("stimulus on", level=level)


class Sequencer:
    """Called by its ``schedule:``: a publisher every interval, and a trial sequence."""

    def __init__(self) -> None:
        self.n = 0

    @ether_pub(topic="ping")
    def ping(self, label: str) -> dict:
        self.n += 1
        return {"n": self.n, "label": label}

    def present(self, contrast: float) -> None:
        ether.pub({"contrast": contrast}, "stimulus")


@pytest.fixture
def tapped(tmp_path):
    """A tapped session in this process (as a script or notebook has it); shut down at the end."""
    ether.tap({"recorder": {"path": str(tmp_path)}, "instances": {}})
    run_dir = ether.session_info["run_dir"]
    yield run_dir
    ether.shutdown()


def test_nested_runs_trials_and_markers_from_a_script(tapped):
    with ether.run("session", subject="m1") as outer:
        with pytest.raises(ValueError), ether.run("calibration", gain=2) as calibration:
            ether.pub({"x": -1}, "samples")
            raise ValueError("no signal")
        for i in range(3):
            with ether.trial(stimulus=i):
                ether.pub({"x": i}, "samples")
                ether.mark("stimulus on", contrast=0.5)
        pending = ether.trial("never stopped")  # not a with: stopped by hand, or never
        pending.mark("inside", n=1)
        pending.stop("aborted", "the animal left")
        ether.pub({"x": 99}, "samples")
    ether.shutdown()

    recorded = ether.open_session(tapped)
    runs, trials, markers = recorded.runs, recorded.trials, recorded.markers
    assert list(runs["name"]) == ["session", "calibration"] and list(runs["number"]) == [1, 2]
    assert list(runs["status"]) == ["ok", "failed"]
    assert runs["error"][1] == "ValueError: no signal" and runs["metadata"][1] == {"gain": 2}
    assert runs["parent"].isna()[0] and runs["parent"][1] == outer.id == runs["id"][0]
    assert runs["id"][1] == calibration.id
    assert list(trials["number"]) == [1, 2, 3, 4] and set(trials["parent"]) == {outer.id}
    assert list(trials["metadata"][:3]) == [{"stimulus": i} for i in range(3)]
    assert list(trials["status"]) == ["ok", "ok", "ok", "aborted"]
    assert trials["error"][3] == "the animal left"
    assert all(trials["start"] <= trials["stop"]) and runs["start"][0] <= trials["start"][0]
    assert trials["stop"][3] <= runs["stop"][0]
    assert list(markers["name"]) == ["stimulus on"] * 3 + ["inside"]
    assert list(markers["parent"]) == [*trials["id"][:3], trials["id"][3]]
    assert markers["fields"][0] == {"contrast": 0.5}
    assert recorded.structure_records().problems == []
    # slicing a topic by a trial: by its number, its id or its row
    assert list(recorded.during("samples", 2)["x"]) == [1]
    assert list(recorded.during("samples", trials["id"][0])["x"]) == [0]
    assert list(recorded.during("samples", recorded.trial(3))["x"]) == [2]
    assert list(recorded.during("samples", 2, kind="run")["x"]) == [-1]
    assert list(recorded.during("samples", 1, kind="run")["x"]) == [-1, 0, 1, 2, 99]
    with pytest.raises(KeyError, match="no trial number 12 .* 4 trials"):
        recorded.trial(12)


def test_an_instance_marks_trials_from_its_own_method(tapped):
    ether.launch_instances({"stim": {"class_path": "test_experiments.Stimulator"}})
    with ether.run("stimulation") as outer:
        for level in (0.1, 0.2):
            ether.pub({"level": level}, "stimulate")
        ether.save_all()  # answered after each message queued before it was handled
    ether.shutdown()

    recorded = ether.open_session(tapped)
    trials, markers = recorded.trials, recorded.markers
    assert list(trials["metadata"]) == [{"level": 0.1}, {"level": 0.2}]
    assert set(trials["src"]) == {"stim"} and set(trials["status"]) == {"ok"}
    assert set(trials["parent"]) == {outer.id}  # the instance had none open: the innermost open run
    assert list(markers["parent"]) == list(trials["id"]) and set(markers["src"]) == {"stim"}


def mosquitto_pub(address, topic: str, message: str) -> None:
    subprocess.run(
        ["mosquitto_pub", "-h", "127.0.0.1", "-p", str(address.port), "-t", topic, "-m", message, "-q", "1"],
        check=True,
        timeout=20,
    )


@pytest.mark.parametrize("broker", [None, "mosquitto"], ids=["embedded", "managed-mosquitto"])
def test_a_plain_mqtt_client_starts_and_stops_trials_and_marks(run_session, tmp_path, broker):
    session, observer = run_session({"recorder": {"path": str(tmp_path)}, "broker": broker})
    sent = [
        {"event": "start", "kind": "run", "name": "psychopy", "id": "block-1", "metadata": {"task": "gabor"}},
        {"event": "start", "kind": "trial", "name": "gabor"},
        {"event": "mark", "name": "stimulus on", "metadata": {"contrast": 0.8}},
        {"event": "stop", "kind": "trial"},
        {"event": "stop", "id": "nothing-open"},  # hostile or mistaken: listed as problems, never used
        {"event": "begin"},
        "not an object",
        {"event": "stop", "id": "block-1", "status": "failed", "error": "escape pressed"},
    ]
    for message in sent:
        mosquitto_pub(session.address, STRUCTURE, json.dumps(message))
    observer.wait_for(STRUCTURE, len(sent))
    recorder_barrier(session)
    session.close()

    recorded = ether.open_session(session.recording.run_dir)
    structure = recorded.structure
    assert list(structure["id"]) == ["block-1", structure["id"][1]] and structure["id"][1].startswith(
        "trial@"
    )
    assert structure["parent"].isna()[0] and structure["parent"][1] == "block-1"
    assert list(structure["status"]) == ["failed", "ok"] and structure["error"][0] == "escape pressed"
    assert structure["src"].isna().all()  # a foreign client: no verified source
    markers = recorded.markers
    assert list(markers["parent"]) == [structure["id"][1]] and markers["fields"][0] == {"contrast": 0.8}
    problems = [p["reason"] for p in recorded.structure_records().problems]
    assert len(problems) == 3 and "stop of no open run or trial ({'id': 'nothing-open'})" in problems[0]
    assert "event" in problems[1] and "StructureEvent" in problems[2]


def test_an_entry_never_stopped_is_unfinished(run_session, tmp_path):
    session, observer = run_session({"recorder": {"path": str(tmp_path)}})
    session.publish(STRUCTURE, {"event": "start", "kind": "trial", "name": "t"})
    session.close()
    trials = ether.open_session(session.recording.run_dir).trials
    assert list(trials["status"]) == ["unfinished"] and trials["stop"].isna().all()


def test_structure_outside_a_session_names_the_fix():
    with pytest.raises(RuntimeError, match=r"call ether.tap\(config\) first"):
        ether.mark("nothing")


def ether_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ether", *args], capture_output=True, text=True, timeout=60)


def test_the_cli_starts_stops_and_marks_and_waits_for_the_recorder(run_session, tmp_path):
    session, _ = run_session({"recorder": {"path": str(tmp_path)}})
    where = ("--broker", session.address.url)
    started = ether_cli("run-start", "baseline", "--id", "base", "-m", "subject=m1", "-m", "gain=2", *where)
    assert started.returncode == 0 and started.stdout.strip() == "base", started.stderr
    trial = ether_cli("trial-start", *where)
    assert trial.returncode == 0 and trial.stdout.startswith("trial-"), trial.stderr
    assert ether_cli("mark", "reward", "-f", "ml=0.1", *where).returncode == 0
    assert ether_cli("trial-stop", *where).returncode == 0
    assert ether_cli("run-stop", "base", "--status", "failed", "--error", "lamp off", *where).returncode == 0
    bad = ether_cli("mark", "x", "-f", "novalue", *where)
    assert bad.returncode == 2 and "--field 'novalue': expected KEY=VALUE" in bad.stderr
    session.close()

    recorded = ether.open_session(session.recording.run_dir)
    structure = recorded.structure
    assert list(structure["id"]) == ["base", trial.stdout.strip()]
    assert structure["metadata"][0] == {"subject": "m1", "gain": 2}
    assert list(structure["status"]) == ["failed", "ok"] and structure["parent"][1] == "base"
    assert list(recorded.markers["parent"]) == [trial.stdout.strip()]
    assert recorded.markers["fields"][0] == {"ml": 0.1}


def test_the_cli_says_when_no_recorder_confirmed(tmp_path):
    done = ether_cli("mark", "x", "--broker", "mqtt://127.0.0.1:1", "--timeout", "1")
    assert done.returncode == 1 and "ether:" in done.stderr


def test_a_schedule_calls_methods_every_interval_and_runs_a_trial_sequence(run_session, tmp_path):
    schedule = [
        {"method": "ping", "every": "50ms", "count": 3, "args": {"label": "tick"}},
        {"method": "present", "trials": [{"contrast": 0.2}, {"contrast": 0.8}], "repeat": 2},
    ]
    config = {
        "recorder": {"path": str(tmp_path)},
        "instances": {"seq": {"class_path": "test_experiments.Sequencer", "schedule": schedule}},
    }
    session, observer = run_session(config)
    session.start()
    observer.wait_for("ping", 3)
    observer.wait_for(STRUCTURE, 8)  # 4 trials: a start and a stop each
    session.close()

    recorded = ether.open_session(session.recording.run_dir)
    assert [(r["n"], r["label"]) for r in recorded.records("ping")] == [(1, "tick"), (2, "tick"), (3, "tick")]
    trials = recorded.trials
    assert list(trials["name"]) == ["present"] * 4 and set(trials["src"]) == {"seq"}
    assert list(trials["metadata"]) == [
        {"contrast": c, "sequence_index": i, "repetition": r} for r in (1, 2) for i, c in ((1, 0.2), (2, 0.8))
    ]
    assert set(trials["status"]) == {"ok"} and all(trials["stop"][:-1].values <= trials["start"][1:].values)
    assert [list(recorded.during("stimulus", n)["contrast"]) for n in (1, 2, 3, 4)] == [
        [0.2],
        [0.8],
        [0.2],
        [0.8],
    ]


def test_a_schedule_of_a_method_the_class_lacks_is_a_config_error(tmp_path):
    from ether.config import ConfigError, load

    path = tmp_path / "lab.yaml"
    path.write_text(
        "instances:\n  seq:\n    class_path: test_experiments.Sequencer\n    schedule:\n"
        "      - method: presnt\n        every: 1s\n"
    )
    with pytest.raises(ConfigError, match=r"lab.yaml:5.*no method 'presnt' \(did you mean 'present'\?\)"):
        load(path)
    path.write_text(
        "instances:\n  seq:\n    class_path: test_experiments.Sequencer\n    schedule:\n      - method: present\n"
    )
    with pytest.raises(ConfigError, match="say when"):
        load(path)


def test_cron_lines_and_durations():
    from ether.runtime.schedules import Cron, parse_duration

    t = datetime.datetime(2026, 12, 3, 18, 7, 30).timestamp()  # a Thursday, local time

    def after(line: str) -> datetime.datetime:
        return datetime.datetime.fromtimestamp(Cron(line).next_after(t))

    assert after("* * * * *") == datetime.datetime(2026, 12, 3, 18, 8)
    assert after("*/15 * * * *") == datetime.datetime(2026, 12, 3, 18, 15)
    assert after("0 9 * * 1-5") == datetime.datetime(2026, 12, 4, 9, 0)  # Friday 9:00
    assert after("30 8 * * 0") == datetime.datetime(2026, 12, 6, 8, 30)  # Sunday
    assert after("0 0 1 1 *") == datetime.datetime(2027, 1, 1, 0, 0)
    assert after("0 12 13 * 5") == datetime.datetime(2026, 12, 4, 12, 0)  # day 13 or a Friday
    for bad, why in (("* * *", "5 fields"), ("60 * * * *", "outside 0-59"), ("x * * * *", "not a number")):
        with pytest.raises(ValueError, match=why):
            Cron(bad)
    assert [parse_duration(d) for d in ("90", "90s", "10m", "1h30m", "500ms", 2)] == [
        90,
        90,
        600,
        5400,
        0.5,
        2,
    ]
    for bad in ("10q", "0s", "-1", "m"):
        with pytest.raises(ValueError, match="duration"):
            parse_duration(bad)


def test_ether_run_for_a_duration_ends_cleanly_with_its_drain(tmp_path):
    config = tmp_path / "lab.yaml"
    schedule = "    schedule:\n      - method: ping\n        every: 100ms\n        args: {label: timed}\n"
    config.write_text(
        f"recorder: {{path: {tmp_path}}}\ninstances:\n  seq:\n    class_path: test_experiments.Sequencer\n{schedule}"
    )
    tests = str(REPO / "tests")  # where its class is
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([tests, os.environ.get("PYTHONPATH", "")])}
    proc = ether_run(config, "--headless", "--port", "0", "--for", "2s", env=env)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0, out
    assert "--for 2 s is over" in out and "sealed complete" in out
    recorded = ether.open_session(next(p.parent for p in tmp_path.rglob("session.sqlite")))
    assert recorded.manifest["stopped_at"] - recorded.manifest["started_at"] >= 2
    assert recorded.manifest["status"] == "complete" and len(recorded.records("ping")) >= 1


# -- notebooks: a real Jupyter kernel (jupyter_client + ipykernel) --------------------------------


class Kernel:
    """An IPython kernel in its own process, as Jupyter runs one; ``run`` executes one cell."""

    def __init__(self) -> None:
        from jupyter_client.manager import start_new_kernel

        path = os.pathsep.join([str(REPO / "tests"), os.environ.get("PYTHONPATH", "")])
        self.manager, self.client = start_new_kernel(
            kernel_name="python3", env={**os.environ, "PYTHONPATH": path}, cwd=str(REPO)
        )

    def run(self, code: str, timeout: float = 120.0) -> dict[str, list]:
        """The cell's outputs by message type (stream text, errors, display data and its updates)."""
        msg_id = self.client.execute(code)
        outputs: dict[str, list] = {}
        while True:
            msg = self.client.get_iopub_msg(timeout=timeout)
            kind, content = msg["msg_type"], msg["content"]
            if kind == "update_display_data" or msg["parent_header"].get("msg_id") == msg_id:
                if kind == "status" and content["execution_state"] == "idle":
                    if msg["parent_header"].get("msg_id") == msg_id:
                        return outputs
                    continue
                outputs.setdefault(kind, []).append(content)

    def close(self) -> None:
        self.client.stop_channels()
        self.manager.shutdown_kernel(now=True)


def test_tap_and_a_live_view_inside_a_jupyter_kernel(tmp_path):
    kernel = Kernel()
    try:
        probe = kernel.run("import asyncio\nprint(asyncio.get_event_loop().is_running())")
        assert probe["stream"][0]["text"].strip() == "True"  # IPython's loop runs while cells do
        cell = (
            "import ether\n"
            f"ether.tap({{'recorder': {{'path': {str(tmp_path)!r}}},"
            " 'instances': {'ticker': {'class_path': 'lab_classes.Ticker'}}})\n"
            "ether.start()\n"
            "with ether.run('notebook'):\n"
            "    ether.mark('from a cell')\n"
            "view = ether.live('tick', field='n', every=0.05)\n"
            "print('counted', view.wait(5, timeout=30))\n"
        )
        out = kernel.run(cell)
        assert "error" not in out, out.get("error")
        assert "counted True" in "".join(s["text"] for s in out["stream"])
        shown = out["display_data"][0]
        assert "<b>tick</b>" in shown["data"]["text/html"] and shown["transient"]["display_id"]
        redrawn = kernel.run("view.wait(view.count + 3, timeout=30); view.stop(); ether.shutdown()")
        assert "error" not in redrawn, redrawn.get("error")
        last = redrawn["update_display_data"][-1]["data"]["text/html"]  # stop() draws it a last time
        assert "(stopped)" in last and "<svg" in last
        assert re.search(r"(\d+) messages.*<small>\1 values", last), last  # every message's number drawn
    finally:
        kernel.close()
    recorded = ether.open_session(next(p.parent for p in tmp_path.rglob("session.sqlite")))
    assert list(recorded.runs["name"]) == ["notebook"] and list(recorded.markers["name"]) == ["from a cell"]
    assert recorded.manifest["status"] == "complete"


# -- one clock -------------------------------------------------------------------------------------


def test_each_supervisor_measures_its_offset_to_the_recorder_and_it_is_recorded(run_session, tmp_path):
    session, _ = run_session({"recorder": {"path": str(tmp_path)}})
    assert session.clock is not None and session.clock.measured.wait(30)  # measured as the session opens
    # a host whose clock is 5 s behind the recorder's, measured three times (as every PERIOD)
    bus = Bus(logged_in(session.address, "supervisor", "skewed"), client_id="skewed-supervisor")
    bus.connect()
    skewed = HostClock(
        Requester(bus, session.topics, Stamper("main:skewed")),
        session.topics,
        "skewed",
        "lab-pc-2",
        lambda: ["main:skewed", "camera"],
        clock=lambda: time.time() - 5.0,
    )
    measured = [skewed.measure() for _ in range(3)]
    bus.close()
    session.publish("samples", {"x": 1})
    session.close()

    recorded = ether.open_session(session.recording.run_dir)
    clocks = recorded.clocks
    own = clocks[clocks["src"] == session.name]
    assert len(own) >= 1 and (own["offset"].abs() <= own["delay"] / 2).all()  # same host: 0 within delay/2
    theirs = clocks[clocks["src"] == "skewed"]
    assert list(theirs["offset"]) == [m[0] for m in measured] and list(theirs["delay"]) == [
        m[1] for m in measured
    ]
    assert ((theirs["offset"] - 5.0).abs() <= theirs["delay"] / 2).all()  # NTP's bound: half the round trip
    frame = recorded.on_common_clock("samples")
    shift = (frame["_ether.t_common"] - frame["_ether.t_sent"]).dt.total_seconds()
    assert shift.abs().max() <= own["delay"].max() / 2 + 1e-6  # the script's time, on the recorder's clock


def test_a_drifting_board_clock_is_corrected_to_within_its_least_delay(tmp_path):
    """A board whose crystal runs 500 ppm fast (43 s a day), started at an arbitrary time, sends one
    reading a second for 10 minutes with delivery delays of 2 to 50 ms. The recorder's estimator
    (DeviceClocks, one estimate a minute) and the reader's interpolation put every reading within
    the delays of the estimates around it (≤ 10 ms here after the first minute) of the true time,
    never early; a single offset would be 0.3 s off by the end."""
    import random

    from ether.data.recorder.clocks import DeviceClocks
    from ether.data.recorder.store import Row, Store

    rng = random.Random(18)
    store, clocks = Store(tmp_path), DeviceClocks(period=60)
    start, drift, board_start = 1.7e9, 500e-6, 1234.5
    truth, least, estimated = {}, [], []
    with store.transaction():
        for seq in range(1, 601):
            t_true = start + seq
            t_board = board_start + (t_true - start) * (1 + drift)
            delay = 0.002 + 0.003 * rng.random() if seq % 13 == 0 else 0.005 + 0.045 * rng.random()
            t_host = t_true + delay
            truth[seq] = t_true
            payload = json.dumps({"v": seq})
            store.insert([Row("board.temp", payload, f"b.{seq}", "board", "b1", seq, [], t_board, t_host)])
            detail = clocks.observe("board", "b1", t_board, t_host, seq)
            if detail is not None:
                store.event("device_clock", "board", "b1", **detail)
                least.append(detail["t_host"] - truth[detail["seq"]])
                estimated.append(detail["t_host"])
    store.close()

    frame = ether.open_session(tmp_path).on_common_clock("board.temp")
    common = frame["_ether.t_common"].astype("int64") / 1e9
    error = common - frame["_ether.seq"].map(truth)
    # the first estimate is the first reading's (any delay), each later one the least offset of its
    # minute: a least delayed reading, or a later one with a little more delay (the fast clock's offset shrinks)
    bias = max(least[1:])
    assert len(least) >= 10 and bias <= 0.010
    t = frame["_ether.t_recorded"].astype("int64") / 1e9
    inside, beyond = error[(t >= estimated[1]) & (t <= estimated[-1])], error[t > estimated[-1]]
    assert error.min() >= -1e-6  # never early: an estimate can only be late by its delivery delay
    assert (
        error[t <= estimated[1]].max() <= max(least[:2]) + 1e-6
    )  # the first minute: the first reading's delay
    assert inside.max() <= bias + 1e-6  # between estimates: within their delays
    assert beyond.max() <= 2 * bias  # extrapolated for less than a minute beyond the last
    print(f"residual: max {error.max() * 1e3:.2f} ms; between estimates {inside.max() * 1e3:.2f} ms")
    first = least[0] + drift * 600  # with the first estimate only, drift adds up
    assert first > 0.29


def test_a_handler_s_trial_that_arrives_after_the_run_stop_is_still_inside_the_run():
    """The order the broker delivers in is not the order things happened: the instance's trial for the
    script's second message reaches the recorder after the script's run stop."""
    from ether.data.structure import read_structure

    db = sqlite3.connect(":memory:")
    db.row_factory = sqlite3.Row
    db.execute(
        "CREATE TABLE messages (row INTEGER PRIMARY KEY, topic, msg_id, src, boot, seq, parents, payload, t_recorded)"
    )
    arrived = [  # (msg_id, src, seq, parents, topic, payload), in arrival order
        (
            "s.1",
            "main",
            1,
            [],
            STRUCTURE,
            {"event": "start", "kind": "run", "id": "r", "name": "stimulation"},
        ),
        ("s.2", "main", 2, [], "stimulate", {"level": 0.1}),
        ("i.1", "stim", 1, ["s.2"], STRUCTURE, {"event": "start", "kind": "trial", "id": "t1"}),
        ("s.3", "main", 3, [], "stimulate", {"level": 0.2}),
        ("i.2", "stim", 2, ["s.2"], STRUCTURE, {"event": "stop", "id": "t1"}),
        ("s.4", "main", 4, [], STRUCTURE, {"event": "stop", "id": "r"}),
        ("i.3", "stim", 3, ["s.3"], STRUCTURE, {"event": "start", "kind": "trial", "id": "t2"}),
        ("i.4", "stim", 4, ["s.3"], STRUCTURE, {"event": "mark", "name": "stimulus on"}),
        ("i.5", "stim", 5, ["s.3"], STRUCTURE, {"event": "stop", "id": "t2"}),
    ]
    for t, (msg_id, src, seq, parents, topic, payload) in enumerate(arrived):
        db.execute(
            "INSERT INTO messages (topic, msg_id, src, boot, seq, parents, payload, t_recorded) VALUES (?,?,?,?,?,?,?,?)",
            (topic, msg_id, src, "b", seq, json.dumps(parents), json.dumps(payload), float(t)),
        )
    structure = read_structure(db)
    assert structure.problems == []
    trials = [e for e in structure.entries if e["kind"] == "trial"]
    assert [(e["id"], e["parent"], e["status"]) for e in trials] == [("t1", "r", "ok"), ("t2", "r", "ok")]
    assert [m["parent"] for m in structure.markers] == ["t2"]
