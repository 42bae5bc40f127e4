"""A process's log lines, published on its log topic (``log/<source>``, QoS 1) for the recorder's
``logs`` table (docs/data.md#logs).

Logging never waits for the network: a line is put in a bounded queue and one thread publishes it.
Lines beyond the rate limit (or a full queue) are counted, and the count goes out as one
"N log lines dropped" record as soon as the limit allows. Lines logged while publishing are not
published (no feedback loop).
"""

from __future__ import annotations

import io
import logging
import os
import queue
import socket
import threading
import time
from typing import NamedTuple, TextIO

from ether.contract.messages import LOG_MESSAGE_LIMIT, LogRecord
from ether.contract.wire import encode
from ether.logs import RateLimit, default_level
from ether.transport.bus import Bus

RATE = 100.0  # lines per second a process publishes on average
BURST = 200  # and at once (each shares the bus with data: a burst delays it by at most that many messages)
QUEUE = 2000  # lines waiting for the publishing thread at most
CLOSE_TIMEOUT = 2.0  # seconds close() gives the thread to send what is queued


class _Line(NamedTuple):
    t: float
    level: str
    logger: str
    message: str
    traceback: str | None
    dropped: int | None = None


class LogPublisher(logging.Handler):
    """A logging handler that publishes each record through ``bus`` on ``topic``."""

    def __init__(self, bus: Bus, topic: str, rate: float = RATE, burst: int = BURST) -> None:
        super().__init__(default_level())
        self.bus, self.topic = bus, topic
        self.limit = RateLimit(rate, burst)
        self.lines: queue.Queue[_Line | None] = queue.Queue(QUEUE)
        self._formatter = logging.Formatter()
        self._host, self._pid = socket.gethostname(), os.getpid()
        self._thread = threading.Thread(target=self._publish_all, name="ether-log-publisher", daemon=True)
        self._thread.start()

    def emit(self, record: logging.LogRecord) -> None:
        if threading.current_thread() is self._thread:
            return
        if not self.limit.allow():
            return
        self._dropped_so_far()
        try:
            self.lines.put_nowait(self._line(record))
        except queue.Full:
            self.limit.refuse()
        except Exception:  # a record that cannot be formatted: logging's own way of saying so
            self.handleError(record)

    def _line(self, record: logging.LogRecord) -> _Line:
        """What must be read now (the message, the traceback); the rest waits for the thread."""
        trace = self._formatter.formatException(record.exc_info) if record.exc_info else None
        if record.stack_info:
            trace = f"{trace or ''}{record.stack_info}"
        return _Line(record.created, record.levelname, record.name, record.getMessage(), trace)

    def _record(self, line: _Line) -> LogRecord:
        return LogRecord(
            t=line.t,
            level=line.level[:16],
            logger=line.logger[:128],
            message=_clip(line.message, LOG_MESSAGE_LIMIT),
            pid=self._pid,
            host=self._host[:128],
            traceback=_clip(line.traceback, 4 * LOG_MESSAGE_LIMIT) if line.traceback else None,
            dropped=line.dropped,
        )

    def _dropped_so_far(self) -> None:
        """Queue the count of lines dropped since the last count, if any."""
        dropped = self.limit.take_refused()
        if not dropped:
            return
        message = f"{dropped} log lines dropped (more than {self.limit.rate:g} a second)"
        line = _Line(time.time(), "WARNING", "ether.logs", message, None, dropped)
        try:
            self.lines.put_nowait(line)
        except queue.Full:
            self.limit.refuse(dropped)

    def _count_dropped(self) -> None:
        """:meth:`_dropped_so_far` from outside ``emit`` (which holds the handler's lock)."""
        self.acquire()
        try:
            self._dropped_so_far()
        finally:
            self.release()

    def _publish_all(self) -> None:
        while True:
            try:
                line = self.lines.get(timeout=1.0)
            except queue.Empty:  # quiet: say what was dropped in the burst before
                self._count_dropped()
                continue
            if line is None:
                return
            try:
                self.bus.publish(self.topic, encode(self._record(line).payload()))
            except Exception:  # never log from here: count it
                self.limit.refuse()

    def close(self) -> None:
        """Send what is queued (and the count of what was dropped), at most CLOSE_TIMEOUT seconds."""
        self._count_dropped()
        try:
            self.lines.put(None, timeout=CLOSE_TIMEOUT)
        except queue.Full:
            pass
        self._thread.join(CLOSE_TIMEOUT)
        super().close()


class PrintedLines(io.TextIOBase):
    """An instance's stdout: what user code prints goes on to the terminal as before, and each line
    is also published like a log line (logger ``print``, INFO)."""

    def __init__(self, stream: TextIO, publisher: LogPublisher) -> None:
        self.stream, self.publisher = stream, publisher
        self._partial = ""
        self._lock = threading.Lock()

    def write(self, text: str) -> int:
        written = self.stream.write(text)
        with self._lock:
            *lines, self._partial = (self._partial + text).split("\n")
            if len(self._partial) > LOG_MESSAGE_LIMIT:  # printed without an end of line, at length
                lines.append(self._partial)
                self._partial = ""
        if self.publisher.level <= logging.INFO:
            for line in lines:
                self.publisher.handle(logging.LogRecord("print", logging.INFO, "", 0, line, None, None))
        return written

    def flush(self) -> None:
        self.stream.flush()

    def fileno(self) -> int:
        return self.stream.fileno()

    def isatty(self) -> bool:
        return self.stream.isatty()

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return self.stream.encoding

    def __getattr__(self, name: str):  # buffer, reconfigure, ...: the terminal's own
        return getattr(self.stream, name)


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 20] + " ... (clipped)"


def publish_logs(
    bus: Bus, topic: str, logger: logging.Logger | None = None, rate: float = RATE, burst: int = BURST
) -> LogPublisher:
    """Publish the lines of ``logger`` (the root logger: the whole process) on ``topic`` from now on;
    ``stop_publishing_logs`` before the bus closes."""
    handler = LogPublisher(bus, topic, rate, burst)
    (logger or logging.getLogger()).addHandler(handler)
    return handler


def stop_publishing_logs(handler: LogPublisher, logger: logging.Logger | None = None) -> None:
    (logger or logging.getLogger()).removeHandler(handler)
    handler.close()
