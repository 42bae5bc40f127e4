"""A recorded topic as columns: what every exporter (HDF5, NWB, Zarr, MCAP) writes
(docs/data.md#export-what-maps-to-what).

A topic is either **blocks** (every message a block from one source, docs/data.md#blocks: joined into
one array with its time axis) or **messages**: one column per field, each of one kind --

    numbers  float64, NaN where a message lacks the field
    bools    bool
    arrays   one numpy array (messages, ...): the field's arrays stacked (same shape and dtype in all)
    ragged   a list per message: arrays of varying shape or dtype (or other values; None where absent)
    bytes    a list per message of bytes (None where absent)
    text     a list per message of strings (objects, lists and mixed values as JSON text)

-- and the metadata columns (``_ether``). Times are seconds since the epoch on the recorder's clock:
a message's ``t_recorded``; a block's sample times are the sender's, moved by the board's clock
offset in effect at each sample (its ``device_clock`` events, docs/data.md#device-clocks) when the
sender is a board.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from ether.contract.blocks import BlockError, Blocks
from ether.data.recorded import META_COLUMNS, META_PREFIX, RecordedSession

NUMERIC_META = ("seq", "t_sent", "t_recorded")
ARRAY_KEY = "$array"  # an array as JSON (MCAP, CSV): {"$array": {dtype, shape, order, base64}}


@dataclass
class Column:
    name: str
    kind: str  # numbers | bools | arrays | ragged | bytes | text
    values: Any  # numbers, bools, arrays: one numpy array; ragged, bytes, text: a list per message


@dataclass
class TopicColumns:
    topic: str
    kind: str  # blocks | messages
    messages: int
    time: Any  # float64 seconds since the epoch, the recorder's clock: per sample (blocks) or message
    blocks: Blocks | None = None  # the joined blocks (data, rate, channels, units, gaps, lost)
    fields: list[Column] = field(default_factory=list)
    meta: list[Column] = field(default_factory=list)
    derived: bool = False  # some message has parents: a result, not a source's sample


def session_columns(session: RecordedSession) -> Iterator[TopicColumns]:
    """Each topic of a session as columns, in topic order (one topic in memory at a time)."""
    clocks = board_clocks(session.events)
    for topic in session.topics:
        yield topic_columns(session, topic, clocks)


def topic_columns(session: RecordedSession, topic: str, clocks: dict[str, BoardClock]) -> TopicColumns:
    import numpy as np

    try:
        joined = _joined_blocks(session, topic)
    except (BlockError, ValueError):  # not a topic of blocks from one source
        joined = None
    if joined is not None:  # the samples are read once, by blocks(); the records only for metadata
        rows = session.db.execute(
            f"SELECT {', '.join(META_COLUMNS)} FROM messages WHERE topic = ? ORDER BY row", (topic,)
        )
        records = [
            {META_PREFIX + k: json.loads(r[k]) if k == "parents" else r[k] for k in META_COLUMNS}
            for r in rows
        ]
        clock = clocks.get(records[0][META_PREFIX + "src"] or "")
        time = joined.times if clock is None else clock.to_host(joined.times)
        columns: list[Column] = []
    else:
        records = session.records(topic)
        fields = list(dict.fromkeys(k for r in records for k in r if not k.startswith(META_PREFIX)))
        columns = [column(name, [r.get(name) for r in records]) for name in fields]
        time = np.array([r[META_PREFIX + "t_recorded"] for r in records], dtype=np.float64)
    derived = any(r[META_PREFIX + "parents"] for r in records)
    kind = "messages" if joined is None else "blocks"
    return TopicColumns(topic, kind, len(records), time, joined, columns, _meta(records), derived)


def _joined_blocks(session: RecordedSession, topic: str) -> Blocks:
    """A topic whose every message is a block from one source, joined; BlockError otherwise."""
    count = "SELECT COUNT(*), COUNT(data) FROM messages WHERE topic = ?"
    total, binary = session.db.execute(count, (topic,)).fetchone()
    if not total or binary != total:
        raise BlockError(f"{topic}: not only blocks")
    return session.blocks(topic)


def column(name: str, values: list[Any]) -> Column:
    """A field's values, one per message (None where absent), as a column of one kind."""
    import numpy as np

    present = [v for v in values if v is not None]
    arrays = [v for v in present if isinstance(v, np.ndarray)]
    if arrays and len(arrays) == len(values) and len({(a.shape, a.dtype) for a in arrays}) == 1:
        return Column(name, "arrays", np.stack(arrays))
    if arrays:
        return Column(name, "ragged", values)  # arrays, and whatever else some messages held there
    if present and all(isinstance(v, bytes) for v in present):
        return Column(name, "bytes", values)
    if present and all(isinstance(v, bool) for v in values):
        return Column(name, "bools", np.array(values, dtype=bool))
    if present and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in present):
        return Column(name, "numbers", np.array([np.nan if v is None else v for v in values], np.float64))
    return Column(
        name, "text", [v if isinstance(v, str) else json.dumps(v, default=jsonable) for v in values]
    )


def _meta(records: list[dict[str, Any]]) -> list[Column]:
    import numpy as np

    columns = []
    for name in (k.removeprefix(META_PREFIX) for k in records[0] if k.startswith(META_PREFIX)):
        values = [r[META_PREFIX + name] for r in records]
        if name in NUMERIC_META:
            data = np.array([np.nan if v is None else v for v in values], dtype=np.float64)
            columns.append(Column(name, "numbers", data))
        else:
            text = [json.dumps(v) if isinstance(v, list) else (v or "") for v in values]
            columns.append(Column(name, "text", text))
    return columns


@dataclass
class BoardClock:
    """A board's ``device_clock`` events (docs/data.md#device-clocks): which offset held from which
    board time on."""

    t_board: Any  # float64, ascending: the board time of each estimate
    offset: Any  # float64: host time minus board time from then on

    def to_host(self, times: Any) -> Any:
        """Board times on the host's clock: each moved by the last estimate made at or before it (the
        first estimate for times before it)."""
        import numpy as np

        at = np.clip(np.searchsorted(self.t_board, times, side="right") - 1, 0, None)
        return times + self.offset[at]


def board_clocks(events: list[dict[str, Any]]) -> dict[str, BoardClock]:
    """Per board, its clock estimates; a host source shares the recorder's clock and has none."""
    import numpy as np

    found: dict[str, list[tuple[float, float]]] = {}
    for event in events:
        if event["kind"] == "device_clock" and event["src"]:
            detail = event["detail"]
            found.setdefault(event["src"], []).append((float(detail["t_board"]), float(detail["offset"])))
    clocks = {}
    for src, estimates in found.items():
        estimates.sort()
        t_board, offset = np.array(estimates, dtype=np.float64).T
        clocks[src] = BoardClock(t_board, offset)
    return clocks


def jsonable(value: Any) -> Any:
    """A stored value as JSON: an array as ``{"$array": {dtype, shape, order, base64}}`` (C order,
    the bytes of the dtype given), bytes as base64 text; for ``json.dumps(..., default=jsonable)``."""
    if isinstance(value, bytes):
        return base64.b64encode(value).decode()
    if hasattr(value, "__array__") and hasattr(value, "dtype"):
        import numpy as np

        data = np.ascontiguousarray(value)
        ref = {"dtype": data.dtype.str, "shape": list(data.shape), "order": "C"}
        return {ARRAY_KEY: {**ref, "base64": base64.b64encode(data.tobytes()).decode()}}
    return str(value)
