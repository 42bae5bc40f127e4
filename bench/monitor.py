"""Benchmark: what does `ether monitor` cost while a session carries 2000 messages/s?

One run, per broker (embedded amqtt, and Mosquitto when installed): a recorded session, `ether monitor`
attached in its own process on a pseudo-terminal (120x40, a topic selected and one field plotted, as a
user would leave it), then the monitor's CPU over a window:

  idle        the session runs, nothing is published
  N msg/s     a publisher sends N data messages/s (QoS 1, Ether metadata, signed as a host source is,
              4 topics) that the recorder saves and acknowledges; a plain subscriber counts what the
              broker really delivered

CPU is the time the monitor's threads ran over the window (/proc/<pid>/task/*/schedstat), in % of one core;
"key to screen" is the median time from typing `m` until the monitor has written the publish dialog's
title (5 tries), with the median CPU time the monitor used meanwhile (all its threads: what the key
cost, and under load what the messages cost in the same time; on a loaded machine the time is mostly
waiting for a CPU, the CPU is not); the keys "after the burst" are typed one after the other for 5 s from the
moment the publisher stops: the first, and the worst of them (a screen still busy with the burst, or
stalled, shows here).

With --baseline DIR a second monitor, from another source tree, is attached beside this one: both are
measured over the same windows (their keys in turn), so their ratio holds on a loaded machine.

Run: python bench/monitor.py [--rate 2000] [--seconds 10] [--broker amqtt] [--baseline DIR]
"""

from __future__ import annotations

import argparse
import fcntl
import os
import pty
import struct
import subprocess
import sys
import tempfile
import termios
import threading
import time
from pathlib import Path

import pyte
from brokers import brokers, close, paho_client, subscribe

from ether.contract.wire import Stamper, encode
from ether.runtime.session import new_session
from ether.transport.signing import sign

TOPICS = ("bench/a", "bench/b", "bench/c", "bench/d")
AFTER_BURST = 5.0  # s of keys typed after the publisher stops: a stall shows as the worst of them


def cpu_seconds(pid: int) -> float:
    """The CPU time of the process's threads (their schedstat: nanoseconds, where /proc/<pid>/stat counts
    10 ms ticks, too coarse for one key)."""
    tasks = Path(f"/proc/{pid}/task").glob("*/schedstat")
    return sum(int(task.read_text().split()[0]) for task in tasks) / 1e9


class Terminal:
    """`ether monitor` on a pseudo-terminal. A key's time is until its text is in what the monitor wrote;
    whether a text is still on the screen is asked of a terminal emulator (pyte), fed only then."""

    def __init__(
        self,
        url: str,
        columns: int = 120,
        lines: int = 40,
        options: tuple[str, ...] = (),
        env: dict | None = None,
    ) -> None:
        self.master, slave = pty.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", lines, columns, 0, 0))
        self.process = subprocess.Popen(
            [sys.executable, "-m", "ether", "monitor", "--broker", url, *options],
            stdin=slave,
            stdout=slave,
            stderr=slave,
            env={**os.environ, **(env or {}), "TERM": "xterm-256color"},
            start_new_session=True,
        )
        os.close(slave)
        self.written = b""  # what the monitor wrote since the last key (only its tail is searched)
        self.unfed = bytearray()  # what the emulator has not seen yet
        self.screen = pyte.Screen(columns, lines)
        self.stream = pyte.ByteStream(self.screen)
        self.changed = threading.Condition()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        while True:
            try:
                data = os.read(self.master, 65536)
            except OSError:
                return
            if not data:
                return
            with self.changed:
                self.written = (self.written + data)[-200_000:]
                self.unfed += data
                self.changed.notify_all()

    def _on_screen(self, text: str) -> bool:
        self.stream.feed(bytes(self.unfed))
        self.unfed.clear()
        return any(text in line for line in self.screen.display)

    def wait_for(self, text: str, timeout: float = 30.0) -> None:
        """Until the monitor has written ``text``."""
        with self.changed:
            if not self.changed.wait_for(lambda: text.encode() in self.written, timeout):
                raise RuntimeError(f"the monitor never showed {text!r}")

    def wait_gone(self, text: str, timeout: float = 30.0) -> None:
        """Until ``text`` is no longer on the screen."""
        with self.changed:
            if not self.changed.wait_for(lambda: not self._on_screen(text), timeout):
                raise RuntimeError(f"the monitor kept showing {text!r}")

    def keys(self, keys: str) -> None:
        with self.changed:
            self.written = b""
        os.write(self.master, keys.encode())

    def response(self, keys: str, shows: str, undo: str) -> tuple[float, float]:
        """Seconds from typing ``keys`` until the monitor draws ``shows``, and the CPU seconds the monitor
        used meanwhile (then ``undo``, until it is gone: an Esc typed right before the next key would
        arrive as Alt+key)."""
        cpu, start = cpu_seconds(self.process.pid), time.perf_counter()
        self.keys(keys)
        self.wait_for(shows)
        took, used = time.perf_counter() - start, cpu_seconds(self.process.pid) - cpu
        self.keys(undo)
        self.wait_gone(shows)
        return took, used

    def close(self) -> None:
        self.keys("q")  # attached: q detaches
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        os.close(self.master)


def publish(url_address, key: bytes, rate: int, stop: threading.Event, sent: list[int]) -> None:
    """Send ``rate`` messages/s in 10 ms slices until ``stop``, signed as a host source is (else the
    recorder reports every one as an unverified source); counts what it sent."""
    client = paho_client(url_address)
    stamper = Stamper("bench-source")
    start, n = time.perf_counter(), 0
    while not stop.is_set():
        due = int((time.perf_counter() - start) * rate)
        while n < due:
            meta = stamper.stamp()
            body = {"value": (n % 100) / 10, "n": n}
            client.publish(TOPICS[n % len(TOPICS)], sign(encode(body, meta), key), qos=1)
            n += 1
        stop.wait(0.01)
    sent.append(n)
    close(client)


def measure(monitors: list[Terminal], seconds: float) -> list[float]:
    """Each monitor's CPU over the same window, in % of one core."""
    pids = [m.process.pid for m in monitors]
    cpu, wall = [cpu_seconds(pid) for pid in pids], time.perf_counter()
    time.sleep(seconds)  # the measuring window
    took = time.perf_counter() - wall
    return [100 * (cpu_seconds(pid) - before) / took for pid, before in zip(pids, cpu, strict=True)]


def key_median(monitor: Terminal, tries: int = 5) -> tuple[float, float]:
    """The median time from key to screen, and the median CPU the monitor used meanwhile."""
    answers = [monitor.response("m", "Publish a message", "\x1b") for _ in range(tries)]
    return tuple(sorted(a[i] for a in answers)[tries // 2] for i in (0, 1))  # type: ignore[return-value]


def _ms(took: float, used: float) -> str:
    return f"{1000 * took:.0f} ms (CPU {1000 * used:.0f} ms)"


def run(label: str, address, rate: int, seconds: float, monitors: dict[str, dict]) -> list[tuple[str, ...]]:
    """``monitors``: name -> {"options": ..., "env": ...} of each monitor attached side by side."""
    data = tempfile.mkdtemp()
    session = new_session({"recorder": {"path": data}, "instances": {}}, broker_url=address.url)
    session.open()
    counter = paho_client(address)
    delivered = [0]
    counter.on_message = lambda *a: delivered.__setitem__(0, delivered[0] + 1)
    subscribe(counter, "bench/#")
    shown = {name: Terminal(address.url, **how) for name, how in monitors.items()}
    rows = []
    try:
        for monitor in shown.values():
            monitor.wait_for("Instances")
        cpus = measure(list(shown.values()), seconds)
        for (name, monitor), cpu in zip(shown.items(), cpus, strict=True):
            key, used = key_median(monitor)
            rows.append((label, name, "idle", "0", f"{cpu:.1f} %", _ms(key, used), ""))

        stop, sent = threading.Event(), []
        assert session.key is not None  # open() made it
        key = session.key.signing_key(session.topics.session, "bench-source")
        source = threading.Thread(target=publish, args=(address, key, rate, stop, sent))
        source.start()
        for monitor in shown.values():
            monitor.wait_for("bench/a")
            monitor.keys("\t\t")  # to the topics table: its first topic's last message is shown
            monitor.wait_for("Last message on 'bench/a'")
            monitor.keys("f")  # plot a field of it
            monitor.wait_for("Plot a field")
            monitor.keys("\r")
        time.sleep(1.0)  # let the plot fill and the rates settle before measuring
        before, wall = delivered[0], time.perf_counter()
        cpus = measure(list(shown.values()), seconds)
        got = (delivered[0] - before) / (time.perf_counter() - wall)
        keys = [key_median(monitor) for monitor in shown.values()]  # in turn, under the same load
        stop.set()
        source.join()
        after: dict[str, list[tuple[float, float]]] = {name: [] for name in shown}
        until = time.perf_counter() + AFTER_BURST
        while time.perf_counter() < until:  # keys in turn, as long as the screen may still be busy
            for name, monitor in shown.items():
                after[name].append(monitor.response("m", "Publish a message", "\x1b"))
        for name, cpu, k in zip(shown, cpus, keys, strict=True):
            first, worst = after[name][0], max(after[name])
            rows.append(
                (
                    label,
                    name,
                    f"{rate} msg/s",
                    f"{got:.0f}",
                    f"{cpu:.1f} %",
                    _ms(*k),
                    f"{_ms(*first)} · worst of {len(after[name])}: {1000 * worst[0]:.0f} ms",
                )
            )
    finally:
        for monitor in shown.values():
            monitor.close()
        close(counter)
        session.close()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rate", type=int, default=2000, help="messages/s to publish (default 2000)")
    parser.add_argument("--seconds", type=float, default=10.0, help="measuring window (default 10 s)")
    parser.add_argument("--broker", action="append", help="amqtt, mosquitto or a URL (default: both)")
    parser.add_argument(
        "--monitor-option", action="append", default=[], help="passed to `ether monitor` (e.g. --data-qos=1)"
    )
    parser.add_argument(
        "--baseline",
        help="a source tree (with host/ and lite/, e.g. `git archive <commit> host lite | tar -x -C DIR`) "
        "whose monitor runs beside this one, measured in the same windows",
    )
    parser.add_argument(
        "--baseline-option", action="append", default=[], help="passed to the baseline monitor"
    )
    args = parser.parse_args()
    monitors: dict[str, dict] = {"this": {"options": tuple(args.monitor_option)}}
    if args.baseline:
        tree = Path(args.baseline).resolve()
        path = f"{tree / 'host'}{os.pathsep}{tree / 'lite'}"
        monitors["baseline"] = {"options": tuple(args.baseline_option), "env": {"PYTHONPATH": path}}
    print(f"load before: {os.getloadavg()[0]:.1f}")
    rows = [
        (
            "broker",
            "monitor",
            "traffic",
            "delivered msg/s",
            "monitor CPU (% of a core)",
            "key to screen (median)",
            f"keys in the {AFTER_BURST:g} s after the burst: first · worst",
        )
    ]
    for label, address in brokers(args.broker):
        rows += run(label, address, args.rate, args.seconds, monitors)
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)))
    print(f"load after: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
