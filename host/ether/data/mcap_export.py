"""``ether export --format mcap``: a recorded session as one MCAP file (mcap, the ``mcap`` extra), for
Foxglove and the ROS tools.

Mapping (docs/data.md#export-what-maps-to-what): one channel per topic, JSON messages
(``message_encoding`` ``json``) with a JSON Schema per topic (``jsonschema``) built from the topic's columns
(``ether.data.columns``); one MCAP message per recorded message, in the order of the recorder's clock
(``log_time`` = ``t_recorded``, ``publish_time`` = ``t_sent``, both in ns). A message is its fields
plus ``_ether`` (msg_id, src, boot, seq, parents, t_sent, t_recorded); an array is
``{"$array": {"dtype", "shape", "order": "C", "base64"}}`` (the raw bytes, base64), bytes are base64
text. The manifest (provenance) is the MCAP metadata record ``ether.manifest`` (each key as JSON text).
"""

from __future__ import annotations

import heapq
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ether.data.columns import ARRAY_KEY, META_PREFIX, column, jsonable
from ether.data.extras import need

if TYPE_CHECKING:
    from ether.data.recorded import RecordedSession

ARRAY_SCHEMA = {
    "type": "object",
    "description": "a numpy array: its raw bytes (C order, in dtype) as base64",
    "properties": {
        ARRAY_KEY: {
            "type": "object",
            "properties": {
                "dtype": {"type": "string", "description": "numpy dtype string, e.g. '<i2'"},
                "shape": {"type": "array", "items": {"type": "integer"}},
                "order": {"const": "C"},
                "base64": {"type": "string", "contentEncoding": "base64"},
            },
            "required": ["dtype", "shape", "order", "base64"],
        }
    },
    "required": [ARRAY_KEY],
}
KIND_SCHEMAS: dict[str, dict[str, Any]] = {
    "numbers": {"type": ["number", "null"]},
    "bools": {"type": "boolean"},
    "arrays": ARRAY_SCHEMA,
    "ragged": {},  # arrays of varying shape, or other values in some messages
    "bytes": {"type": ["string", "null"], "contentEncoding": "base64"},
    "text": {},  # strings, objects, lists: as sent
}
META_SCHEMA = {
    "type": "object",
    "description": "Ether's metadata of the message (docs/data.md)",
    "properties": {
        "msg_id": {"type": ["string", "null"]},
        "src": {"type": ["string", "null"]},
        "boot": {"type": ["string", "null"]},
        "seq": {"type": ["integer", "null"]},
        "parents": {"type": "array", "items": {"type": "string"}},
        "t_sent": {"type": ["number", "null"]},
        "t_recorded": {"type": "number"},
    },
}


def export_mcap(session: RecordedSession, out: Path, progress=None) -> Path:
    need("mcap", "mcap")
    from mcap.writer import Writer

    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{session.path.name}.mcap"
    streams = []
    with path.open("wb") as f:
        writer = Writer(f)
        writer.start(profile="", library="ether")
        writer.add_metadata(
            "ether.manifest", {k: json.dumps(v, default=str) for k, v in session.manifest.items()}
        )
        topics = session.topics
        for i, topic in enumerate(topics, 1):
            records = session.records(topic)
            schema = writer.register_schema(
                topic, "jsonschema", json.dumps(schema_of(topic, records)).encode()
            )
            channel = writer.register_channel(topic, "json", schema)
            messages = [(_ns(r[META_PREFIX + "t_recorded"]), channel, r) for r in records]
            streams.append(sorted(messages, key=lambda m: m[0]))  # merged in time order below
            if progress:
                progress(i, len(topics), topic, len(records))
        for log_time, channel, record in heapq.merge(*streams, key=lambda m: m[0]):
            sent = record[META_PREFIX + "t_sent"]
            data = json.dumps(message_of(record), default=jsonable).encode()
            writer.add_message(channel, log_time, data, _ns(sent) if sent is not None else log_time)
        writer.finish()
    return path


def _ns(t: float) -> int:
    return round(t * 1e9)


def schema_of(topic: str, records: list[dict[str, Any]]) -> dict[str, Any]:
    """The JSON Schema of a topic's messages in the export: each field by its column kind."""
    fields = list(dict.fromkeys(k for r in records for k in r if not k.startswith(META_PREFIX)))
    properties = {name: KIND_SCHEMAS[column(name, [r.get(name) for r in records]).kind] for name in fields}
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": topic,
        "type": "object",
        "properties": {**properties, "_ether": META_SCHEMA},
    }


def message_of(record: dict[str, Any]) -> dict[str, Any]:
    """A record as one exported message: its fields, then ``_ether``."""
    fields = {k: v for k, v in record.items() if not k.startswith(META_PREFIX)}
    meta = {k.removeprefix(META_PREFIX): v for k, v in record.items() if k.startswith(META_PREFIX)}
    return {**fields, "_ether": meta}
