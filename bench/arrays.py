"""Arrays through Ether against raw paho, and a sustained 32-channel recording, on Mosquitto.

  throughput  n arrays of one kind from a source to a sink, one process each: raw paho sending the
              same number of bytes (bench/raw_paho.py --size, no in-flight cap) against Ether with
              the recorder (``ArraySource`` -> ``ArraySink``); MB/s of array data, and the CPU the
              processes spent per array (the recorder's too, the broker's not), median of --runs
  sustained   32 ch x 30 kHz int16 in 10 ms blocks (``Ephys``) for --seconds with the recorder:
              blocks sent and stored, gaps, the recorder's CPU, the store's size against the raw
              sample bytes (and that ratio for 1 h), and how long a 1 s slice takes to read

  ezmsg       the same arrays through ezmsg 3's shared memory between two processes (bench/ezmsg_peer.py,
              its best settings), alone and with a third process logging every array to disk (ezmsg's
              own MessageLogger lines; raw bytes), against Ether with the recorder, alternated in one
              run (needs ``pip install ezmsg``)
  compression stdlib codecs (zlib, lzma, bz2; byte shuffle) on synthetic ephys, camera and float64
              arrays: stored size / raw size and MB/s, the case for compressing the store (docs/data.md)

Run: ``python bench/arrays.py [--runs 3] [-n 100] [--seconds 60]
[--parts throughput ezmsg sustained compression]``.
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
from brokers import RawProcess, brokers, cpu_seconds  # noqa: E402
from pipeline import ether_go, ether_session  # noqa: E402

import ether  # noqa: E402
from ether.contract.wire import decode  # noqa: E402
from ether.transport.broker import BrokerAddress  # noqa: E402
from ether.transport.bus import Bus  # noqa: E402

KINDS = ("float64", "frame")


def raw_throughput(address, n: int, nbytes: int) -> tuple[float, float]:
    """(MB/s, CPU ms per array of the two processes; the broker's not counted)."""
    sink = RawProcess(address, "sink", "-n", str(n), "--topic", "raw/data")
    source = RawProcess(address, "source", "-n", str(n), "--size", str(nbytes))
    pids = (sink.process.pid, source.process.pid)
    try:
        for c in (sink, source):
            c.expect("ready")
        cpu = cpu_seconds(*pids)
        start = time.time()
        source.send()
        last = sink.expect("last", 300)
        cpu = cpu_seconds(*pids) - cpu
    finally:
        for c in (sink, source):
            c.stop()
    return n * nbytes / (last - start) / 1e6, cpu / n * 1e3


def warm_up(session, kind: str) -> None:
    """One small array saved before the measurement: the recorder imports numpy (~0.1 s of CPU) on
    the first array it reads, which raw paho never does (the sink imports it when it starts)."""
    session.publish("bench/warm_up", {"data": array_of(kind)[:1]})
    session.recording.data.flush(30)
    recorder = session.recording.process.requester
    recorder.request(session.topics.recorder_control(), {"command": "barrier"}, 30)


# ezmsg's pipeline alone, with its MessageLogger's lines, with a logger of raw bytes (bench/ezmsg_peer.py)
EZMSG_VARIANTS = {"ezmsg SHM": None, "ezmsg + MessageLogger": "json", "ezmsg + raw logger": "raw"}


def ezmsg_throughput(n: int, kind: str, nbytes: int, log: str | None = None) -> float:
    """The same arrays between two processes through ezmsg's shared memory (bench/ezmsg_peer.py);
    with ``log`` ("json": ezmsg's MessageLogger lines, "raw": the bytes) a third process, a logger,
    also writes every array to a file, as Ether's recorder does: the time until both have all."""
    from ezmsg.core.graphserver import GraphServer

    server = GraphServer()
    server.start(("127.0.0.1", 0))
    host, port = server.address
    address = BrokerAddress(host, port)
    source = None
    with tempfile.TemporaryDirectory() as tmp:
        sinks = [RawProcess(address, "sink", "-n", str(n), script="ezmsg_peer.py")]
        if log:
            file = str(Path(tmp) / "log")
            sinks.append(
                RawProcess(
                    address, "logger", "-n", str(n), "--file", file, "--log", log, script="ezmsg_peer.py"
                )
            )
        try:
            for sink in sinks:
                sink.expect("ready")
            source = RawProcess(address, "source", "-n", str(n), "--kind", kind, script="ezmsg_peer.py")
            for sink in sinks:
                sink.expect("warm")
            start = time.time()
            source.send()
            last = max(sink.expect("last", 300) for sink in sinks)
        finally:
            for c in (*sinks, source):
                if c is not None:
                    c.stop()
            server.stop()
    return n * nbytes / (last - start) / 1e6


def ether_throughput(address, n: int, kind: str, nbytes: int) -> tuple[float, float]:
    """(MB/s, CPU ms per array of the source, the sink and the recorder; the broker's not counted)."""
    instances = {
        "source": {"class_path": "bench_classes.ArraySource"},
        "sink": {"class_path": "bench_classes.ArraySink", "kwargs": {"n": n}},
    }
    with tempfile.TemporaryDirectory() as tmp:
        session = ether_session(address.url, instances, True, Path(tmp))
        pids = [session.supervisor.instances[name].pid for name in instances]
        pids.append(session.recording.process.pid)
        try:
            warm_up(session, kind)
            cpu = cpu_seconds(*pids)
            elapsed = ether_go(session, n, 0.0, 1, topic="bench/go_arrays", kind=kind)
            cpu = cpu_seconds(*pids) - cpu
        finally:
            session.close()
    return n * nbytes / elapsed / 1e6, cpu / n * 1e3


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


def compression_data() -> dict:
    """Arrays like a lab's (synthetic: real recordings compress differently; said beside the figures)."""
    import numpy as np

    rng = np.random.default_rng(1)
    n = 5 * 30_000  # 5 s of 32 channels at 30 kHz
    lfp = np.cumsum(rng.normal(0, 3, (n, 32)), axis=0)  # a slow wandering signal, per channel
    lfp -= np.convolve(lfp[:, 0], np.ones(3000) / 3000, "same")[:, None]  # kept near zero
    ephys = np.clip(lfp * 0.2 + rng.normal(0, 30, (n, 32)), -32768, 32767).astype(np.int16)
    y, x = np.mgrid[0:480, 0:640]
    scene = 128 + 60 * np.sin(x / 40.0)[..., None] * np.cos(y / 30.0)[..., None] + np.zeros(3)
    frames = np.stack(
        [np.clip(scene + rng.normal(0, 3, scene.shape), 0, 255).astype(np.uint8) for _ in range(10)]
    )
    return {
        "ephys int16 (signal + noise)": ephys,
        "ephys int16 (uniform +-3000: the bench source)": rng.integers(-3000, 3000, (n, 32), dtype=np.int16),
        "camera 640x480x3 uint8 (scene + noise)": frames,
        "float64 normal": rng.normal(size=1_250_000),
    }


def shuffled(a) -> bytes:
    """The array's bytes grouped by their place in each value (all low bytes, then all high bytes...):
    blosc's shuffle, which makes numbers that change slowly compress better."""
    import numpy as np

    return np.ascontiguousarray(a.reshape(-1).view(np.uint8).reshape(-1, a.itemsize).T).tobytes()


def compression(runs: int) -> list[dict]:
    """Size and speed of the stdlib codecs (zstd is not in Python 3.11's stdlib) on each kind of array."""
    import bz2
    import lzma
    import zlib

    codecs = {
        "zlib-1": (lambda b: zlib.compress(b, 1), zlib.decompress, False),
        "zlib-6": (lambda b: zlib.compress(b, 6), zlib.decompress, False),
        "shuffle+zlib-1": (lambda b: zlib.compress(b, 1), zlib.decompress, True),
        "lzma-0": (lambda b: lzma.compress(b, preset=0), lzma.decompress, False),
        "bz2-1": (lambda b: bz2.compress(b, 1), bz2.decompress, False),
    }
    rows = []
    for kind, array in compression_data().items():
        for name, (pack, unpack, shuffle) in codecs.items():
            pack_s, unpack_s = [], []
            for _ in range(runs):
                began = time.perf_counter()
                packed = pack(shuffled(array) if shuffle else array.tobytes())
                pack_s.append(time.perf_counter() - began)
                began = time.perf_counter()
                unpack(packed)
                unpack_s.append(time.perf_counter() - began)
            mb = array.nbytes / 1e6
            rows.append(
                {
                    "kind": kind,
                    "codec": name,
                    "ratio": len(packed) / array.nbytes,
                    "compress_MBps": mb / statistics.median(pack_s),
                    "decompress_MBps": mb / statistics.median(unpack_s),
                }
            )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("-n", type=int, default=100, help="arrays per throughput measurement")
    parser.add_argument("--seconds", type=float, default=60.0, help="length of the sustained recording")
    parser.add_argument("--parts", nargs="+", default=["throughput", "sustained"])
    args = parser.parse_args()
    print(f"load: {os.getloadavg()[0]:.1f} (1 min; noisy: other work shares this machine)")
    if "compression" in args.parts:
        print(f"compression, median of {args.runs} runs (stored size / raw size; MB/s of raw data):")
        for row in compression(args.runs):
            print(
                f"  {row['kind']:<48} {row['codec']:<15} {row['ratio']:.3f}"
                f"  compress {row['compress_MBps']:7.1f}  decompress {row['decompress_MBps']:7.1f}"
            )
    on_broker = {"throughput", "ezmsg", "sustained"} & set(args.parts)
    for label, address in brokers(["mosquitto"]) if on_broker else []:
        print(f"== {label}")
        if "throughput" in args.parts:
            for kind in KINDS:
                nbytes = array_of(kind).nbytes
                raw, eth = [], []
                for _ in range(args.runs):
                    raw.append(raw_throughput(address, args.n, nbytes))
                    eth.append(ether_throughput(address, args.n, kind, nbytes))
                    print(
                        f"   {kind}: raw {raw[-1][0]:.0f} MB/s ({raw[-1][1]:.2f} ms CPU per array),"
                        f" ether+recorder {eth[-1][0]:.0f} MB/s ({eth[-1][1]:.2f} ms), ratio {eth[-1][0] / raw[-1][0]:.2f}",
                        flush=True,
                    )
                r, e = (statistics.median(x[0] for x in raw), statistics.median(x[0] for x in eth))
                rc, ec = (statistics.median(x[1] for x in raw), statistics.median(x[1] for x in eth))
                print(
                    f"{kind} ({nbytes} B): raw paho {r:.0f} MB/s, ether+recorder {e:.0f} MB/s, ratio {e / r:.2f};"
                    f" CPU per array raw {rc:.2f} ms, ether+recorder {ec:.2f} ms"
                )
        if "ezmsg" in args.parts:
            for kind in KINDS:
                nbytes = array_of(kind).nbytes
                ez: dict[str, list[float]] = {variant: [] for variant in EZMSG_VARIANTS}
                eth = []
                for _ in range(args.runs):
                    for variant, log in EZMSG_VARIANTS.items():
                        ez[variant].append(ezmsg_throughput(args.n, kind, nbytes, log))
                    eth.append(ether_throughput(address, args.n, kind, nbytes)[0])
                    rounds = ", ".join(f"{v} {ez[v][-1]:.0f}" for v in EZMSG_VARIANTS)
                    print(f"   {kind}: {rounds}, ether+recorder {eth[-1]:.0f} MB/s", flush=True)
                e = statistics.median(eth)
                ratios = ", ".join(
                    f"{v} {statistics.median(ez[v]):.0f} MB/s (ratio {e / statistics.median(ez[v]):.2f})"
                    for v in EZMSG_VARIANTS
                )
                print(f"{kind} ({nbytes} B): ether+recorder {e:.0f} MB/s; {ratios}")
        if "sustained" in args.parts:
            result = sustained(address, args.seconds)
            print(f"sustained 32 ch x 30 kHz int16, 10 ms blocks, {args.seconds:g} s with the recorder:")
            for key, value in result.items():
                print(f"  {key:<22} {value:.3f}" if isinstance(value, float) else f"  {key:<22} {value}")


if __name__ == "__main__":
    main()
