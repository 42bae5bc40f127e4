"""The original README's pipeline, run with real processes on the embedded broker, then used directly."""

import os
import signal

import ether
from support import PIPELINE, ether_run


def test_pipeline_runs_each_instance_in_its_own_process(run_session):
    session, observer = run_session(PIPELINE)
    session.start()
    results = observer.wait_for("result", 2)
    assert sorted(p["result"] for p, _ in results) == [84, 168]
    data = observer.on("data")
    assert [p for p, _ in data] == [{"data": 42}]
    # each result names the data message that caused it: provenance across processes
    assert {m.parents[0] for _, m in results} == {data[0][1].id}
    assert observer.wait_for("summarize", 2)
    pids = {s["pid"] for s in session.active_instances().values()}
    assert len(pids) == 4 and os.getpid() not in pids
    assert session.close() == {"generator1": 0, "processor2x": 0, "processor4x": 0, "collector1": 0}


def test_module_api_then_transparent_fallback(capfd):
    from lab_pipeline import DataCollector, DataGenerator, DataProcessor

    ether.tap(config=str(PIPELINE))
    try:
        assert set(ether.get_active_instances()) == {"generator1", "processor2x", "processor4x", "collector1"}
        ether.start()
    finally:
        ether.shutdown()
    ether.shutdown()  # twice is harmless

    generator, collector = DataGenerator(), DataCollector()
    generated = generator.generate_data(data=4242)
    r2 = DataProcessor(multiplier=2).process_data(**generated)
    r4 = DataProcessor(multiplier=4).process_data(**generated)
    assert (r2, r4) == ({"result": 8484}, {"result": 16968})
    assert collector.collect_result(**r2) is None
    collector.collect_result(**r4)
    collector.summarize()
    out = capfd.readouterr().out
    assert "mean: 12726.0, max: 16968, min: 8484" in out
    assert f"DataGenerator[PID {os.getpid()}]: Generating data - 4242" in out


def test_ether_run_command_stops_cleanly_on_ctrl_c(tmp_path):
    proc = ether_run(PIPELINE, "--port", "0")
    lines = []
    for line in proc.stdout:  # wait for the collector's summary: the pipeline ran end to end
        lines.append(line)
        if "Summarizing results - mean: 126.0" in line:
            break
    proc.send_signal(signal.SIGINT)
    rest, _ = proc.communicate(timeout=30)
    output = "".join(lines) + rest
    assert proc.returncode == 0, output
    assert "Collected result - 84" in output and "Collected result - 168" in output
    assert "Stopping" in output
