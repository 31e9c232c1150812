/**
 * The few pieces of the protocol-buffer wire format the graph engines need: writing GraphDefs and
 * session configs (varints, length-delimited fields, 32-bit floats; each message built from its
 * fields in order, as bytes), and reading the fields of a message back (the RunMetadata a traced
 * step returns). No schema: callers know their field numbers.
 * Wire format: https://protobuf.dev/programming-guides/encoding/
 */

/**
 * Bytes of one encoded field (or several): an array of bytes, or a list of pieces written one
 * after another. Why pieces: a length-delimited field wraps its body, and copying the body into
 * each wrapper copied a GraphDef's weights once per level of nesting (tensor, attribute, map
 * entry, node: 16 MB of weights cost ~130 MB of garbage). `concat` copies each byte once.
 */
export type Bytes = Uint8Array | readonly Bytes[];

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

/** How many bytes `b` holds. */
export function byteLength(b: Bytes): number {
  return b instanceof Uint8Array ? b.length : b.reduce((n, p) => n + byteLength(p), 0);
}

/** The pieces as one array of bytes (each byte copied once). */
export function concat(parts: readonly Bytes[]): Uint8Array {
  const out = new Uint8Array(byteLength(parts));
  const write = (b: Bytes, offset: number): number => {
    if (b instanceof Uint8Array) {
      out.set(b, offset);
      return offset + b.length;
    }
    for (const p of b) offset = write(p, offset);
    return offset;
  };
  write(parts, 0);
  return out;
}

function key(field: number, wireType: 0 | 2 | 5): Bytes {
  return varint((field << 3) | wireType);
}

/** An int64, int32, enum or bool field. */
export function intField(field: number, value: number | bigint | boolean): Uint8Array {
  return concat([key(field, 0), varint(typeof value === "boolean" ? Number(value) : value)]);
}

/** A float field (fixed 32 bits, little-endian). */
export function floatField(field: number, value: number): Uint8Array {
  const bytes = new Uint8Array(4);
  new DataView(bytes.buffer).setFloat32(0, value, true);
  return concat([key(field, 5), bytes]);
}

/**
 * A bytes field, or an embedded message given as its encoded fields: as pieces, the body not
 * copied (`concat` the outermost message once).
 */
export function bytesField(field: number, value: Bytes): Bytes[] {
  return [key(field, 2), varint(byteLength(value)), value];
}

/** A string field (UTF-8). */
export function stringField(field: number, value: string): Uint8Array {
  return concat(bytesField(field, encoder.encode(value)));
}

/** A packed repeated int64/int32 field. */
export function packedIntsField(field: number, values: number[]): Uint8Array {
  return concat(bytesField(field, values.map((v) => varint(v))));
}

/** One entry of a `map<string, Message>` field. */
export function mapEntry(field: number, name: string, value: Bytes[]): Bytes[] {
  return bytesField(field, [stringField(1, name), bytesField(2, value)]);
}

/** One field read from a message: varints as bigint, length-delimited fields as bytes. */
export interface WireField {
  field: number;
  value: bigint | Uint8Array;
}

/** The fields of one encoded message, in order (fixed 32/64-bit fields as their raw bytes). */
export function readFields(bytes: Uint8Array): WireField[] {
  const fields: WireField[] = [];
  let pos = 0;
  const readVarint = (): bigint => {
    let result = 0n, shift = 0n;
    for (;;) {
      if (pos >= bytes.length) throw new Error("protobuf: truncated varint");
      const b = bytes[pos++];
      result |= BigInt(b & 0x7f) << shift;
      if (b < 0x80) return result;
      shift += 7n;
    }
  };
  while (pos < bytes.length) {
    const key = Number(readVarint());
    const field = key >>> 3, wireType = key & 7;
    const take = (n: number) => {
      if (pos + n > bytes.length) throw new Error("protobuf: truncated field");
      const value = bytes.subarray(pos, pos + n);
      pos += n;
      return value;
    };
    if (wireType === 0) fields.push({ field, value: readVarint() });
    else if (wireType === 2) fields.push({ field, value: take(Number(readVarint())) });
    else if (wireType === 1) fields.push({ field, value: take(8) });
    else if (wireType === 5) fields.push({ field, value: take(4) });
    else throw new Error(`protobuf: unsupported wire type ${wireType}`);
  }
  return fields;
}
