import assert from "node:assert/strict";
import { applyMask } from "../../lib/mod.ts";

Deno.test("masks: applyMask() blanks the lung field (border-only) or the border (lung-only)", () => {
  const size = 20;
  const ones = () => new Float32Array(size * size * 3).fill(1);
  const at = (px: Float32Array, x: number, y: number) => px[(y * size + x) * 3];
  const border = applyMask(ones(), size, "border-only");
  const lung = applyMask(ones(), size, "lung-only");
  assert.equal(at(border, 10, 10), 0, "centre blanked when only the border is shown");
  assert.equal(at(border, 1, 1), 1);
  assert.equal(at(lung, 10, 10), 1);
  assert.equal(at(lung, 1, 1), 0, "corner blanked when only the lung field is shown");
  assert.equal(at(lung, 19, 10), 0);
  assert.deepEqual(applyMask(ones(), size, "none"), ones());
});
