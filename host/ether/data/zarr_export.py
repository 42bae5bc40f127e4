"""``ether export --format zarr``: a recorded session as one Zarr (v3) store (zarr, the ``zarr`` extra).

The layout of the HDF5 export (docs/data.md#export-what-maps-to-what), from the same columns
(``ether.data.columns``): the manifest as root attributes (JSON text), one group per topic, blocks as
``data`` and ``times`` with their attributes, other topics one array per field and ``_ether/``. Bytes
have no stable Zarr v3 dtype, so a bytes field is a group of ``data`` (every message's bytes, one after
the other, uint8) and ``offsets`` (int64, messages + 1: message i is ``data[offsets[i]:offsets[i+1]]``).
Arrays use zarr's default compression (zstd).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ether.contract.wire import META_KEY
from ether.data.columns import Column, session_columns
from ether.data.extras import need

if TYPE_CHECKING:
    from ether.data.recorded import RecordedSession


def export_zarr(session: RecordedSession, out: Path, progress=None) -> Path:
    zarr = need("zarr", "zarr")
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{session.path.name}.zarr"
    root = zarr.open_group(str(path), mode="w")
    root.attrs.update({key: json.dumps(value, default=str) for key, value in session.manifest.items()})
    topics = session.topics
    for i, columns in enumerate(session_columns(session), 1):
        group = root.require_group(columns.topic)
        attrs: dict[str, Any] = {"kind": columns.kind, "messages": columns.messages}
        joined = columns.blocks
        if joined is not None:
            group.create_array("data", data=joined.data)
            group.create_array("times", data=columns.time)
            attrs.update(rate=joined.rate, channels=joined.channels, units=joined.units)
            attrs.update(gaps=joined.gaps, lost=joined.lost)
        for column in columns.fields:
            _array(group, column)
        meta = group.require_group(META_KEY)
        for column in columns.meta:
            _array(meta, column)
        group.attrs.update(attrs)
        if progress:
            progress(i, len(topics), columns.topic, columns.messages)
    return path


def _array(group: Any, column: Column) -> None:
    import numpy as np

    if column.kind in ("numbers", "bools", "arrays"):
        _create(group, column.name, column.values)
    elif column.kind == "ragged":  # one array per message, named by its index
        sub = group.require_group(column.name)
        for i, v in enumerate(column.values):
            if v is not None:
                _create(
                    sub, str(i), v if isinstance(v, np.ndarray) else np.array([json.dumps(v, default=str)])
                )
    elif column.kind == "bytes":
        sub = group.require_group(column.name)
        blobs = [v or b"" for v in column.values]
        offsets = np.cumsum([0, *map(len, blobs)], dtype=np.int64)
        sub.create_array("data", data=np.frombuffer(b"".join(blobs), np.uint8))
        sub.create_array("offsets", data=offsets)
    else:
        _create(group, column.name, np.array(column.values, dtype=str))


def _create(group: Any, name: str, data: Any) -> None:
    """An array; text as variable-length UTF-8, a Zarr v3 data type with a spec (numpy's fixed-length
    unicode has none)."""

    if data.dtype.kind == "U":
        text = group.create_array(name, shape=data.shape, dtype=str)
        text[...] = data.astype(object)
    else:
        group.create_array(name, data=data)
