"""``ether logs``: the log lines of a recorded (or running) session, filtered, optionally followed.

The lines are the store's ``logs`` table (docs/data.md#logs): every process of the session publishes
its own (``transport/log_publishing``) and the recorder keeps them.
"""

from __future__ import annotations

import re
import sys
import time
from datetime import datetime
from typing import Any

from ether.data.recorded import find_session
from ether.data.recorder.store import RUNNING, StoreError, connect, log_sources, read_logs, read_manifest

FOLLOW_POLL = 0.5  # seconds between two looks at a running session's store (like tail -f)
_DURATION = re.compile(r"^(\d+(?:\.\d+)?)([smhd]?)$")
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_since(text: str, now: float | None = None) -> float:
    """``90s``, ``5m``, ``2h``, ``1d`` (ago), or a date and time (``2026-12-03T18:40``, ``18:40``: today,
    local time), as seconds since the epoch."""
    now = time.time() if now is None else now
    found = _DURATION.match(text.strip())
    if found:
        return now - float(found.group(1)) * _UNITS[found.group(2)]
    try:
        if re.fullmatch(r"\d{1,2}:\d{2}(:\d{2}(\.\d+)?)?", text.strip()):
            text = f"{datetime.fromtimestamp(now).date().isoformat()}T{text.strip()}"
        return datetime.fromisoformat(text.strip()).timestamp()
    except ValueError:
        raise ValueError(
            f"--since {text!r}: give a time ago (90s, 5m, 2h, 1d) or a date and time (2026-12-03T18:40, 18:40)"
        ) from None


def format_line(line: dict[str, Any]) -> str:
    """One log line as ``ether logs`` prints it; the rest of a message of several lines, and a
    traceback, follow indented."""
    when = datetime.fromtimestamp(line["t"]).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]
    first, *more = line["message"].rstrip("\n").split("\n")
    more += line["traceback"].rstrip("\n").split("\n") if line.get("traceback") else []
    text = f"{when} {line['src']}[{line['pid']}] {line['level']} {line['logger']}: {first}"
    return "\n".join([text, *("    " + m for m in more)])


def cmd_logs(args) -> int:
    try:
        since = parse_since(args.since) if args.since else None
        path = find_session(args.session, args.data)
        db = connect(path, readonly=True)
    except (ValueError, StoreError) as exc:
        print(f"ether: {exc}", file=sys.stderr)
        return 1
    if args.instance and not args.follow:
        known = log_sources(db)
        if args.instance not in known:
            print(
                f"ether: no log lines of '{args.instance}' in {path.name}; of: {', '.join(known) or 'none'}",
                file=sys.stderr,
            )
            db.close()
            return 1
    after = 0
    try:
        while True:
            running = read_manifest(db).get("status") == RUNNING  # before reading: no line is missed
            lines = read_logs(db, args.instance, args.level, since, after)
            for line in lines:
                print(format_line(line), flush=args.follow)
            after = max([after, *(line["rowid"] for line in lines)])
            if not (args.follow and running):
                return 0
            time.sleep(FOLLOW_POLL)
    except KeyboardInterrupt:
        return 0
    finally:
        db.close()
