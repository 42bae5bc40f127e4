"""Arrays through Ether against raw paho, and a sustained 32-channel recording, on Mosquitto.

  throughput  n arrays of one kind from a source to a sink, one process each: raw paho sending the
              same number of bytes (bench/raw_paho.py --size, no in-flight cap) against Ether with
              the recorder (``ArraySource`` -> ``ArraySink``); MB/s of array data, median of --runs
  sustained   32 ch x 30 kHz int16 in 10 ms blocks (``Ephys``) for --seconds with the recorder:
              blocks sent and stored, gaps, the recorder's CPU, the store's size against the raw
              sample bytes (and that ratio for 1 h), and how long a 1 s slice takes to read

Run: ``python bench/arrays.py [--runs 3] [-n 100] [--seconds 60] [--parts throughput sustained]``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from bench_classes import array_of  # noqa: E402
from brokers import RawProcess, brokers  # noqa: E402
from pipeline import ether_go, ether_session  # noqa: E402

import ether  # noqa: E402
from ether.contract.wire import decode  # noqa: E402
from ether.transport.bus import Bus  # noqa: E402

KINDS = ("float64", "frame")


def raw_throughput(address, n: int, nbytes: int) -> float:
    sink = RawProcess(address, "sink", "-n", str(n), "--topic", "raw/data")
    source = RawProcess(address, "source", "-n", str(n), "--size", str(nbytes))
    try:
        for c in (sink, source):
            c.expect("ready")
        start = time.time()
        source.send()
        last = sink.expect("last", 300)
    finally:
        for c in (sink, source):
            c.stop()
    return n * nbytes / (last - start) / 1e6


def ether_throughput(address, n: int, kind: str, nbytes: int) -> float:
    instances = {
        "source": {"class_path": "bench_classes.ArraySource"},
        "sink": {"class_path": "bench_classes.ArraySink", "kwargs": {"n": n}},
    }
    with tempfile.TemporaryDirectory() as tmp:
        session = ether_session(address.url, instances, True, Path(tmp))
        try:
            elapsed = ether_go(session, n, 0.0, 1, topic="bench/go_arrays", kind=kind)
        finally:
            session.close()
    return n * nbytes / elapsed / 1e6


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def sustained(address, seconds: float) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        instances = {"ephys": {"class_path": "bench_classes.Ephys", "kwargs": {"seconds": seconds}}}
        session = ether_session(address.url, instances, True, Path(tmp))
        done = threading.Event()
        watcher = Bus(session.address, client_id=f"bench-{uuid.uuid4().hex[:6]}")
        watcher.connect()
        watcher.subscribe("bench/done", lambda topic, raw: done.set() if decode(raw)[0] else None)
        recorder = session.recording.process.pid
        cpu0, t0 = cpu_seconds(recorder), time.time()
        try:
            session.start()
            if not done.wait(seconds + 120):
                raise RuntimeError("the Ephys source did not finish")
            cpu, wall = cpu_seconds(recorder) - cpu0, time.time() - t0
        finally:
            watcher.close()
            session.close()
        run = ether.open_session(session.recording.run_dir)
        stored = run.blocks("ephys")
        store = Path(session.recording.run_dir) / "session.sqlite"
        size = sum(p.stat().st_size for p in store.parent.glob("session.sqlite*"))
        start = stored.times[len(stored.times) // 2]
        began = time.perf_counter()
        one_second = run.blocks("ephys", start, start + 1.0)
        slice_ms = (time.perf_counter() - began) * 1000
        run.close()
    raw = stored.data.nbytes
    return {
        "blocks": len(stored.data) // 300,
        "samples": len(stored.data),
        "time_gaps": len(stored.gaps),
        "lost": sum(g["last_seq"] - g["first_seq"] + 1 for g in stored.lost),
        "recorder_cpu_percent": 100 * cpu / wall,
        "store_bytes": size,
        "raw_bytes": raw,
        "size_ratio": size / raw,
        "one_hour_gb": size / raw * 32 * 30_000 * 2 * 3600 / 1e9,
        "slice_1s_ms": slice_ms,
        "slice_1s_samples": len(one_second.data),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("-n", type=int, default=100, help="arrays per throughput measurement")
    parser.add_argument("--seconds", type=float, default=60.0, help="length of the sustained recording")
    parser.add_argument("--parts", nargs="+", default=["throughput", "sustained"])
    args = parser.parse_args()
    for label, address in brokers(["mosquitto"]):
        print(f"== {label}")
        if "throughput" in args.parts:
            for kind in KINDS:
                nbytes = array_of(kind).nbytes
                raw, eth = [], []
                for _ in range(args.runs):
                    raw.append(raw_throughput(address, args.n, nbytes))
                    eth.append(ether_throughput(address, args.n, kind, nbytes))
                    print(f"   {kind}: raw {raw[-1]:.0f} MB/s, ether+recorder {eth[-1]:.0f} MB/s", flush=True)
                r, e = statistics.median(raw), statistics.median(eth)
                print(
                    f"{kind} ({nbytes} B): raw paho {r:.0f} MB/s, ether+recorder {e:.0f} MB/s, ratio {e / r:.2f}"
                )
        if "sustained" in args.parts:
            result = sustained(address, args.seconds)
            print(f"sustained 32 ch x 30 kHz int16, 10 ms blocks, {args.seconds:g} s with the recorder:")
            for key, value in result.items():
                print(f"  {key:<22} {value:.3f}" if isinstance(value, float) else f"  {key:<22} {value}")


if __name__ == "__main__":
    main()
