"""Read and write Ether's array messages without Ether: paho-mqtt, numpy and the standard library."""

import json
import struct

import numpy as np


def decode(raw: bytes):
    """A message as Python values: plain JSON, or Ether's binary encoding (arrays, bytes)."""
    if raw[:4] != b"\x89ETH":
        return json.loads(raw)
    version, n = raw[4], struct.unpack_from("<I", raw, 8)[0]
    assert version == 1, f"Ether binary encoding version {version}"
    start = 12 + n + (-(12 + n) % 8)  # the data section begins 8-byte aligned

    def fill(v):
        if isinstance(v, dict) and list(v) == ["$array"]:
            a = v["$array"]
            count = a["nbytes"] // np.dtype(a["dtype"]).itemsize
            flat = np.frombuffer(raw, a["dtype"], count, start + a["offset"])
            return flat.reshape(a["shape"], order=a["order"])
        if isinstance(v, dict) and list(v) == ["$bytes"]:
            b = v["$bytes"]
            return raw[start + b["offset"] : start + b["offset"] + b["nbytes"]]
        if isinstance(v, dict):
            return {k: fill(x) for k, x in v.items()}
        return [fill(x) for x in v] if isinstance(v, list) else v

    return fill(json.loads(raw[12 : 12 + n]))


def encode(fields: dict) -> bytes:
    """An object whose top-level values may be numpy arrays or bytes, in Ether's binary encoding."""
    header, data = {}, b""
    for name, v in fields.items():
        if isinstance(v, (bytes, np.ndarray)):
            buf = v if isinstance(v, bytes) else np.ascontiguousarray(v).tobytes()
            ref = {"offset": len(data), "nbytes": len(buf)}
            if isinstance(v, bytes):
                header[name] = {"$bytes": ref}
            else:
                header[name] = {"$array": {"dtype": v.dtype.str, "shape": list(v.shape), "order": "C", **ref}}
            data += buf + bytes(-len(buf) % 8)
        else:
            header[name] = v
    text = json.dumps(header).encode()
    head = b"\x89ETH\x01\0\0\0" + struct.pack("<I", len(text)) + text
    return head + bytes(-len(head) % 8) + data


if __name__ == "__main__":  # publish one block to an Ether session's broker, print what arrives
    import paho.mqtt.client as mqtt

    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
    client.on_message = lambda c, u, m: print(m.topic, decode(m.payload))
    client.connect("127.0.0.1", 1883)
    client.subscribe("ephys")
    block = np.zeros((300, 32), dtype=np.int16)
    client.publish("ephys", encode({"data": block, "rate": 30000.0, "t0": 1.8e9}), qos=1)
    client.loop_forever()
