import assert from "node:assert/strict";
import {
  bytesField,
  concat,
  floatField,
  intField,
  packedIntsField,
  readFields,
  stringField,
  varint,
} from "../../lib/engine/protobuf.ts";

Deno.test("protobuf: the GraphDef writer's encoding matches the wire format's examples", () => {
  // Examples from protobuf.dev's encoding guide.
  assert.deepEqual([...varint(1)], [0x01]);
  assert.deepEqual([...varint(150)], [0x96, 0x01]);
  assert.deepEqual([...intField(1, 150)], [0x08, 0x96, 0x01]);
  assert.deepEqual(
    [...stringField(2, "testing")],
    [0x12, 0x07, ..."testing"].map((c) => typeof c === "number" ? c : c.charCodeAt(0)),
  );
  assert.deepEqual([...packedIntsField(4, [3, 270, 86942])], [
    0x22,
    0x06,
    0x03,
    0x8e,
    0x02,
    0x9e,
    0xa7,
    0x05,
  ]);
  // int64 −1 (an unknown dimension) is ten bytes of two's complement.
  assert.deepEqual([...varint(-1)], [...Array(9).fill(0xff), 0x01]);
  assert.deepEqual([...floatField(4, 1)], [0x25, 0x00, 0x00, 0x80, 0x3f]);
});

Deno.test("protobuf: the reader gives back what the writer wrote, nested messages included", () => {
  const bytes = concat([
    intField(1, 150),
    stringField(2, "testing"),
    bytesField(3, [intField(1, -1), floatField(2, 1.5)]),
  ]);
  const fields = readFields(bytes);
  assert.deepEqual(fields.map((f) => f.field), [1, 2, 3]);
  assert.equal(fields[0].value, 150n);
  assert.equal(new TextDecoder().decode(fields[1].value as Uint8Array), "testing");
  const inner = readFields(fields[2].value as Uint8Array);
  assert.equal(BigInt.asIntN(64, inner[0].value as bigint), -1n);
  assert.equal(
    new DataView((inner[1].value as Uint8Array).slice().buffer).getFloat32(0, true),
    1.5,
  );
  assert.throws(() => readFields(bytes.subarray(0, bytes.length - 1)), /truncated/);
});

Deno.test("protobuf: a message nested three deep is written with each level's length right", () => {
  const payload = Uint8Array.from({ length: 300 }, (_, i) => i % 251);
  const bytes = concat(bytesField(1, [intField(1, 7), bytesField(2, [bytesField(3, payload)])]));
  const [outer] = readFields(bytes);
  const [seven, middle] = readFields(outer.value as Uint8Array);
  assert.equal(seven.value, 7n);
  const [inner] = readFields(middle.value as Uint8Array);
  assert.equal(inner.field, 3);
  assert.deepEqual([...(inner.value as Uint8Array)], [...payload]);
  // 300 bytes need a two-byte length; the levels above count it.
  assert.equal(bytes.length, 1 + 2 + 2 + 1 + 2 + 303);
});
