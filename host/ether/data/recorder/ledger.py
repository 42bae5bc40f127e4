"""Sequence bookkeeping per (source, boot): what is saved, what is missing, what to acknowledge.

Every data message carries a gap-free ``seq`` per (src, boot). A seq that jumps ahead opens a gap;
a resend that arrives later fills it. The acknowledgement of a stream is its highest contiguous seq:
everything up to it is on disk, so the publisher may forget it.

A number far ahead of what a source can have sent since it was last heard of is not a gap but a lie
(or a bug): :meth:`Stream.implausible` says so, and the recorder refuses it instead of recording a
phantom loss of ~10^9 messages.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

SKIPPED, TAIL = "skipped", "tail"
MAX_RATE = 1_000_000  # messages per second one source can send: 10x what one broker carries
JUMP_SLACK = 100_000  # numbers a source may skip at once, whatever the time since it was last heard of


@dataclass
class Gap:
    first: int
    last: int
    detected_at: float
    cause: str = SKIPPED

    @property
    def size(self) -> int:
        return self.last - self.first + 1


@dataclass
class Stream:
    """One (src, boot): the highest seq seen and the ranges below it that are still missing."""

    src: str
    boot: str
    max_seq: int = 0
    gaps: list[Gap] = field(default_factory=list)
    first_seen: float = field(default_factory=time.time)
    last_seen: float = 0.0

    @property
    def contiguous(self) -> int:
        return self.gaps[0].first - 1 if self.gaps else self.max_seq

    def add(self, seq: int, now: float) -> tuple[bool, list[Gap], list[Gap]]:
        """Account for one seq. Returns (is_new, gaps opened, gaps filled or shrunk)."""
        self.last_seen = now
        if seq > self.max_seq:
            opened = []
            if seq > self.max_seq + 1:
                gap = Gap(self.max_seq + 1, seq - 1, now)
                self.gaps.append(gap)
                opened.append(gap)
            self.max_seq = seq
            return True, opened, []
        for i, gap in enumerate(self.gaps):
            if gap.first <= seq <= gap.last:
                pieces = [
                    Gap(a, b, gap.detected_at, gap.cause)
                    for a, b in ((gap.first, seq - 1), (seq + 1, gap.last))
                    if a <= b
                ]
                self.gaps[i : i + 1] = pieces
                return True, [], [gap]
        return False, [], []  # a resend of something already saved

    def implausible(self, seq: int, now: float, since: float | None = None) -> str | None:
        """Why ``seq`` cannot be this stream's next number (None if it can): it is further ahead of the
        highest one seen than the source can have sent since it was last heard of. A stream not heard
        of yet is bounded only from ``since`` (a board may have numbered readings before the session)."""
        last_seen = self.last_seen if self.max_seq else since
        if last_seen is None:
            return None
        ahead, elapsed = seq - self.max_seq, max(0.0, now - last_seen)
        if ahead <= JUMP_SLACK + MAX_RATE * elapsed:
            return None
        return (
            f"seq {seq} is {ahead} ahead of the highest seen ({self.max_seq}) {elapsed:.1f} s after it:"
            f" more than {JUMP_SLACK} + {MAX_RATE}/s could have been sent"
        )

    def expect_until(self, last_seq: int, now: float) -> Gap | None:
        """The source says it sent up to ``last_seq``: anything after what we saw is lost at the tail."""
        if last_seq <= self.max_seq:
            return None
        gap = Gap(self.max_seq + 1, last_seq, now, TAIL)
        self.gaps.append(gap)
        self.max_seq = last_seq
        return gap


class Ledger:
    """All streams of a session, keyed by (src, boot)."""

    def __init__(self) -> None:
        self.streams: dict[tuple[str, str], Stream] = {}

    def stream(self, src: str, boot: str, now: float) -> tuple[Stream, bool]:
        key = (src, boot)
        known = key in self.streams
        if not known:
            self.streams[key] = Stream(src, boot, first_seen=now, last_seen=now)
        return self.streams[key], not known

    def boots_of(self, src: str) -> list[str]:
        return [b for s, b in self.streams if s == src]
