"""``ether export --format nwb``: a recorded session as one NWB file (pynwb, the ``nwb`` extra).

Mapping (docs/data.md#export-what-maps-to-what): the session's provenance in the NWBFile's
metadata; a topic of blocks is one TimeSeries (rate and starting time, or timestamps when it has gaps
or per-sample times; units; channels and gaps in its comments); any other topic gives a TimeSeries per
numeric, bool or stacked array field, stamped with the messages' ``t_recorded``. Sources' topics go to ``acquisition``,
derived ones (messages with parents) to the ``ether`` processing module. Times are on the recorder's
clock (``ether.data.columns``), relative to the session's start.

Trials and epochs: the session's trials (``ether.trial``) are the NWB trials table and its runs
(``ether.run``) the epochs table (docs/experiments.md), with their name (``label``), number, status,
error, parent (``parent_id``), source and metadata (JSON) as columns; an entry that never stopped has a NaN stop_time.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ether.data.columns import TopicColumns, session_columns
from ether.data.extras import need

if TYPE_CHECKING:
    from ether.data.recorded import RecordedSession

UNKNOWN_UNIT = "unknown"  # a message field has no unit in Ether's contract
NUMERIC = "biuf"  # the dtypes a TimeSeries holds (not complex, times or strings: use hdf5 or zarr)
INTERVALS = {"trial": "trial", "run": "epoch"}  # an Ether entry kind: the NWB interval table it goes to
# an entry's fields, as the table's columns (NWB tables have a name and a parent of their own)
ENTRY_COLUMNS = {
    "label": "name",
    "number": "number",
    "status": "status",
    "error": "error",
    "parent_id": "parent",
    "source": "src",
    "metadata": "metadata",
}


def export_nwb(session: RecordedSession, out: Path, progress=None) -> Path:
    pynwb = need("pynwb", "nwb")
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{session.path.name}.nwb"
    manifest = session.manifest
    start = float(manifest.get("started_at") or 0.0)
    skipped: list[str] = []
    nwbfile = pynwb.NWBFile(
        session_description=f"Ether session '{manifest.get('session')}' ({manifest.get('status')})",
        identifier=str(manifest.get("run_id") or session.path.name),
        session_start_time=datetime.fromtimestamp(start, timezone.utc),
        **_script(manifest),
    )
    names: set[str] = set()
    topics = session.topics
    for i, columns in enumerate(session_columns(session), 1):
        for series in _series(pynwb, columns, start, names, skipped):
            if columns.derived:
                _processing(nwbfile).add(series)
            else:
                nwbfile.add_acquisition(series)
        if progress:
            progress(i, len(topics), columns.topic, columns.messages)
    intervals(nwbfile, session, start)
    nwbfile.notes = json.dumps({"manifest": manifest, "not_exported": skipped}, default=str)
    with pynwb.NWBHDF5IO(str(path), "w") as io:
        io.write(nwbfile)
    return path


def _script(manifest: dict[str, Any]) -> dict[str, str]:
    """The session file as the NWB file's source script (NWB requires its file name with it)."""
    if not manifest.get("config_text"):
        return {}
    name = manifest.get("config_path") or "(none: the session was configured from Python)"
    return {"source_script": manifest["config_text"], "source_script_file_name": str(name)}


def _processing(nwbfile: Any) -> Any:
    if "ether" not in nwbfile.processing:
        nwbfile.create_processing_module("ether", "results the session's instances computed")
    return nwbfile.processing["ether"]


def _series(pynwb: Any, columns: TopicColumns, start: float, names: set[str], skipped: list[str]) -> list:
    if columns.blocks is not None and columns.blocks.data.dtype.kind not in NUMERIC:
        skipped.append(f"{columns.topic}: blocks of dtype {columns.blocks.data.dtype}")
    elif columns.blocks is not None:
        joined = columns.blocks
        detail = {
            "topic": columns.topic,
            "channels": joined.channels,
            "gaps": joined.gaps,
            "lost": joined.lost,
        }
        timing: dict[str, Any] = {"timestamps": columns.time - start}
        if joined.rate is not None and not joined.gaps and len(columns.time):
            timing = {"starting_time": float(columns.time[0] - start), "rate": joined.rate}
        channels = f"; channels {', '.join(joined.channels)}" if joined.channels else ""
        series = pynwb.TimeSeries(
            name=_name(columns.topic, None, names),
            data=joined.data,
            unit=joined.units or UNKNOWN_UNIT,
            description=f"blocks of topic '{columns.topic}'{channels}",
            comments=json.dumps(detail),
            **timing,
        )
        return [series]
    out = []
    for column in columns.fields:
        if column.kind not in ("numbers", "bools", "arrays"):
            skipped.append(f"{columns.topic}: field '{column.name}' ({column.kind})")
            continue
        if column.values.dtype.kind not in NUMERIC:
            skipped.append(f"{columns.topic}: field '{column.name}' (arrays of dtype {column.values.dtype})")
            continue
        series = pynwb.TimeSeries(
            name=_name(columns.topic, column.name, names),
            data=column.values,
            unit=UNKNOWN_UNIT,
            timestamps=columns.time - start,
            description=f"field '{column.name}' of topic '{columns.topic}', one value per message",
            comments=json.dumps({"topic": columns.topic, "field": column.name}),
        )
        out.append(series)
    return out


def _name(topic: str, field: str | None, taken: set[str]) -> str:
    """An NWB object name (no '/'): ``topic.field``, made unique when two topics spell alike."""
    base = topic.replace("/", "_") + (f".{field}" if field is not None else "")
    name, n = base, 1
    while name in taken:
        n += 1
        name = f"{base}~{n}"
    taken.add(name)
    return name


def intervals(nwbfile: Any, session: RecordedSession, start: float) -> None:
    """The session's trials and runs as NWB's trials and epochs tables (times relative to ``start``)."""
    entries = session.structure_records().entries
    for kind, table in INTERVALS.items():
        rows = [e for e in entries if e["kind"] == kind]
        if not rows:
            continue
        for column, key in ENTRY_COLUMNS.items():
            getattr(nwbfile, f"add_{table}_column")(name=column, description=f"the {kind}'s {key} (Ether)")
        add_row = getattr(nwbfile, f"add_{table}")
        for row in rows:
            stop = row["stop"]
            add_row(
                start_time=float(row["start"]) - start,
                stop_time=float("nan") if stop is None else float(stop) - start,
                **{column: _cell(row.get(key)) for column, key in ENTRY_COLUMNS.items()},
            )


def _cell(value: Any) -> Any:
    """A table cell NWB can hold: numbers and text as they are, None as "", anything else as JSON."""
    if value is None:
        return ""
    return value if isinstance(value, (int, float, str, bool)) else json.dumps(value, default=str)
