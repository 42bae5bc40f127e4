"""``ether export --format hdf5``: a recorded session as one HDF5 file (h5py, the ``hdf5`` extra).

Layout (docs/data.md#export-to-hdf5): the manifest (provenance) as root attributes, one group per
topic; a topic of blocks is its joined ``data`` and ``times`` with ``rate``, ``channels``, ``units``
and ``gaps`` as attributes; any other topic has one dataset per field (numbers, strings, bytes,
arrays stacked when they share a shape and dtype, else one dataset per message) and its metadata
under ``_ether/``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ether.contract.blocks import BlockError
from ether.contract.wire import META_KEY

if TYPE_CHECKING:
    from ether.data.recorded import RecordedSession

META_PREFIX = META_KEY + "."  # the metadata of a record (``RecordedSession.records``)

HDF5_EXTRA = "pip install 'ether-lab[hdf5]'"


def export_hdf5(session: RecordedSession, out: Path, progress=None) -> Path:
    try:
        import h5py
    except ImportError:
        raise ImportError(f"--format hdf5 needs h5py: {HDF5_EXTRA} (or pip install h5py)") from None
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{session.path.name}.h5"
    topics = session.topics
    with h5py.File(path, "w") as f:
        for key, value in session.manifest.items():
            f.attrs[key] = json.dumps(value, default=str)
        for i, topic in enumerate(topics, 1):
            group = f.require_group(topic)
            try:
                _blocks(group, session, topic)
            except (BlockError, ValueError):  # not a topic of blocks from one source
                _records(group, session.records(topic))
            if progress:
                progress(i, len(topics), topic, group.attrs.get("messages", 0))
    return path


def _blocks(group: Any, session: RecordedSession, topic: str) -> None:
    """A topic whose every message is a block, from one source: written joined."""
    count = "SELECT COUNT(*) FROM messages WHERE topic = ?"
    (total,) = session.db.execute(count, (topic,)).fetchone()
    (binary,) = session.db.execute(count + " AND data IS NOT NULL", (topic,)).fetchone()
    if not total or binary != total:
        raise BlockError(f"{topic}: not only blocks")
    joined = session.blocks(topic)
    group.create_dataset("data", data=joined.data)
    group.create_dataset("times", data=joined.times)
    group.attrs["kind"] = "blocks"
    group.attrs["messages"] = total
    for name in ("rate", "units"):
        if getattr(joined, name) is not None:
            group.attrs[name] = getattr(joined, name)
    if joined.channels is not None:
        group.attrs["channels"] = joined.channels
    group.attrs["gaps"] = json.dumps(joined.gaps)
    group.attrs["lost"] = json.dumps(joined.lost)


def _records(group: Any, records: list[dict[str, Any]]) -> None:
    import h5py
    import numpy as np

    group.attrs["kind"] = "messages"
    group.attrs["messages"] = len(records)
    fields = list(dict.fromkeys(k for r in records for k in r if not k.startswith(META_PREFIX)))
    for name in fields:
        values: list[Any] = [r.get(name) for r in records]
        arrays = [v for v in values if isinstance(v, np.ndarray)]
        if len(arrays) == len(values) and len({(a.shape, a.dtype) for a in arrays}) == 1:
            group.create_dataset(name, data=np.stack(arrays))
        elif arrays:
            sub = group.require_group(name)
            for i, v in enumerate(values):
                if v is not None:
                    sub.create_dataset(str(i), data=v if isinstance(v, np.ndarray) else json.dumps(v))
        elif all(isinstance(v, bytes) for v in values):
            data = group.create_dataset(name, (len(values),), dtype=h5py.vlen_dtype(np.uint8))
            for i, v in enumerate(values):
                data[i] = np.frombuffer(v, np.uint8)
        elif all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
            group.create_dataset(name, data=np.array(values, dtype=np.float64))
        elif all(isinstance(v, bool) for v in values):
            group.create_dataset(name, data=np.array(values, dtype=bool))
        else:  # text, mixed, objects and lists: one JSON text per message
            text = [v if isinstance(v, str) else json.dumps(v, default=str) for v in values]
            group.create_dataset(name, data=text, dtype=h5py.string_dtype())
    meta = group.require_group(META_KEY)
    for column in (k.removeprefix(META_PREFIX) for k in records[0] if k.startswith(META_PREFIX)):
        values = [r[META_PREFIX + column] for r in records]
        if column in ("t_sent", "t_recorded", "seq"):
            data = np.array([np.nan if v is None else v for v in values], dtype=np.float64)
            meta.create_dataset(column, data=data)
        else:
            text = [json.dumps(v) if isinstance(v, list) else (v or "") for v in values]
            meta.create_dataset(column, data=text, dtype=h5py.string_dtype())
