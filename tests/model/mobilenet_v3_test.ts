import assert from "node:assert/strict";
import {
  buildMobileNetV3Large,
  conventionOf,
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
    convention: "keras",
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

Deno.test("mobilenet_v3: torchvision's conventions pad (k − 1) / 2 on every side before each stride-2 layer and initialise as torchvision does; Keras's pad (k//2 − 1, k//2)", () => {
  const build = (convention: "torchvision" | "keras") =>
    buildMobileNetV3Large({
      imageSize: 446,
      numClasses: 3,
      normalization: KERAS_NORMALIZATION,
      convention,
      seed: 1,
    });
  const torch = build("torchvision"), keras = build("keras");
  const pads = (m: tf.LayersModel) =>
    m.layers.filter((l) => l.getClassName() === "ZeroPadding2D").map((l) => [
      l.name,
      (l as unknown as { padding: number[][] }).padding[0],
    ]);
  assert.deepEqual(pads(torch), [
    ["conv_pad", [1, 1]],
    ["expanded_conv_1_depthwise_pad", [1, 1]],
    ["expanded_conv_3_depthwise_pad", [2, 2]],
    ["expanded_conv_6_depthwise_pad", [1, 1]],
    ["expanded_conv_12_depthwise_pad", [2, 2]],
  ]);
  assert.deepEqual(pads(keras), [
    ["expanded_conv_1_depthwise_pad", [0, 1]],
    ["expanded_conv_3_depthwise_pad", [1, 2]],
    ["expanded_conv_6_depthwise_pad", [0, 1]],
    ["expanded_conv_12_depthwise_pad", [1, 2]],
  ]);
  // Same output sizes and parameters either way.
  assert.deepEqual(torch.outputs[0].shape, keras.outputs[0].shape);
  assert.equal(torch.countParams(), keras.countParams());
  assert.equal(conventionOf(torch), "torchvision");
  assert.equal(conventionOf(keras), "keras");
  // torchvision: Kaiming normal with fan out (conv_1: 960 outputs × 1 × 1 → sd √(2/960)).
  const sd = (m: tf.LayersModel, layer: string) => {
    const v = m.getLayer(layer).getWeights()[0].dataSync() as Float32Array;
    const mean = v.reduce((a, b) => a + b, 0) / v.length;
    return Math.sqrt(v.reduce((a, b) => a + (b - mean) ** 2, 0) / v.length);
  };
  assert.ok(
    Math.abs(sd(torch, "conv_1") / Math.sqrt(2 / 960) - 1) < 0.02,
    `${sd(torch, "conv_1")}`,
  );
  assert.ok(Math.abs(sd(torch, "conv_2") / 0.01 - 1) < 0.02, "the 1280-unit layer: N(0, 0.01)");
  torch.dispose();
  keras.dispose();
});
