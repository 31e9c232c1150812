import assert from "node:assert/strict";
import { initBackend, tf } from "../lib/mod.ts";
import { batchNormTraining, compositeBatchNormTraining } from "../lib/native_ops.ts";

await initBackend();

Deno.test("native_ops: the native fused BatchNorm matches TF.js's composition (output, gradients, moving statistics) and leaves no tensor", () => {
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
