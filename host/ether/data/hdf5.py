"""``ether export --format hdf5``: a recorded session as one HDF5 file (h5py, the ``hdf5`` extra).

Layout (docs/data.md#export-to-hdf5): the manifest (provenance) as root attributes, one group per
topic (``ether.data.columns``); a topic of blocks is its joined ``data`` and ``times`` with ``rate``,
``channels``, ``units`` and ``gaps`` as attributes; any other topic has one dataset per field and its
metadata under ``_ether/``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ether.contract.wire import META_KEY
from ether.data.columns import Column, TopicColumns, session_columns
from ether.data.extras import need

if TYPE_CHECKING:
    from ether.data.recorded import RecordedSession


def export_hdf5(session: RecordedSession, out: Path, progress=None) -> Path:
    h5py = need("h5py", "hdf5")
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{session.path.name}.h5"
    with h5py.File(path, "w") as f:
        for key, value in session.manifest.items():
            f.attrs[key] = json.dumps(value, default=str)
        topics = session.topics
        for i, columns in enumerate(session_columns(session), 1):
            group = f.require_group(columns.topic)
            group.attrs["kind"] = columns.kind
            group.attrs["messages"] = columns.messages
            if columns.blocks is not None:
                _blocks(group, columns)
            else:
                for column in columns.fields:
                    _dataset(group, column)
            meta = group.require_group(META_KEY)
            for column in columns.meta:
                _dataset(meta, column)
            if progress:
                progress(i, len(topics), columns.topic, columns.messages)
    return path


def _blocks(group: Any, columns: TopicColumns) -> None:
    joined = columns.blocks
    assert joined is not None
    _array(group, "data", joined.data)
    group.create_dataset("times", data=columns.time)
    for name in ("rate", "units"):
        if getattr(joined, name) is not None:
            group.attrs[name] = getattr(joined, name)
    if joined.channels is not None:
        group.attrs["channels"] = joined.channels
    group.attrs["gaps"] = json.dumps(joined.gaps)
    group.attrs["lost"] = json.dumps(joined.lost)


def _dataset(group: Any, column: Column) -> None:
    import h5py
    import numpy as np

    if column.kind in ("numbers", "bools", "arrays"):
        _array(group, column.name, column.values)
    elif column.kind == "ragged":  # one dataset per message, named by its index
        sub = group.require_group(column.name)
        for i, v in enumerate(column.values):
            if isinstance(v, np.ndarray):
                _array(sub, str(i), v)
            elif v is not None:
                sub.create_dataset(str(i), data=json.dumps(v, default=str))
    elif column.kind == "bytes":
        data = group.create_dataset(column.name, (len(column.values),), dtype=h5py.vlen_dtype(np.uint8))
        for i, v in enumerate(column.values):
            data[i] = np.frombuffer(v or b"", np.uint8)
    else:
        group.create_dataset(column.name, data=column.values, dtype=h5py.string_dtype())


def _array(group: Any, name: str, data: Any) -> None:
    """A dataset of an array. HDF5 has no datetime or unicode type: times are written as int64 with
    their numpy dtype in the attribute ``dtype`` (read ``data[()].view(dtype)``), unicode as UTF-8."""
    import h5py
    import numpy as np

    if data.dtype.kind in "mM":
        group.create_dataset(name, data=data.view(np.int64)).attrs["dtype"] = data.dtype.str
    elif data.dtype.kind == "U":
        group.create_dataset(name, data=data.astype(object), dtype=h5py.string_dtype())
    else:
        group.create_dataset(name, data=data)
