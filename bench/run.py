"""The benchmark set in one command: raw paho against Ether, side by side in one run, on each broker.

For each broker (embedded amqtt, Mosquitto when installed, or ``--broker URL``) and each of
``--runs`` rounds, it measures raw paho (one process per client, its best settings), Ether without
the recorder and Ether with it, one after the other: pipeline messages/s, one-hop latency at 1 kHz,
fan-out to k subscribers, then instance start-up and footprint. With the pipeline goes the CPU time
its processes spent per message, and the broker's apart (when started here): on a machine shared
with other work, a steadier measure than messages/s. It prints medians and the ratios to
raw, and writes every sample to a JSON file so a change can be compared before/after.

Run: ``python bench/run.py [--runs 3] [--broker amqtt --broker mosquitto] [--out result.json]``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import pipeline  # noqa: E402
import startup  # noqa: E402
from brokers import brokers, percentile  # noqa: E402

CLIENTS = ("raw", "ether", "ether+recorder")
PARTS = ("pipeline", "latency", "fanout", "startup")


def one_round(address, args) -> dict[str, dict[str, float]]:
    """Every client measured once, side by side."""
    result: dict[str, dict[str, float]] = {}
    for client in args.clients:
        m: dict[str, float | None] = {}
        if "pipeline" in args.parts:
            rate = attempt(pipeline.chain, client, address, args.n, 0)
            m["msgs_per_s"] = rate[0] if rate else None
            m["cpu_us_per_msg"] = rate[2] * 1e6 if rate else None
            m["broker_cpu_us_per_msg"] = rate[3] * 1e6 if rate and rate[3] is not None else None
        if "latency" in args.parts:
            paced = attempt(pipeline.chain, client, address, args.pings, 1 / args.rate)
            m["p50_ms"] = percentile(paced[1], 0.5) * 1000 if paced else None
            m["p99_ms"] = percentile(paced[1], 0.99) * 1000 if paced else None
        if "fanout" in args.parts:
            m["fanout_msgs_per_s"] = attempt(pipeline.fanout, client, address, args.fanout_n, args.fanout)
        result[client] = m
        print(f"    {client:<24} " + "  ".join(f"{k} {v}" for k, v in m.items()), flush=True)
    return result


def attempt(measure, client: str, *args):
    """``measure(client, *args)``, or None when it failed (e.g. the broker dropped messages): the
    round goes on and the failure shows in the table and the JSON file."""
    try:
        return measure(client, *args)
    except RuntimeError as exc:
        print(f"    {client}: FAILED: {exc}", flush=True)
        return None


def median(values) -> float | None:
    """The median of the values that were measured (None if none was)."""
    measured = [v for v in values if v is not None]
    return statistics.median(measured) if measured else None


def medians(rounds: list[dict]) -> dict[str, dict[str, float | None]]:
    return {
        client: {key: median(r[client][key] for r in rounds) for key in rounds[0][client]}
        for client in rounds[0]
    }


COLUMNS = {"msgs_per_s": ("msgs/s", 9, 0), "cpu_us_per_msg": ("CPU us/msg", 11, 0)}
COLUMNS["broker_cpu_us_per_msg"] = ("broker us/msg", 14, 0)
COLUMNS |= {"p50_ms": ("p50 ms", 8, 2), "p99_ms": ("p99 ms", 8, 2)}
COLUMNS["fanout_msgs_per_s"] = ("fan-out/s", 11, 0)


def header() -> str:
    return f"{'broker':<10} {'client':<24}" + "".join(f" {h:>{w}}" for h, w, _ in COLUMNS.values())


def table(label: str, med: dict[str, dict[str, float]]) -> list[str]:
    """Medians per client, each Ether row followed by its ratios to raw paho."""

    def cells(values: dict[str, float], ratio: bool) -> str:
        out = ""
        for key, (_, width, digits) in COLUMNS.items():
            if values.get(key) is None or (ratio and med["raw"].get(key) is None):
                out += f" {'-' if key not in values else 'failed':>{width}}"
            elif ratio:
                out += f" {values[key] / med['raw'][key]:>{width - 1}.2f}x"
            else:
                out += f" {values[key]:>{width}.{digits}f}"
        return out

    rows = []
    for client, m in med.items():
        rows.append(f"{label:<10} {client:<24}" + cells(m, False))
        if client != "raw" and "raw" in med:
            rows.append(f"{label:<10} {'  ratio to raw':<24}" + cells(m, True))
    return rows


def machine() -> dict:
    commit = subprocess.run(
        ["git", "-C", str(HERE), "describe", "--always", "--dirty"], capture_output=True, text=True
    )
    return {
        "commit": commit.stdout.strip(),
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "load_1min_at_start": os.getloadavg()[0],
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--broker", action="append", help="amqtt, mosquitto or a broker URL (repeatable)")
    parser.add_argument(
        "--port", type=int, default=0, help="port of the brokers started here (0: a free one)"
    )
    parser.add_argument("--runs", type=int, default=3, help="rounds; the table shows their medians")
    parser.add_argument("-n", type=int, default=3000, help="messages for the pipeline throughput")
    parser.add_argument("--pings", type=int, default=1000, help="paced messages for the latency")
    parser.add_argument("--rate", type=float, default=1000.0, help="paced messages per second")
    parser.add_argument("--fanout", type=int, default=16, help="subscribers in the fan-out")
    parser.add_argument("--fanout-n", type=int, default=500, help="messages in the fan-out")
    parser.add_argument(
        "--parts", type=lambda s: s.split(","), default=list(PARTS), help=f"a subset of {','.join(PARTS)}"
    )
    parser.add_argument(
        "--clients",
        type=lambda s: s.split(","),
        default=list(CLIENTS),
        help=f"a subset of {','.join(CLIENTS)}, each Ether one also with '-unsigned' (signing off)",
    )
    parser.add_argument("--out", default=f"ether-bench-{time.strftime('%Y%m%d-%H%M%S')}.json")
    args = parser.parse_args()

    report: dict = {"machine": machine(), "settings": vars(args), "brokers": {}}
    lines = [
        f"pipeline source -> relay -> sink, QoS 1, 100 B: {args.n} messages back to back; one-hop latency"
        f" of {args.pings} at {args.rate:g}/s; fan-out of {args.fanout_n} to {args.fanout}; medians of {args.runs}",
        header(),
    ]
    for label, address in brokers(args.broker, args.port):
        print(f"{label} at {address.url}", flush=True)
        rounds = []
        for r in range(args.runs):
            print(f"  round {r + 1}/{args.runs}", flush=True)
            rounds.append(one_round(address, args))
        med = medians(rounds)
        entry: dict = {"rounds": rounds, "median": med}
        if "startup" in args.parts:
            starts = [startup.measure(address.url) for _ in range(args.runs)]
            entry["startup"] = {
                "rounds": starts,
                "median": {k: statistics.median(s[k] for s in starts) for k in starts[0]},
            }
        report["brokers"][label] = entry
        lines += table(label, med)
        if "startup" in entry:
            lines.append(
                f"{label:<10} start-up: "
                + ", ".join(f"{k} {v:.3g}" for k, v in entry["startup"]["median"].items())
            )
    report["machine"]["load_1min_at_end"] = os.getloadavg()[0]
    Path(args.out).write_text(json.dumps(report, indent=1))
    print("\n".join(lines))
    print(
        f"load average {report['machine']['load_1min_at_start']:.1f} -> {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores; written to {args.out}"
    )


if __name__ == "__main__":
    main()
