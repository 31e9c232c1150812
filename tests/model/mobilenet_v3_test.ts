import assert from "node:assert/strict";
import {
  buildMobileNetV3Large,
  describeArchitecture,
  initBackend,
  KERAS_NORMALIZATION,
  tf,
} from "../../lib/mod.ts";
import { outputs, pixels, small } from "../_models.ts";

await initBackend();

Deno.test("mobilenet_v3: the architecture has Keras's 5,507,432 parameters with the 1000-way head", () => {
  const model = buildMobileNetV3Large({
    imageSize: 224,
    numClasses: 1000,
    normalization: KERAS_NORMALIZATION,
  });
  assert.equal(model.countParams(), 5_507_432);
  const rows = describeArchitecture(model);
  assert.equal(rows.length, 1 + 15 + 1 + 1);
  assert.equal(rows.reduce((s, r) => s + r.parameters, 0), 5_507_432);
  assert.deepEqual(rows.slice(1, 16).map((r) => r.kernel), [
    ..."333555333333555".split("").map((k) => `${k}×${k} dw`),
  ]);
  assert.deepEqual(rows.slice(1, 16).map((r) => r.stride), [
    1,
    2,
    1,
    2,
    1,
    1,
    2,
    1,
    1,
    1,
    1,
    1,
    2,
    1,
    1,
  ]);
  assert.equal(rows.at(-1)!.outputShape, "[1000]");
  model.dispose();
});

Deno.test("mobilenet_v3: a model built twice with one seed is identical, another seed differs", async () => {
  const x = pixels();
  const [a, b, c] = [small(3, 4), small(3, 4), small(3, 5)];
  const [ya, yb, yc] = [await outputs(a, x), await outputs(b, x), await outputs(c, x)];
  assert.deepEqual(ya, yb);
  assert.notDeepEqual(ya, yc);
  tf.dispose([x]);
  [a, b, c].forEach((m) => m.dispose());
});
