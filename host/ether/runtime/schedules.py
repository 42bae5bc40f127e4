"""Calling an instance's methods on a schedule (``schedule:`` in its YAML, docs/experiments.md#schedules):
every interval, at the times of a cron line, or as a sequence of trials.

One thread per schedule entry decides when a call is due and hands it to the instance's worker
thread (user code runs there, one call at a time); an interval or cron call still running when the
next is due makes that one skipped, never piled up; a trial starts when the one before has ended. Waiting is on the instance's ``finished`` event, so a schedule
stops the moment the instance does.
"""

from __future__ import annotations

import datetime
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ms|s|m|h|d)")


def parse_duration(value: str | float | int) -> float:
    """Seconds of a duration: a number (seconds) or text such as ``90s``, ``10m``, ``1h30m``, ``500ms``."""
    if isinstance(value, bool):
        raise ValueError(f"duration {value!r}: expected seconds or text such as 10m, 1h30m, 90s")
    if isinstance(value, (int, float)):
        seconds = float(value)
    else:
        text = value.strip().replace(" ", "")
        try:
            seconds = float(text)
        except ValueError:
            parts = _PART.findall(text)
            if not parts or "".join(n + u for n, u in parts) != text:
                raise ValueError(
                    f"duration {value!r}: expected seconds or text such as 10m, 1h30m, 90s, 500ms"
                ) from None
            seconds = sum(float(n) * _UNITS[u] for n, u in parts)
    if not 0 < seconds < float("inf"):
        raise ValueError(f"duration {value!r}: must be more than 0 seconds")
    return seconds


_CRON_FIELDS = (("minute", 0, 59), ("hour", 0, 23), ("day", 1, 31), ("month", 1, 12), ("weekday", 0, 7))


class Cron:
    """A cron line ``minute hour day month weekday`` (local time; ``*``, ``*/n``, ``a-b``, ``a-b/n``,
    lists ``a,b``; weekday 0 or 7 is Sunday). As in cron, when both day and weekday are restricted
    a time matches either."""

    def __init__(self, line: str) -> None:
        fields = line.split()
        if len(fields) != 5:
            raise ValueError(
                f"cron {line!r}: expected 5 fields (minute hour day month weekday), got {len(fields)}"
            )
        self.line = line
        self.sets = [_cron_field(text, *spec, line) for text, spec in zip(fields, _CRON_FIELDS, strict=True)]
        self.sets[4] = {d % 7 for d in self.sets[4]}
        self.day_any, self.weekday_any = fields[2] == "*", fields[4] == "*"

    def _day_matches(self, day: datetime.datetime) -> bool:
        by_day = day.day in self.sets[2]
        by_weekday = (day.isoweekday() % 7) in self.sets[4]
        if self.day_any or self.weekday_any:
            return by_day and by_weekday
        return by_day or by_weekday

    def next_after(self, t: float) -> float:
        """The first matching minute strictly after ``t`` (seconds since the epoch)."""
        when = datetime.datetime.fromtimestamp(t).replace(second=0, microsecond=0) + datetime.timedelta(
            minutes=1
        )
        minutes, hours, _, months, _ = self.sets
        limit = when + datetime.timedelta(days=366 * 5)  # e.g. 29 February on a Monday: rare, not never
        while when < limit:
            if when.month not in months:
                when = (when.replace(day=1) + datetime.timedelta(days=32)).replace(day=1, hour=0, minute=0)
            elif not self._day_matches(when):
                when = (when + datetime.timedelta(days=1)).replace(hour=0, minute=0)
            elif when.hour not in hours:
                when = (when + datetime.timedelta(hours=1)).replace(minute=0)
            elif when.minute not in minutes:
                when += datetime.timedelta(minutes=1)
            else:
                return when.timestamp()
        raise ValueError(f"cron {self.line!r}: matches no time in the next five years")


def _cron_field(text: str, name: str, low: int, high: int, line: str) -> set[int]:
    values: set[int] = set()
    for item in text.split(","):
        spec, _, step_text = item.partition("/")
        try:
            step = int(step_text) if step_text else 1
            if spec == "*":
                first, last = low, high
            elif "-" in spec:
                a, b = spec.split("-", 1)
                first, last = int(a), int(b)
            else:
                first = last = int(spec)
        except ValueError:
            raise ValueError(f"cron {line!r}: {name} {item!r} is not a number, a-b, */n or *") from None
        if step < 1 or not low <= first <= last <= high:
            raise ValueError(f"cron {line!r}: {name} {item!r} is outside {low}-{high}")
        values.update(range(first, last + 1, step))
    return values


@dataclass
class Plan:
    """One entry of ``schedule:``, as the instance process gets it (config/models.ScheduleEntry)."""

    method: str
    args: dict[str, Any] = field(default_factory=dict)
    every: float | None = None
    cron: str | None = None
    after: float = 0.0
    count: int | None = None
    trials: list[dict[str, Any]] | None = None
    repeat: int = 1

    def calls(self) -> list[tuple[dict[str, Any], dict[str, Any]]] | None:
        """A trial sequence's calls in order: (arguments, the trial's metadata); None for the others."""
        if self.trials is None:
            return None
        sequence = []
        for repetition in range(1, self.repeat + 1):
            for index, item in enumerate(self.trials, 1):
                meta = {**item, "sequence_index": index, "repetition": repetition}
                sequence.append(({**self.args, **item}, meta))
        return sequence


Call = Callable[[Plan, dict[str, Any], "dict[str, Any] | None"], None]


class Scheduler:
    """Runs the plans of one instance: ``submit`` queues a job on the worker, ``call`` runs user code."""

    def __init__(
        self,
        plans: list[Plan],
        submit: Callable[[Callable[[], None]], None],
        call: Call,
        finished: threading.Event,
    ) -> None:
        self.plans, self.submit, self.call, self.finished = plans, submit, call, finished

    def start(self) -> None:
        for plan in self.plans:
            threading.Thread(
                target=self._run, args=(plan,), name=f"ether-schedule-{plan.method}", daemon=True
            ).start()

    def _run(self, plan: Plan) -> None:
        cron = Cron(plan.cron) if plan.cron else None
        sequence = plan.calls()
        total = len(sequence) if sequence is not None else plan.count
        due = time.time() + plan.after
        pending: threading.Event | None = None  # the last call of an interval or cron plan
        made = 0
        while total is None or made < total:
            if cron is not None:
                due = cron.next_after(time.time())
            if self.finished.wait(max(0.0, due - time.time())):
                return
            if sequence is not None:  # trials never overlap: the next waits for this one
                self._queue(plan, *sequence[made]).wait()
                made += 1
            elif pending is None or pending.is_set():  # else the last call still runs: skip this one
                pending = self._queue(plan, plan.args, None)
                made += 1
            due = max(due + plan.every, time.time()) if plan.every else time.time()

    def _queue(self, plan: Plan, kwargs: dict[str, Any], meta: dict[str, Any] | None) -> threading.Event:
        """Hand one call to the worker; the event is set when it has run."""
        done = threading.Event()

        def job() -> None:
            try:
                self.call(plan, kwargs, meta)
            finally:
                done.set()

        self.submit(job)
        return done
