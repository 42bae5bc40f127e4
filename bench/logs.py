"""Benchmark: what a log line costs the thread that logs it, with and without publishing it for the store.

In one run, side by side, on one broker (Mosquitto when installed, else the embedded amqtt):
  no handler    the logging call itself (a NullHandler)
  stderr only   a stream handler (to /dev/null): what every Ether process pays anyway
  published     ``LogPublisher`` alone, lines within the burst (each is queued for its thread)
  refused       ``LogPublisher`` alone, lines beyond the rate limit (each is only counted)
Prints the median microseconds per line of several runs. Usage: ``python bench/logs.py [--runs 5]``.
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from brokers import brokers  # noqa: E402

from ether.transport.bus import Bus  # noqa: E402
from ether.transport.log_publishing import BURST, LogPublisher  # noqa: E402


def per_line(logger: logging.Logger, lines: int) -> float:
    start = time.perf_counter()
    for i in range(lines):
        logger.warning("line %d of the bench", i)
    return (time.perf_counter() - start) / lines * 1e6


def drained(publisher: LogPublisher) -> None:
    """Let the publishing thread send what is queued (so that it does not run during the next measure)."""
    while not publisher.lines.empty():
        time.sleep(0.01)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    names = ["mosquitto"] if os.path.exists("/usr/sbin/mosquitto") else ["amqtt"]
    for label, address in brokers(names):
        bus = Bus(address, client_id="bench-logs")
        bus.connect()
        logger = logging.getLogger("bench")
        logger.propagate = False
        stderr = logging.StreamHandler(open(os.devnull, "w"))
        results: dict[str, list[float]] = {
            "no handler": [],
            "stderr only": [],
            "published": [],
            "refused": [],
        }
        lines = BURST - 50  # within one burst: every line is queued for publishing
        for _ in range(args.runs):
            logger.addHandler(logging.NullHandler())
            results["no handler"].append(per_line(logger, lines))
            logger.handlers = [stderr]
            results["stderr only"].append(per_line(logger, lines))
            publisher = LogPublisher(bus, "ether/default/log/bench")
            logger.handlers = [publisher]
            results["published"].append(per_line(logger, lines))
            per_line(logger, 100)  # the rest of the burst
            drained(publisher)
            results["refused"].append(per_line(logger, lines))
            logger.handlers = []
            publisher.close()
        print(
            f"{label}: microseconds per log line in the logging thread, median of {args.runs} runs of {lines}"
        )
        for name, values in results.items():
            print(f"  {name:<12} {statistics.median(values):7.1f}")
        bus.close()


if __name__ == "__main__":
    main()
