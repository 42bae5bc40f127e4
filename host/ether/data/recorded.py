"""Using recorded sessions: list them, open one as pandas DataFrames, export it, trace a result's lineage.

Reads the session store (``ether.recorder.store``, docs/data.md) and never writes to it.
"""

from __future__ import annotations

import base64
import csv
import importlib
import json
import os
import sqlite3
import sys
import time
from pathlib import Path
from typing import Any

from ether.contract.blocks import Block, Blocks, join
from ether.data.clock import CommonClock
from ether.data.recorder import journal
from ether.data.recorder.settings import RecorderSettings
from ether.data.recorder.store import (
    FAILED,
    RUNNING,
    STORE_FILE,
    StoreError,
    conflicts,
    connect,
    find_stores,
    open_gaps,
    payload_of,
    read_logs,
    read_manifest,
    summary,
)
from ether.data.structure import ENTRY_COLUMNS, MARKER_COLUMNS, Structure, read_structure

META_COLUMNS = ("msg_id", "src", "boot", "seq", "parents", "t_sent", "t_recorded")
META_PREFIX = "_ether."  # metadata columns are named like the wire's reserved key: never a payload field
ANALYSIS_EXTRA = "pip install 'ether-lab[analysis]'"


def data_root(root: str | os.PathLike | None = None) -> Path:
    return Path(root).resolve() if root else RecorderSettings().root


def find_session(name: str | os.PathLike, root: str | os.PathLike | None = None) -> Path:
    """A run folder from its path, its run id (or a unique prefix/suffix of it), or ``last``."""
    path = Path(name)
    if (path / STORE_FILE).exists():
        return path
    if path.name == STORE_FILE and path.exists():
        return path.parent
    stores = [p.parent for p in find_stores(data_root(root))]
    if str(name) == "last" and stores:
        return next((p for p in reversed(stores) if not _skipped_by_last(p)), stores[-1])
    hits = [p for p in stores if p.name.startswith(str(name)) or p.name.endswith(str(name))]
    if len(hits) == 1:
        return hits[0]
    where = data_root(root)
    if not hits:
        raise StoreError(f"no session '{name}' in {where} (see `ether sessions`)")
    raise StoreError(f"'{name}' matches {len(hits)} sessions in {where}: {', '.join(h.name for h in hits)}")


def _skipped_by_last(path: Path) -> bool:
    """A run that joined another's recorder (its data is there) or that failed to start (it has none)."""
    try:
        db = connect(path, readonly=True)
    except StoreError:
        return False
    try:
        joined = db.execute("SELECT 1 FROM manifest WHERE key = 'recorded_by'").fetchone() is not None
        return joined or read_manifest(db).get("status") == FAILED
    except sqlite3.Error:
        return False
    finally:
        db.close()


class RecordedSession:
    """One recorded session: ``session['topic']`` is a DataFrame of that topic's messages."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = find_session(path)
        journal.merge_ended(self.path)  # what a session recorded when its recorder could not
        self.db = connect(self.path, readonly=True)
        self.manifest = read_manifest(self.db)

    @property
    def topics(self) -> list[str]:
        return [r[0] for r in self.db.execute("SELECT DISTINCT topic FROM messages ORDER BY topic")]

    @property
    def gaps(self) -> list[dict[str, Any]]:
        return open_gaps(self.db)

    @property
    def conflicts(self) -> list[dict[str, Any]]:
        """Messages that share (src, boot, seq) with a saved one but not its content (docs/data.md)."""
        return conflicts(self.db)

    @property
    def logs(self) -> list[dict[str, Any]]:
        """Every process's log lines in the order logged: t, src, level, logger, message, traceback, ...
        (docs/data.md#logs; ``pandas.DataFrame(session.logs)`` for a table)."""
        return read_logs(self.db)

    @property
    def unprocessed(self) -> list[dict[str, Any]]:
        """Per instance, what it never processed, as its session sealed: ``instance``, ``durable`` and
        ``latest`` counts and ``ranges`` ``{src: {boot: [[first, last], ...]}}`` (docs/data.md)."""
        last: dict[str, dict[str, Any]] = {}
        for src, detail in self.db.execute(
            "SELECT src, detail FROM events WHERE kind = 'unprocessed' ORDER BY rowid"
        ):
            last[src] = {"instance": src, **json.loads(detail)}
        return list(last.values())

    @property
    def events(self) -> list[dict[str, Any]]:
        return [
            {**dict(r), "detail": json.loads(r["detail"])}
            for r in self.db.execute("SELECT * FROM events ORDER BY rowid")
        ]

    def records(
        self, topic: str, start: float | None = None, stop: float | None = None
    ) -> list[dict[str, Any]]:
        """Each message as a dict: its fields as sent, then the metadata as ``_ether.<column>``;
        with ``start``/``stop`` only those recorded in [start, stop] (the recorder's clock)."""
        out = []
        where, params = "topic = ?", list[Any]([topic])
        if start is not None:
            where, params = f"{where} AND t_recorded >= ?", [*params, start]
        if stop is not None:
            where, params = f"{where} AND t_recorded <= ?", [*params, stop]
        for r in self.db.execute(f"SELECT * FROM messages WHERE {where} ORDER BY row", params):
            payload = payload_of(r)
            record = dict(payload) if isinstance(payload, dict) else {"root": payload}
            for column in META_COLUMNS:
                record[META_PREFIX + column] = json.loads(r[column]) if column == "parents" else r[column]
            out.append(record)
        return out

    def blocks(
        self, topic: str, start: float | None = None, stop: float | None = None, src: str | None = None
    ) -> Blocks:
        """A topic's blocks (docs/data.md#blocks) joined into one array with its time axis and its
        gaps; with ``start``/``stop`` (seconds since the epoch) only the blocks that overlap
        [start, stop) are read from disk. ``src`` picks one source when several publish the topic."""
        sources = [
            r[0] for r in self.db.execute("SELECT DISTINCT src FROM messages WHERE topic = ?", (topic,))
        ]
        if src is None and len(sources) > 1:
            raise ValueError(f"topic '{topic}' has blocks from {len(sources)} sources ({sources}): pass src=")
        t0 = "json_extract(payload, '$.t0')"
        where = "topic = ? AND data IS NOT NULL"
        params: list[Any] = [topic]
        if src is not None:
            where += " AND src = ?"
            params.append(src)
        if start is not None:  # from the last block that begins at or before start
            (first,) = self.db.execute(
                f"SELECT MAX({t0}) FROM messages WHERE {where} AND {t0} <= ?", [*params, start]
            ).fetchone()
            where += f" AND {t0} >= ?"
            params.append(first if first is not None else start)
        if stop is not None:
            where += f" AND {t0} < ?"
            params.append(stop)
        rows = self.db.execute(f"SELECT * FROM messages WHERE {where} ORDER BY {t0}", params)
        blocks = [Block.read(payload_of(r), f"{topic} message {r['msg_id'] or r['row']}") for r in rows]
        joined = join(blocks, start, stop)
        joined.lost = [g for g in self.gaps if g["src"] in (sources if src is None else [src])]
        return joined

    def dataframe(self, topic: str, start: float | None = None, stop: float | None = None):
        pd = _pandas()
        frame = pd.DataFrame.from_records(self.records(topic, start, stop))
        for column in (META_PREFIX + "t_sent", META_PREFIX + "t_recorded"):
            if column in frame:
                frame[column] = pd.to_datetime(frame[column], unit="s", utc=True)
        return frame

    def __getitem__(self, topic: str):
        if topic not in self.topics:
            raise KeyError(
                f"no topic '{topic}' in session {self.path.name}; topics: {', '.join(self.topics)}"
            )
        return self.dataframe(topic)

    def frames(self) -> dict[str, Any]:
        return {t: self.dataframe(t) for t in self.topics}

    def lineage(self, msg_id: str) -> list[tuple[int, dict[str, Any]]]:
        return lineage(self.db, self.manifest, msg_id)

    # -- one clock (docs/experiments.md#one-clock) ----------------------------------------------------

    @property
    def clocks(self):
        """Every clock offset estimate as a DataFrame: kind (device/host), src, boot, t (recorder's
        clock), offset (recorder's clock minus the sender's, s), delay (a host's round trip, s)."""
        columns = ["kind", "src", "boot", "t", "offset", "delay"]
        return _pandas().DataFrame(CommonClock(self.db).estimates, columns=columns)

    def on_common_clock(self, topic: str):
        """``session[topic]`` with ``_ether.t_common``: each message's send time on the recorder's clock
        (its sender's time corrected by its measured offset; NaT when none was measured, e.g. a
        foreign client's)."""
        pd = _pandas()
        clock = CommonClock(self.db)
        frame = self[topic]
        src, boot, sent = (META_PREFIX + c for c in ("src", "boot", "t_sent"))
        seconds = [
            clock.common(s, b, None if pd.isna(t) else t.timestamp())
            for s, b, t in zip(frame[src], frame[boot], frame[sent], strict=True)
        ]
        frame[META_PREFIX + "t_common"] = pd.to_datetime(
            pd.Series(seconds, dtype="float64"), unit="s", utc=True
        )
        return frame

    # -- structure: runs, trials, markers (docs/experiments.md) ----------------------------------------

    def structure_records(self) -> Structure:
        """Runs and trials (``.entries``), ``.markers`` and ``.problems`` as lists of dicts."""
        return read_structure(self.db, ended=self.manifest.get("status") != RUNNING)

    @property
    def structure(self):
        """Every run and trial as a DataFrame: id, kind, number, name, parent, start, stop, status,
        error, metadata, src (start/stop: seconds since the epoch, the recorder's clock)."""
        return _pandas().DataFrame(self.structure_records().entries, columns=list(ENTRY_COLUMNS))

    @property
    def runs(self):
        frame = self.structure
        return frame[frame["kind"] == "run"].reset_index(drop=True)

    @property
    def trials(self):
        frame = self.structure
        return frame[frame["kind"] == "trial"].reset_index(drop=True)

    @property
    def markers(self):
        """Every marker as a DataFrame: name, t, parent, fields, src."""
        return _pandas().DataFrame(self.structure_records().markers, columns=list(MARKER_COLUMNS))

    def entry(self, which: Any, kind: str = "trial") -> dict[str, Any]:
        """A run or trial as a dict: by id, by number (``kind``'s n-th, from 1) or as given (a row of
        ``structure``, a dict)."""
        if not isinstance(which, (str, int)):
            return dict(which)
        entries = self.structure_records().entries
        found = [
            e
            for e in entries
            if (e["id"] == which if isinstance(which, str) else (e["kind"], e["number"]) == (kind, which))
        ]
        if not found:
            what = f"id {which!r}" if isinstance(which, str) else f"{kind} number {which}"
            counted = sum(e["kind"] == kind for e in entries)
            raise KeyError(f"no {what} in session {self.path.name} (it has {counted} {kind}s)")
        return found[0]

    def trial(self, number: int) -> dict[str, Any]:
        """Trial ``number`` (1 is the first trial started in the session)."""
        return self.entry(number, "trial")

    def run(self, number: int) -> dict[str, Any]:
        return self.entry(number, "run")

    def during(self, topic: str, which: Any, kind: str = "trial"):
        """The messages of ``topic`` recorded while a run or trial was open (between its start and its
        stop, both included; to the end of the session if it never stopped), as a DataFrame."""
        if topic not in self.topics:
            raise KeyError(
                f"no topic '{topic}' in session {self.path.name}; topics: {', '.join(self.topics)}"
            )
        entry = self.entry(which, kind)
        return self.dataframe(topic, entry["start"], entry["stop"])

    def close(self) -> None:
        self.db.close()


def _pandas():
    try:
        import pandas as pd
    except ImportError:
        raise ImportError(
            f"session[topic] gives a pandas DataFrame: {ANALYSIS_EXTRA} (or pip install pandas);"
            " without pandas, session.records(topic) gives the same rows as dicts"
        ) from None
    return pd


def open_session(path: str | os.PathLike = "last") -> RecordedSession:
    """Open a recorded session (a run folder, a run id, or ``last``) for analysis."""
    return RecordedSession(path)


def lineage(db: sqlite3.Connection, manifest: dict, msg_id: str) -> list[tuple[int, dict[str, Any]]]:
    """The message and its ancestors, depth first: [(depth, {msg_id, topic, src, code, payload, ...})].

    Iterative (an explicit stack), so a chain of any length is traced without recursion limits.
    """
    instances = (manifest.get("config_resolved") or {}).get("instances", {})
    code = manifest.get("code") or {}
    chain: list[tuple[int, dict[str, Any]]] = []
    seen: set[str] = set()
    stack = [(msg_id, 0)]
    while stack:
        mid, depth = stack.pop()
        if mid in seen:
            continue
        seen.add(mid)
        row = db.execute("SELECT * FROM messages WHERE msg_id = ?", (mid,)).fetchone()
        if row is None:
            chain.append((depth, {"msg_id": mid, "missing": True}))
            continue
        class_path = instances.get(row["src"], {}).get("class_path")
        entry = {
            "msg_id": mid,
            "topic": row["topic"],
            "src": row["src"],
            "seq": row["seq"],
            "t_sent": row["t_sent"],
            "class_path": class_path,
            "sha256": (code.get(class_path) or {}).get("sha256") if class_path else None,
            "payload": json.loads(row["payload"]),
        }
        chain.append((depth, entry))
        stack.extend((parent, depth + 1) for parent in reversed(json.loads(row["parents"])))
    return chain


def _cell(value: Any) -> Any:
    """A value as a CSV or Parquet cell: lists, objects and arrays as JSON, bytes as base64."""
    if isinstance(value, bytes):
        return base64.b64encode(value).decode()
    if isinstance(value, (list, dict)) or hasattr(value, "__array__"):
        return json.dumps(value, default=_jsonable)
    return value


def _jsonable(value: Any) -> Any:
    if isinstance(value, bytes):
        return base64.b64encode(value).decode()
    if getattr(value, "dtype", None) is not None and value.dtype.kind in "biuf":
        return value.tolist()
    return str(value.tolist()) if hasattr(value, "tolist") else str(value)


# format: the exporter writing the whole session as one file (docs/data.md#export-what-maps-to-what)
ONE_FILE_EXPORTS = {
    "hdf5": "ether.data.hdf5:export_hdf5",
    "nwb": "ether.data.nwb:export_nwb",
    "zarr": "ether.data.zarr_export:export_zarr",
    "mcap": "ether.data.mcap_export:export_mcap",
}


def export(session: RecordedSession, out: Path, fmt: str, progress=None) -> list[Path]:
    """One file per topic (csv or parquet), fields as columns and the metadata alongside; hdf5, nwb,
    zarr, mcap: one file (``ONE_FILE_EXPORTS``)."""
    if fmt in ONE_FILE_EXPORTS:
        module, function = ONE_FILE_EXPORTS[fmt].split(":")
        return [getattr(importlib.import_module(module), function)(session, out, progress)]
    if fmt == "parquet":
        try:
            import pyarrow  # noqa: F401
        except ImportError:
            raise ImportError(
                f"--format parquet needs pyarrow: {ANALYSIS_EXTRA} (or use --format csv)"
            ) from None
    out.mkdir(parents=True, exist_ok=True)
    written = []
    topics = session.topics
    for i, topic in enumerate(topics, 1):
        records = session.records(topic)
        path = out / f"{topic.replace('/', '__')}.{fmt}"
        if fmt == "csv":
            columns = list(dict.fromkeys(k for r in records for k in r))
            with path.open("w", newline="") as f:
                writer = csv.DictWriter(f, columns)
                writer.writeheader()
                for r in records:
                    writer.writerow({k: _cell(v) for k, v in r.items()})
        else:
            import pyarrow as pa
            import pyarrow.parquet as pq

            rows = [{k: _cell(v) for k, v in r.items()} for r in records]
            pq.write_table(pa.Table.from_pylist(rows), path)
        written.append(path)
        if progress:
            progress(i, len(topics), topic, len(records))
    return written


# -- the CLI commands ----------------------------------------------------------------------------


def cmd_sessions(args) -> int:
    root = data_root(args.data)
    stores = find_stores(root)
    if not stores:
        print(f"no recorded sessions in {root}")
        return 0
    print(
        f"{'run':<38} {'status':<10} {'duration':>9} {'messages':>9} {'missing':>8} {'unsaved':>8}"
        f" {'conflicts':>9} {'unprocessed':>11}"
    )
    for path in stores:
        journal.merge_ended(path.parent)  # what a session recorded when its recorder could not
        try:
            db = connect(path, readonly=True)
            s = summary(db)
            db.close()
        except (sqlite3.Error, StoreError) as exc:
            print(f"{path.parent.name:<38} unreadable: {exc}")
            continue
        start, stop = s["started_at"], s["stopped_at"]
        duration = f"{stop - start:.1f}s" if start and stop else "-"
        print(
            f"{path.parent.name:<38} {s['status'] or '?':<10} {duration:>9} {s['messages']:>9}"
            f" {s['missing']:>8} {s['unsaved'] or 0:>8} {s['conflicts']:>9} {s['unprocessed']:>11}"
        )
    return 0


# deeper ancestors are not indented further (a long chain's text would grow as its square):
# each line names its depth instead
INDENT_LEVELS = 16


def cmd_lineage(args) -> int:
    candidates = (
        [find_session(args.session, args.data)]
        if args.session
        else [p.parent for p in reversed(find_stores(data_root(args.data)))]
    )
    for path in candidates:
        db = connect(path, readonly=True)
        if db.execute("SELECT 1 FROM messages WHERE msg_id = ?", (args.message,)).fetchone():
            chain = lineage(db, read_manifest(db), args.message)
            print(f"session {path.name}")
            for depth, e in chain:
                indent = "  " * min(depth, INDENT_LEVELS)
                pad = indent + ("<- " if depth else "") + (f"[{depth}] " if depth > INDENT_LEVELS else "")
                if e.get("missing"):
                    print(f"{pad}{e['msg_id']}  (not in this session)")
                    continue
                code = f" {e['class_path']} sha256:{e['sha256'][:12]}" if e.get("sha256") else ""
                when = time.strftime("%H:%M:%S", time.localtime(e["t_sent"])) if e["t_sent"] else "?"
                print(
                    f"{pad}{e['msg_id']}  {e['topic']}  from {e['src'] or 'a foreign client'}{code}  at {when}"
                )
                print(f"{indent}   {json.dumps(e['payload'])[:100]}")
            return 0
    print(
        f"ether: message '{args.message}' is in no recorded session under {data_root(args.data)}",
        file=sys.stderr,
    )
    return 1


def cmd_export(args) -> int:
    try:
        session = open_session_in(args.session, args.data)
        out = Path(args.out or f"{session.path.name}-{args.format}")

        def progress(i: int, n: int, topic: str, count: int) -> None:
            bar = "#" * int(30 * i / n)
            print(
                f"\r[{bar:<30}] {i}/{n} topics ({topic}: {count} rows)", end="", file=sys.stderr, flush=True
            )

        export(session, out, args.format, progress)
    except (ImportError, StoreError) as exc:
        print(f"ether: {exc}", file=sys.stderr)
        return 1
    print(file=sys.stderr)
    print(f"exported {len(session.topics)} topics to {out}")
    return 0


def open_session_in(name: str, root: str | None) -> RecordedSession:
    return RecordedSession(find_session(name, root))
