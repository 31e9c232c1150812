/**
 * The few pieces of the protocol-buffer wire format needed to write a TensorFlow SavedModel
 * (lib/saved_model.ts): varints, length-delimited fields and 32-bit floats. Writing only, no
 * schema: each message is built from its fields in order, as bytes.
 * Wire format: https://protobuf.dev/programming-guides/encoding/
 */

/** Bytes of one encoded field (or several, concatenated). */
export type Bytes = Uint8Array;

const encoder = new TextEncoder();

/** Base-128 varint; negative numbers as 64-bit two's complement (ten bytes), as int64 needs. */
export function varint(value: number | bigint): Bytes {
  let v = BigInt.asUintN(64, BigInt(value));
  const out: number[] = [];
  while (v >= 0x80n) {
    out.push(Number(v & 0x7fn) | 0x80);
    v >>= 7n;
  }
  out.push(Number(v));
  return Uint8Array.from(out);
}

/** Concatenate byte arrays. */
export function concat(parts: Bytes[]): Bytes {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let offset = 0;
  for (const p of parts) {
    out.set(p, offset);
    offset += p.length;
  }
  return out;
}

function key(field: number, wireType: 0 | 2 | 5): Bytes {
  return varint((field << 3) | wireType);
}

/** An int64, int32, enum or bool field. */
export function intField(field: number, value: number | bigint | boolean): Bytes {
  return concat([key(field, 0), varint(typeof value === "boolean" ? Number(value) : value)]);
}

/** A float field (fixed 32 bits, little-endian). */
export function floatField(field: number, value: number): Bytes {
  const bytes = new Uint8Array(4);
  new DataView(bytes.buffer).setFloat32(0, value, true);
  return concat([key(field, 5), bytes]);
}

/** A bytes field, or an embedded message given as its encoded fields. */
export function bytesField(field: number, value: Bytes | Bytes[]): Bytes {
  const body = Array.isArray(value) ? concat(value) : value;
  return concat([key(field, 2), varint(body.length), body]);
}

/** A string field (UTF-8). */
export function stringField(field: number, value: string): Bytes {
  return bytesField(field, encoder.encode(value));
}

/** A packed repeated int64/int32 field. */
export function packedIntsField(field: number, values: number[]): Bytes {
  return bytesField(field, values.map((v) => varint(v)));
}

/** One entry of a `map<string, Message>` field. */
export function mapEntry(field: number, name: string, value: Bytes[]): Bytes {
  return bytesField(field, [stringField(1, name), bytesField(2, value)]);
}
