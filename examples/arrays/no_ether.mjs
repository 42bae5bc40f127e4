// Read and write Ether's array messages without Ether: mqtt.js and the platform's TypedArrays.
const MAGIC = [0x89, 0x45, 0x54, 0x48]; // "\x89ETH"
const TYPED = { "<f8": Float64Array, "<f4": Float32Array, "<i4": Int32Array, "<u4": Uint32Array,
  "<i2": Int16Array, "<u2": Uint16Array, "|i1": Int8Array, "|u1": Uint8Array, "|b1": Uint8Array,
  "<i8": BigInt64Array, "<u8": BigUint64Array, "<c16": Float64Array, "<c8": Float32Array };

export function decode(message) { // a Buffer or Uint8Array -> plain values, arrays as {dtype, shape, order, data}
  const bytes = new Uint8Array(message); // a copy at offset 0: its buffer is 8-byte aligned
  if (!MAGIC.every((b, i) => bytes[i] === b)) return JSON.parse(new TextDecoder().decode(bytes));
  const view = new DataView(bytes.buffer);
  if (view.getUint8(4) !== 1) throw new Error(`Ether binary encoding version ${view.getUint8(4)}`);
  const n = view.getUint32(8, true);
  const start = 12 + n + ((8 - ((12 + n) % 8)) % 8);
  const fill = (v) => {
    if (v && typeof v === "object" && !Array.isArray(v)) {
      const keys = Object.keys(v);
      if (keys.length === 1 && keys[0] === "$array") {
        const a = v.$array, Typed = TYPED[a.dtype];
        if (!Typed) throw new Error(`no TypedArray for dtype ${a.dtype}`); // big-endian: use DataView
        const data = new Typed(bytes.buffer, start + a.offset, a.nbytes / Typed.BYTES_PER_ELEMENT);
        return { dtype: a.dtype, shape: a.shape, order: a.order, data }; // complex: re, im interleaved
      }
      if (keys.length === 1 && keys[0] === "$bytes")
        return bytes.subarray(start + v.$bytes.offset, start + v.$bytes.offset + v.$bytes.nbytes);
      return Object.fromEntries(keys.map((k) => [k, fill(v[k])]));
    }
    return Array.isArray(v) ? v.map(fill) : v;
  };
  return fill(JSON.parse(new TextDecoder().decode(bytes.subarray(12, 12 + n))));
}

export function encode(fields, shapes = {}) { // top-level TypedArrays become arrays (C order), shapes[name]
  const header = {}, parts = [];
  let size = 0;
  for (const [name, v] of Object.entries(fields)) {
    if (!ArrayBuffer.isView(v)) { header[name] = v; continue; }
    const dtype = Object.keys(TYPED).find((d) => TYPED[d] === v.constructor);
    const shape = shapes[name] ?? [v.length];
    header[name] = { $array: { dtype, shape, order: "C", offset: size, nbytes: v.byteLength } };
    parts.push([size, new Uint8Array(v.buffer, v.byteOffset, v.byteLength)]);
    size += v.byteLength + ((8 - (v.byteLength % 8)) % 8);
  }
  const text = new TextEncoder().encode(JSON.stringify(header));
  const start = 12 + text.length + ((8 - ((12 + text.length) % 8)) % 8);
  const out = new Uint8Array(start + size);
  out.set(MAGIC, 0);
  out[4] = 1;
  new DataView(out.buffer).setUint32(8, text.length, true);
  out.set(text, 12);
  for (const [offset, part] of parts) out.set(part, start + offset);
  return out;
}

if (import.meta.url === `file://${process.argv[1]}`) { // node no_ether.mjs: send one block, print what arrives
  const mqtt = (await import("mqtt")).default;
  const client = mqtt.connect("mqtt://127.0.0.1:1883");
  client.on("message", (topic, payload) => console.log(topic, decode(payload)));
  client.subscribe("ephys");
  const data = new Int16Array(300 * 32); // 300 samples x 32 channels, C order
  const block = encode({ data, rate: 30000, t0: 1.8e9 }, { data: [300, 32] });
  client.publish("ephys", Buffer.from(block), { qos: 1 });
}
