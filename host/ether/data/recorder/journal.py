"""The session's journal: events the session records when the recorder cannot (docs/data.md).

A forced quit stops the recorder at once -- unless the recorder is stuck, and then it writes nothing.
So the session that hears a forced quit writes it here first: one JSON line per event in
``journal.jsonl`` beside the store, on disk before anything else happens. A recorder that died
unasked is noted here too (``recorder_dead``), by the session that saw it exit. The seal, the next
recorder start, ``ether sessions`` and ``open_session`` merge the journal into the store (once: each line has
an id) and delete it; an event the recorder wrote itself is not merged twice.
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import time
import uuid
from pathlib import Path
from typing import Any

from ether.data.recorder.store import RUNNING, STORE_FILE, Store, StoreError, connect, read_manifest

log = logging.getLogger("ether.recorder")

JOURNAL = "journal.jsonl"
KINDS = ("forced_quit", "recorder_dead")  # what a journal may hold; any other line is not believed


def note(run_dir: Path, kind: str, src: str | None = None, **detail: Any) -> None:
    """Append one event to the journal and put it on disk."""
    line = {"id": uuid.uuid4().hex, "t": time.time(), "kind": kind, "src": src, "detail": detail}
    with open(run_dir / JOURNAL, "a", encoding="utf-8") as journal:
        journal.write(json.dumps(line, default=str) + "\n")
        journal.flush()
        os.fsync(journal.fileno())


def entries(run_dir: Path) -> list[dict[str, Any]]:
    """The journal's events (none if there is no journal); a line that is not one is skipped."""
    path = run_dir / JOURNAL
    if not path.exists():
        return []
    found = []
    for number, text in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
        try:
            line = json.loads(text)
            if line["kind"] in KINDS and isinstance(line["detail"], dict):
                found.append({**line, "t": float(line["t"]), "id": str(line["id"])})
                continue
        except (ValueError, KeyError, TypeError):
            pass
        log.warning("%s:%d: not a journal event; skipped", path, number)
    return found


def merge(run_dir: Path) -> int:
    """Write the journal's events into the store and delete the journal; returns how many were new.
    A store that cannot be written (read-only, locked) keeps its journal for the next try."""
    found = entries(run_dir)
    if not found or not (run_dir / STORE_FILE).exists():
        return 0
    try:
        store = Store(run_dir)
    except (sqlite3.Error, OSError) as exc:
        log.warning("could not merge the journal of %s into its store: %s", run_dir, exc)
        return 0
    merged = 0
    try:
        with store.transaction():
            for line in found:
                if _known(store, line):
                    continue
                detail = {**line["detail"], "journal_id": line["id"]}
                store.db.execute(
                    "INSERT INTO events VALUES (?, ?, ?, NULL, ?)",
                    (line["t"], line["kind"], line["src"], json.dumps(detail, default=str)),
                )
                merged += 1
        if merged:
            store.set_manifest(forced_quit=forced_quits(store))
    except (sqlite3.Error, OSError) as exc:
        log.warning("could not merge the journal of %s into its store: %s", run_dir, exc)
        return 0
    finally:
        store.close()
    (run_dir / JOURNAL).unlink(missing_ok=True)
    return merged


def merge_ended(run_dir: Path) -> int:
    """:func:`merge` for a reader (``ether sessions``, ``open_session``): only into a store that was
    sealed (a running session merges its own journal when it seals, a crashed one when it is sealed
    crashed)."""
    if not (run_dir / JOURNAL).exists():
        return 0
    try:
        db = connect(run_dir, readonly=True)
        try:
            status = read_manifest(db).get("status")
        finally:
            db.close()
    except (sqlite3.Error, StoreError):
        return 0
    return merge(run_dir) if status != RUNNING else 0


def _known(store: Store, line: dict[str, Any]) -> bool:
    """Whether the store has this event already: merged before, or a forced quit the recorder wrote."""
    merged = store.db.execute(
        "SELECT 1 FROM events WHERE kind = ? AND json_extract(detail, '$.journal_id') = ?",
        (line["kind"], line["id"]),
    ).fetchone()
    if merged is not None:
        return True
    by = line["detail"].get("by")
    recorded = store.db.execute(
        "SELECT 1 FROM events WHERE kind = 'forced_quit' AND json_extract(detail, '$.by') = ?"
        " AND json_extract(detail, '$.journal_id') IS NULL",
        (by,),
    ).fetchone()
    return line["kind"] == "forced_quit" and recorded is not None


def forced_quits(store: Store) -> list[dict[str, Any]]:
    """Every forced quit in the store, as the manifest lists them."""
    rows = store.db.execute("SELECT t, detail FROM events WHERE kind = 'forced_quit' ORDER BY t")
    return [{"t": t, **json.loads(detail)} for t, detail in rows]
