import assert from "node:assert/strict";
import { initBackend, tf } from "../lib/backend.ts";
import { buildMobileNetV3Large } from "../lib/model.ts";
import { KERAS_NORMALIZATION } from "../lib/weights.ts";
import { leanGradients, minimizeLean } from "../lib/gradients.ts";
import { createStepEngine } from "../lib/train.ts";

await initBackend();

Deno.test("leak: leanGradients() gives tf.variableGrads' gradients and leaves only its results behind", async () => {
  const model = buildMobileNetV3Large({
    imageSize: 64,
    numClasses: 3,
    normalization: KERAS_NORMALIZATION,
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

Deno.test("leak: the native fused BatchNorm matches TF.js's composition (output, gradients, moving statistics)", async () => {
  const { batchNormTraining, compositeBatchNormTraining } = await import("../lib/native_ops.ts");
  const x = tf.randomNormal([2, 5, 5, 4], 1, 2, "float32", 1) as tf.Tensor4D;
  const gamma = tf.tensor1d([1, 0.5, 2, 1.5]);
  const beta = tf.tensor1d([0, 0.1, -0.2, 0.3]);
  const moving = { mean: tf.tensor1d([0.1, 0, 0, 0]), variance: tf.tensor1d([1, 2, 1, 1]) };
  const dy = tf.randomNormal([2, 5, 5, 4], 0, 1, "float32", 2);
  const run = (impl: typeof batchNormTraining) => {
    let stats: number[][] = [];
    const keepStats = (m: { mean: tf.Tensor; variance: tf.Tensor }) => {
      stats = [Array.from(m.mean.dataSync()), Array.from(m.variance.dataSync())];
    };
    const f = (a: tf.Tensor, g: tf.Tensor, b: tf.Tensor) => {
      const y = impl(
        a as tf.Tensor4D,
        g as tf.Tensor1D,
        b as tf.Tensor1D,
        moving,
        0.9,
        1e-3,
        keepStats,
      );
      return tf.sum(tf.mul(y, dy));
    };
    const grads = tf.grads(f)([x, gamma, beta]);
    const values = grads.map((g) => Array.from(g.dataSync()));
    tf.dispose(grads);
    return { grads: values, stats };
  };
  const before = tf.memory().numTensors;
  const native = run(batchNormTraining);
  const composite = run(compositeBatchNormTraining);
  const close = (a: number[], b: number[], what: string) =>
    a.forEach((v, i) =>
      assert.ok(
        Math.abs(v - b[i]) <= 1e-3 * Math.max(1, Math.abs(b[i])),
        `${what}[${i}]: ${v} vs ${b[i]}`,
      )
    );
  ["dx", "dgamma", "dbeta"].forEach((name, i) => close(native.grads[i], composite.grads[i], name));
  close(native.stats[0], composite.stats[0], "moving mean");
  close(native.stats[1], composite.stats[1], "moving variance");
  assert.equal(tf.memory().numTensors, before, "nothing left behind");
  tf.dispose([x, gamma, beta, moving.mean, moving.variance, dy]);
});

Deno.test({
  name:
    "leak: a graph-mode training step computes the eager step (loss, weights, moving statistics, momentum)",
  // Graph mode exists only with the native backend, which CI runs.
  ignore: tf.getBackend() !== "tensorflow",
  fn: async () => {
    const make = () =>
      buildMobileNetV3Large({
        imageSize: 64,
        numClasses: 3,
        normalization: KERAS_NORMALIZATION,
        seed: 3,
        batchNormMomentum: 0.9,
        dropout: 0.5,
      });
    const [a, b] = [make(), make()];
    const before = a.weights.map((w) => w.read().dataSync().slice());
    const x = tf.randomUniform([6, 64, 64, 3], 0, 255, "float32", 5) as tf.Tensor4D;
    const labels = tf.tensor1d([0, 1, 2, 0, 1, 2], "int32");
    const opts = { learningRate: 0.01, momentum: 0.9, numClasses: 3 };
    const eager = await createStepEngine(a, opts, "eager");
    const graph = await createStepEngine(b, opts, "graph");
    assert.equal(graph.kind, "graph");
    // Two steps, the second with learning rate 0: it moves only the momentum buffers
    // (m·g₀ + g₁) and the BatchNorm statistics. More steps that move the weights drift apart by
    // float rounding, amplified by training (the eager step does the same for a 1e-6 nudge).
    for (const [step, lr] of [[0, opts.learningRate], [1, 0]]) {
      eager.setLearningRate(lr);
      graph.setLearningRate(lr);
      const re = await eager.step(x, labels, step);
      const tensorsBefore = tf.memory().numTensors;
      const rg = await graph.step(x, labels, step);
      assert.equal(tf.memory().numTensors, tensorsBefore, "a graph step leaves no tensor behind");
      assert.ok(
        Math.abs(re.loss - rg.loss) <= 1e-4 * Math.abs(re.loss),
        `step ${step}: loss ${re.loss} vs ${rg.loss}`,
      );
      assert.deepEqual(Array.from(rg.predicted), Array.from(re.predicted));
    }
    graph.syncToModel();
    // Every weight moved the same way: the difference is float rounding, far below the update.
    let moved = 0;
    a.weights.forEach((w, i) => {
      const [wa, wb] = [w.read().dataSync(), b.weights[i].read().dataSync()];
      let diff = 0, update = 0, scale = 0;
      wa.forEach((v, j) => {
        diff = Math.max(diff, Math.abs(v - wb[j]));
        update = Math.max(update, Math.abs(v - before[i][j]));
        scale = Math.max(scale, Math.abs(v));
      });
      if (update > 1e-4 * scale) moved++;
      assert.ok(
        diff <= 2e-3 * update + 1e-6 * Math.max(scale, 1),
        `${w.name}: differs by ${diff}, moved ${update}`,
      );
    });
    assert.ok(moved > a.trainableWeights.length / 2, `only ${moved} weights moved`);
    // The momentum buffers agree too, under the names TF.js's optimizer gives them.
    const [se, sg] = [await eager.optimizerState(), await graph.optimizerState()];
    const names = (m: tf.LayersModel) => [
      "iter",
      ...m.trainableWeights.map((w) => `${(w.read() as tf.Variable).name}/momentum`),
    ];
    assert.deepEqual(se.specs.map((s) => s.name), names(a));
    assert.deepEqual(sg.specs.map((s) => s.name), names(b));
    const [me, mg] = [se, sg].map((s) => tf.io.decodeWeights(s.data, s.specs));
    for (const [k, name] of names(a).entries()) {
      if (name === "iter") continue;
      const [va, vb] = [
        me[name].dataSync() as Float32Array,
        mg[names(b)[k]].dataSync() as Float32Array,
      ];
      const scale = va.reduce((m, v) => Math.max(m, Math.abs(v)), 0);
      va.forEach((v, j) => assert.ok(Math.abs(v - vb[j]) <= 1e-3 * scale + 1e-5, name));
    }
    tf.dispose([...Object.values(me), ...Object.values(mg), x, labels]);
    eager.dispose();
    graph.dispose();
    a.dispose();
    b.dispose();
  },
});
