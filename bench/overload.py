"""Benchmark: ten 1 kHz publishers on one broker. How far behind does it fall, does the session say
so, how long does Ctrl-C take, and what does the seal say was not saved?

Per broker (embedded amqtt, and Mosquitto when installed): a recorded session with ten `Flood`
instances (bench_classes.py, a periodic publisher at 1 ms), run for --seconds; each second the
supervisor's own measure of the broker's lag (`session.lag`, the broker_lag_s of its status) is read.
Then the session is closed as Ctrl-C would close it, and its manifest is read.

Printed per broker: offered (ticks the publishers made), saved, unsaved (left in outboxes, counted by
the seal), the lag at the end and its maximum, the seconds close() took, and the seal.

Run: python bench/overload.py [--seconds 20] [--publishers 10]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

from ether.data.recorder.store import connect, read_manifest
from ether.runtime.session import new_session

sys.path.insert(0, str(Path(__file__).parent))  # bench_classes, in each instance process too


def run(broker: str | None, seconds: float, publishers: int) -> dict:
    folder = tempfile.mkdtemp()
    instances = {f"flood{i}": {"class_path": "bench_classes.Flood"} for i in range(publishers)}
    config = {"recorder": {"path": folder}, "instances": instances}
    if broker:
        config["broker"] = broker
    session = new_session(config)
    session.open(60)
    session.start(60)
    lags: list[float] = []
    tick = threading.Event()
    for _ in range(int(seconds)):
        tick.wait(1.0)
        lags.append(session.lag.lag if session.lag else float("nan"))
    began = time.monotonic()
    session.close()
    took = time.monotonic() - began
    db = connect(session.recording.run_dir, readonly=True)
    manifest = read_manifest(db)
    offered = db.execute("SELECT COUNT(*) FROM messages WHERE topic = 'bench/flood'").fetchone()[0]
    behind = [json.loads(r[0]) for r in db.execute("SELECT detail FROM events WHERE kind = 'broker_behind'")]
    db.close()
    shutil.rmtree(folder, ignore_errors=True)
    return {
        "broker": broker or "amqtt",
        "saved": manifest.get("saved"),
        "flood_saved": offered,
        "unsaved": manifest.get("unsaved"),
        "lag_end_s": round(lags[-1], 1),
        "lag_max_s": round(max(lags), 1),
        "close_s": round(took, 1),
        "seal": manifest.get("status"),
        "broker_behind_events": behind,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--publishers", type=int, default=10)
    parser.add_argument("--brokers", default="amqtt,mosquitto")
    args = parser.parse_args()
    print(f"load before: {os.getloadavg()[0]:.1f}; {args.publishers} x 1 kHz for {args.seconds:g} s")
    for name in args.brokers.split(","):
        if name == "mosquitto" and not shutil.which("mosquitto"):
            continue
        result = run("mosquitto" if name == "mosquitto" else None, args.seconds, args.publishers)
        print(json.dumps(result), f"load {os.getloadavg()[0]:.1f}", flush=True)


if __name__ == "__main__":
    main()
