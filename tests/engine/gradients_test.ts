import assert from "node:assert/strict";
import { buildMobileNetV3Large, initBackend, KERAS_NORMALIZATION, tf } from "../../lib/mod.ts";
import { leanGradients, minimizeLean } from "../../lib/engine/gradients.ts";

await initBackend();

Deno.test("gradients: leanGradients() gives tf.variableGrads' gradients and leaves only its results behind", async () => {
  const model = buildMobileNetV3Large({
    imageSize: 64,
    numClasses: 3,
    normalization: KERAS_NORMALIZATION,
    convention: "keras",
    seed: 2,
    dropout: 0,
  });
  const variables = model.trainableWeights.map((w) => w.read() as tf.Variable);
  const x = tf.randomUniform([2, 64, 64, 3], 0, 255, "float32", 5);
  const y = tf.tidy(() => tf.oneHot(tf.tensor1d([0, 2], "int32"), 3));
  // BatchNorm in training mode updates its moving statistics in the forward pass; compare
  // gradients only (the statistics move the same way in both).
  const loss = () =>
    tf.losses.softmaxCrossEntropy(y, model.apply(x, { training: true }) as tf.Tensor) as tf.Scalar;

  const reference = tf.variableGrads(loss, variables);
  const before = tf.memory().numTensors;
  const lean = leanGradients(loss, variables);
  assert.equal(
    tf.memory().numTensors,
    before + 1 + variables.length,
    "only the loss and the gradients remain",
  );
  assert.ok(Math.abs((await lean.value.data())[0] - (await reference.value.data())[0]) < 1e-6);
  for (const [i, v] of variables.entries()) {
    const [a, b] = [await lean.grads[i].data(), await reference.grads[v.name].data()];
    let diff = 0, scale = 1e-12;
    for (let j = 0; j < a.length; j++) {
      diff = Math.max(diff, Math.abs(a[j] - b[j]));
      scale = Math.max(scale, Math.abs(b[j]));
    }
    assert.ok(diff <= 1e-5 * scale, `${v.name}: max difference ${diff} (scale ${scale})`);
  }
  tf.dispose([lean.value, ...lean.grads, reference.value, ...Object.values(reference.grads)]);

  // A training step with it changes the weights and leaks nothing.
  const optimizer = tf.train.momentum(0.01, 0.9);
  const w0 = variables[0].dataSync().slice();
  minimizeLean(optimizer, loss, variables).dispose(); // the first step creates the momentum buffers
  const afterFirst = tf.memory().numTensors;
  minimizeLean(optimizer, loss, variables).dispose();
  assert.equal(tf.memory().numTensors, afterFirst);
  assert.notDeepEqual(variables[0].dataSync(), w0);
  optimizer.dispose();
  (optimizer as unknown as { c?: tf.Tensor }).c?.dispose();
  tf.dispose([x, y]);
  model.dispose();
});
