import assert from "node:assert/strict";
import { createPredictor, initBackend, tf } from "../../lib/mod.ts";
import { graphPredictor } from "../../lib/engine/graph_predictor.ts";
import { outputs, pixels, small } from "../_models.ts";

await initBackend();

for (const engine of ["eager", "graph"] as const) {
  Deno.test(`predictor: the ${engine} predictor (BatchNorm folded, ReLU fused) computes what model.predict does`, async () => {
    // Non-trivial BatchNorm statistics: a few training-mode passes move them away from 0 and 1.
    const model = small(3, 8);
    const x = pixels();
    for (let i = 0; i < 3; i++) tf.tidy(() => model.apply(x, { training: true }) as tf.Tensor);
    const before = tf.memory().numTensors;
    const predictor = createPredictor(model, { engine });
    assert.equal(predictor.engine, engine);
    const [a, b] = [
      await outputs(model, x),
      await (async () => {
        const y = predictor.predict(x as tf.Tensor4D);
        const d = await y.data() as Float32Array;
        y.dispose();
        return d;
      })(),
    ];
    const scale = Math.max(...a.map(Math.abs));
    a.forEach((v, i) =>
      assert.ok(Math.abs(v - b[i]) <= 1e-4 * scale, `output ${i}: ${v} vs ${b[i]}`)
    );
    predictor.dispose();
    assert.equal(tf.memory().numTensors, before, "the folded weights are released");
    tf.dispose(x);
    model.dispose();
  });
}

Deno.test("predictor: the graph predictor holds the weights it was made with, and refuses use after dispose", async () => {
  const model = small(3, 8);
  const x = pixels();
  const predictor = graphPredictor(model);
  const before = await outputs(model, x);
  // Training the model afterwards does not change what this predictor computes.
  const shifted = model.getWeights().map((w) => tf.add(w, 0.5));
  model.setWeights(shifted);
  tf.dispose(shifted);
  assert.notDeepEqual(await outputs(model, x), before, "the model itself changed");
  const y = predictor.predict(x as tf.Tensor4D);
  const after = await y.data() as Float32Array;
  y.dispose();
  before.forEach((v, i) => assert.ok(Math.abs(v - after[i]) <= 1e-4 * Math.abs(v) + 1e-5));
  predictor.dispose();
  assert.throws(() => predictor.predict(x as tf.Tensor4D), Error, "after dispose");
  tf.dispose(x);
  model.dispose();
});
