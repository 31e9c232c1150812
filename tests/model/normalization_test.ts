import assert from "node:assert/strict";
import {
  initBackend,
  KERAS_NORMALIZATION,
  normalize,
  tf,
  TORCHVISION_IMAGENET_NORMALIZATION,
} from "../../lib/mod.ts";

await initBackend();

Deno.test("normalization: normalize() maps 0..255 to Keras's [-1, 1] and to ImageNet mean/std", async () => {
  const x = tf.tensor4d([0, 127.5, 255, 255, 0, 51], [1, 1, 2, 3]);
  const keras = normalize(x, KERAS_NORMALIZATION);
  const expected = [0, 127.5, 255, 255, 0, 51].map((v) => v / 127.5 - 1);
  (await keras.data()).forEach((v, i) => assert.ok(Math.abs(v - expected[i]) < 1e-6));
  const imagenet = normalize(x, TORCHVISION_IMAGENET_NORMALIZATION);
  const { mean, std } = TORCHVISION_IMAGENET_NORMALIZATION;
  (await imagenet.data()).forEach((v, i) => {
    const c = i % 3;
    assert.ok(Math.abs(v - ([0, 127.5, 255, 255, 0, 51][i] / 255 - mean[c]) / std[c]) < 1e-5);
  });
  tf.dispose([x, keras, imagenet]);
});
