import assert from "node:assert/strict";
import { initBackend, tf } from "../lib/backend.ts";

Deno.test("backend: initBackend() makes the native tensorflow backend live", async () => {
  const info = await initBackend();
  assert.equal(
    info.backend,
    "tensorflow",
    `native backend not live (${info.nativeError}); run \`deno task setup\``,
  );
  assert.equal(tf.getBackend(), "tensorflow");
  assert.equal(info.package, "@tensorflow/tfjs-node");
  assert.match(info.versions["tfjs-node"], /^4\.22\./);
  assert.match(info.versions.libtensorflow, /^\d+\.\d+/);
});

Deno.test("backend: initBackend() initialises once per process: every call returns the same promise and info", async () => {
  const [p1, p2] = [initBackend(), initBackend()];
  assert.strictEqual(p1, p2, "the same promise, not a second initialisation");
  assert.strictEqual(await p1, await initBackend({ quiet: true }));
});

Deno.test("backend: a tiny conv model trains on the live backend and its loss falls", async () => {
  await initBackend();
  const before = tf.memory().numTensors;
  // Two classes of 8x8 images: bright left half vs bright right half.
  const n = 32;
  const xs = tf.tidy(() => {
    const left = tf.concat([tf.ones([n / 2, 8, 4, 1]), tf.zeros([n / 2, 8, 4, 1])], 2);
    const right = tf.reverse(left, 2);
    return tf.concat([left, right]).add(tf.randomNormal([n, 8, 8, 1], 0, 0.1, "float32", 1));
  });
  const ys = tf.tidy(() =>
    tf.oneHot(tf.tensor1d([...Array(n)].map((_, i) => (i < n / 2 ? 0 : 1)), "int32"), 2)
  );
  const model = tf.sequential({
    layers: [
      tf.layers.conv2d({
        inputShape: [8, 8, 1],
        filters: 4,
        kernelSize: 3,
        activation: "relu",
        kernelInitializer: tf.initializers.glorotUniform({ seed: 1 }),
      }),
      tf.layers.flatten(),
      tf.layers.dense({ units: 2, kernelInitializer: tf.initializers.glorotUniform({ seed: 2 }) }),
    ],
  });
  const optimizer = tf.train.sgd(0.1);
  const losses: number[] = [];
  for (let step = 0; step < 20; step++) {
    const loss = optimizer.minimize(
      () => tf.losses.softmaxCrossEntropy(ys, model.apply(xs) as tf.Tensor) as tf.Scalar,
      true,
    )!;
    losses.push((await loss.data())[0]);
    loss.dispose();
  }
  assert.ok(
    losses.at(-1)! < 0.5 * losses[0],
    `loss did not fall: ${losses.map((l) => l.toFixed(3)).join(" ")}`,
  );
  tf.dispose([xs, ys]);
  model.dispose();
  optimizer.dispose();
  assert.equal(tf.memory().numTensors, before, "tensors leaked");
});
