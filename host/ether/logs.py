"""Logging setup, the same for every Ether process (script, session, instance, recorder, broker, bridge).

``ETHER_LOG_LEVEL`` (DEBUG, INFO, WARNING, ...) sets the level of every Ether process of a session
(children inherit it); each also publishes its lines for the session store (``transport/log_publishing``).
"""

from __future__ import annotations

import logging
import os
import re
import threading
import time

FORMAT = "%(asctime)s.%(msecs)03d - Ether:%(process)d - %(levelname)s - %(message)s"
DATE_FORMAT = "%Y-%m-%d %H:%M:%S"
LEVEL_VARIABLE = "ETHER_LOG_LEVEL"
COLLAPSE_WINDOW = 10.0  # seconds in which repeats of one log line are counted instead of shown


def default_level(fallback: int = logging.INFO) -> int:
    """The level ``ETHER_LOG_LEVEL`` names, else ``fallback``; a name logging does not know is an error."""
    name = os.environ.get(LEVEL_VARIABLE, "").strip().upper()
    if not name:
        return fallback
    level = logging.getLevelName(name)
    if not isinstance(level, int):
        raise ValueError(
            f"{LEVEL_VARIABLE}={name!r}: not a log level (DEBUG, INFO, WARNING, ERROR, CRITICAL)"
        )
    return level


def setup_logging(level: int | None = None, *, whole_process: bool = False, collapse: bool = False) -> None:
    """Log lines on stderr, once per process. In a user's script only Ether's own loggers are set up;
    a process Ether owns (``whole_process``: instance, recorder, broker) shows its libraries' too.
    ``collapse``: repeats of one line (a library's traceback in a loop) become a count (:class:`Collapse`)."""
    logger = logging.getLogger() if whole_process else logging.getLogger("ether")
    if logger.handlers:
        return
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter(FORMAT, DATE_FORMAT))
    if collapse:
        collapse_repeats(handler)
    logger.addHandler(handler)
    logger.setLevel(default_level(logging.INFO if level is None else level))
    logger.propagate = whole_process


_DIGITS = re.compile(r"0x[0-9a-fA-F]+|\d+")  # numbers and addresses


class Collapse(logging.Filter):
    """Shows a line, then counts its repeats (same logger, level, exception type, and text but for its
    numbers: packet ids, addresses) for ``window`` seconds; :meth:`expired` then gives one line
    saying how many there were (``collapse_repeats`` sends it on)."""

    def __init__(self, window: float = COLLAPSE_WINDOW) -> None:
        super().__init__()
        self.window = window
        self._seen: dict[tuple, list] = {}  # key -> [when shown, repeats since, the line shown]
        self._lock = threading.Lock()

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "ether_repeats", None) is not None:  # our own count of repeats
            return True
        exc = record.exc_info[0].__name__ if record.exc_info and record.exc_info[0] else None
        key = (record.name, record.levelno, _DIGITS.sub("#", record.getMessage()), exc)
        with self._lock:
            seen = self._seen.get(key)
            if seen is not None:
                seen[1] += 1
                return False
            self._seen[key] = [time.monotonic(), 0, record]
        return True

    def expired(self, now: float | None = None) -> list[logging.LogRecord]:
        """Forget the lines whose window is over; a line for each that was repeated, with the count."""
        now = time.monotonic() if now is None else now
        with self._lock:
            over = [k for k, (shown, _, _) in self._seen.items() if now - shown >= self.window]
            ended = [self._seen.pop(k) for k in over]
        counts = []
        for _, repeats, first in ended:
            if repeats:
                text = f"[{repeats} more like this in {self.window:g} s] {first.getMessage()}"
                counts.append(
                    logging.makeLogRecord(
                        {**first.__dict__, "msg": text, "args": None, "exc_info": None, "exc_text": None}
                        | {"created": time.time(), "ether_repeats": repeats}
                    )
                )
        return counts


def collapse_repeats(handler: logging.Handler, window: float = COLLAPSE_WINDOW) -> None:
    """Collapse the repeats ``handler`` gets (:class:`Collapse`); a thread sends on their counts."""
    collapse = Collapse(window)
    handler.addFilter(collapse)

    def send_counts() -> None:
        while True:
            time.sleep(min(1.0, window))  # a clock, not a wait for anything
            for count in collapse.expired():
                handler.handle(count)

    threading.Thread(target=send_counts, name="ether-log-repeats", daemon=True).start()


ERROR_RATE, ERROR_BURST = 50.0, 1000  # error events a process sends a second, and at once
ERROR_LIMIT_VARIABLE = "ETHER_ERROR_LIMIT"  # RATE/BURST instead


def error_event_limit() -> RateLimit:
    """The rate limit of one process's error events (an instance's, the recorder's)."""
    return limit_from(ERROR_LIMIT_VARIABLE, ERROR_RATE, ERROR_BURST)


def limit_from(variable: str, rate: float, burst: int) -> RateLimit:
    """The rate limit an environment variable sets as ``RATE/BURST`` (``50/1000``), else the default."""
    text = os.environ.get(variable, "").strip()
    if not text:
        return RateLimit(rate, burst)
    try:
        given_rate, given_burst = text.split("/")
        limit = RateLimit(float(given_rate), int(given_burst))
    except ValueError:
        raise ValueError(f"{variable}={text!r}: give RATE/BURST, e.g. {rate:g}/{burst}") from None
    if not (limit.rate > 0 and limit.burst >= 1):
        raise ValueError(f"{variable}={text!r}: the rate must be above 0 and the burst at least 1")
    return limit


class RateLimit:
    """A token bucket: ``rate`` per second on average, bursts of ``burst``; what it refuses is counted."""

    def __init__(self, rate: float, burst: int) -> None:
        self.rate, self.burst = rate, burst
        self._tokens = float(burst)
        self._at = time.monotonic()
        self.refused = 0  # since the last take_refused()
        self._lock = threading.Lock()

    def allow(self) -> bool:
        with self._lock:
            now = time.monotonic()
            self._tokens = min(self.burst, self._tokens + (now - self._at) * self.rate)
            self._at = now
            if self._tokens >= 1:
                self._tokens -= 1
                return True
            self.refused += 1
            return False

    def refuse(self, count: int = 1) -> None:
        """Count ``count`` more as refused (lost further on)."""
        with self._lock:
            self.refused += count

    def take_refused(self) -> int:
        """How many were refused since the last call (and start counting again)."""
        with self._lock:
            refused, self.refused = self.refused, 0
            return refused
