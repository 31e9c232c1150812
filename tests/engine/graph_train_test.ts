import assert from "node:assert/strict";
import {
  buildMobileNetV3Large,
  createStepEngine,
  initBackend,
  KERAS_NORMALIZATION,
  liveSessions,
  tf,
} from "../../lib/mod.ts";
import { smallForTraining } from "../_models.ts";

await initBackend();

for (const convention of ["torchvision", "keras"] as const) {
  Deno.test({
    name:
      `graph_train: one graph step computes the eager step (loss, predictions, every weight, BatchNorm statistics, momentum), ${convention} conventions`,
    // Graph mode exists only with the native backend, which CI runs.
    ignore: tf.getBackend() !== "tensorflow",
    fn: async () => {
      const [a, b] = [smallForTraining(convention), smallForTraining(convention)];
      const before = a.weights.map((w) => w.read().dataSync().slice());
      const x = tf.randomUniform([6, 64, 64, 3], 0, 255, "float32", 5) as tf.Tensor4D;
      const labels = tf.tensor1d([0, 1, 2, 0, 1, 2], "int32");
      const opts = { learningRate: 0.01, momentum: 0.9, numClasses: 3 };
      const eager = await createStepEngine(a, { ...opts, engine: "eager" });
      // TensorFlow's own kernels: the reference graph (kernels_test.ts compares the fused ones).
      const graph = await createStepEngine(b, { ...opts, engine: "graph", kernels: "standard" });
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
      // No sync call: reading the graph engine's model gives the session's current weights.
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
}

const tinyModel = (seed = 3) =>
  buildMobileNetV3Large({
    imageSize: 64,
    numClasses: 3,
    normalization: KERAS_NORMALIZATION,
    convention: "keras",
    seed,
    batchNormMomentum: 0.9,
  });

Deno.test({
  name:
    "graph_train: while the graph engine trains, every read of the model sees the session's current weights; writes are refused",
  ignore: tf.getBackend() !== "tensorflow",
  fn: async () => {
    const model = tinyModel();
    const x = tf.randomUniform([4, 64, 64, 3], 0, 255, "float32", 5) as tf.Tensor4D;
    const labels = tf.tensor1d([0, 1, 2, 0], "int32");
    const engine = await createStepEngine(model, {
      learningRate: 0.05,
      momentum: 0.9,
      numClasses: 3,
      engine: "graph",
    });
    const predict = () => tf.tidy(() => Array.from((model.predict(x) as tf.Tensor).dataSync()));
    const kernel = () => Array.from(model.getLayer("conv").getWeights()[0].dataSync());
    const before = { predict: predict(), kernel: kernel() };
    await engine.step(x, labels, 0);
    // Without any sync call, a read after the step sees the step's weights...
    const after = { predict: predict(), kernel: kernel() };
    assert.notDeepEqual(after.kernel, before.kernel, "the kernel read after a step has changed");
    assert.notDeepEqual(after.predict, before.predict, "predict uses the new weights");
    // ...and they are the session's: another step moves them again, and a read follows.
    await engine.step(x, labels, 1);
    assert.notDeepEqual(kernel(), after.kernel);
    // Writing the model's weights while the engine holds them is refused.
    const zeros = model.getWeights().map((w) => tf.zerosLike(w));
    assert.throws(() => model.setWeights(zeros), /graph training engine holds the weights/);
    const last = kernel();
    engine.dispose();
    // After dispose the model keeps the last weights and is an ordinary model again.
    assert.deepEqual(kernel(), last);
    model.setWeights(zeros);
    assert.ok(kernel().every((v) => v === 0));
    tf.dispose([...zeros, x, labels]);
    model.dispose();
  },
});

Deno.test({
  name: "graph_train: a failure after the TensorFlow session exists frees the session and graph",
  ignore: tf.getBackend() !== "tensorflow",
  fn: async () => {
    const model = tinyModel();
    const before = liveSessions();
    // A saved state with the wrong number of momentum buffers fails after the session started.
    const wrong = [{ name: "iter", tensor: tf.scalar(3) }, { name: "m", tensor: tf.zeros([2]) }];
    await assert.rejects(
      createStepEngine(model, {
        learningRate: 0.01,
        momentum: 0.9,
        numClasses: 3,
        optimizerWeights: wrong,
        engine: "graph",
      }),
      /1 saved momentum buffers for \d+ weights/,
    );
    assert.equal(liveSessions(), before, "no session left open");
    // And the model is untouched and usable (no guard left on its weights).
    assert.ok(model.weights.every((w) => !Object.hasOwn(w, "read")));
    tf.dispose(wrong.map((w) => w.tensor));
    model.dispose();
  },
});
