import assert from "node:assert/strict";
import {
  floatField,
  intField,
  packedIntsField,
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
