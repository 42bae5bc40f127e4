"""Benchmark: reading a big session back -- lineage of a long chain, replay's comparison, records.

Builds a real session store of N messages (a chain: each message the parent of the next, so the
newest descends from all of them), then times ``ether lineage``'s walk, the replay comparison
(``derived`` on the recorded store) and ``records`` of one topic. Usage: ``python bench/analysis.py [-n 100000]``.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from ether.data.recorded import RecordedSession, lineage
from ether.data.recorder.store import Row, Store, read_manifest
from ether.data.replay import derived


def chain_store(folder: Path, n: int) -> Path:
    """A store holding one chain of n messages on topic 'step' (message i's parent is i - 1)."""
    store = Store(folder)
    store.set_manifest(status="complete")
    rows = [
        Row("step", f'{{"i": {i}}}', f"b.{i}", "src", "b", i, [f"b.{i - 1}"] if i > 1 else [], 0.0, 0.0)
        for i in range(1, n + 1)
    ]
    with store.transaction():
        store.insert(rows)
    store.close()
    return folder


def timed(action) -> float:
    start = time.perf_counter()
    action()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("-n", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    folder = chain_store(Path(tempfile.mkdtemp()) / "run", args.n)
    session = RecordedSession(folder)
    manifest = read_manifest(session.db)
    results = {
        "lineage of the last message": lambda: lineage(session.db, manifest, f"b.{args.n}"),
        "replay comparison (derived)": lambda: derived(session.db),
        "records of the topic": lambda: session.records("step"),
    }
    print(f"{args.n} messages in one chain, median of {args.runs} runs")
    for name, action in results.items():
        seconds = statistics.median(timed(action) for _ in range(args.runs))
        print(f"  {name:<30} {seconds:6.2f} s")
    session.close()


if __name__ == "__main__":
    main()
