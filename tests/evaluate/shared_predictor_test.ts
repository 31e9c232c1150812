import assert from "node:assert/strict";
import * as path from "node:path";
import {
  createPredictor,
  evaluateExternal,
  initBackend,
  loadCheckpoint,
  type Predictor,
} from "../../lib/mod.ts";
import { tinyRun } from "../_fixtures.ts";

await initBackend();

Deno.test("evaluate: an external set's two passes run on the predictor given (kept for the caller), with the results of their own", async () => {
  const RUN = await tinyRun();
  const { model, meta } = await loadCheckpoint(path.join(RUN.runDir, "best"));
  const inner = createPredictor(model);
  let calls = 0, disposed = false;
  const counting: Predictor = {
    engine: inner.engine,
    kernels: inner.kernels,
    predict: (x) => {
      calls++;
      return inner.predict(x);
    },
    dispose: () => {
      disposed = true;
    },
  };
  try {
    const opts = { batchSize: 4, quiet: true };
    const shared = await evaluateExternal(model, meta, RUN.data, { ...opts, predictor: counting });
    const own = await evaluateExternal(model, meta, RUN.data, opts);
    const images = shared.passes[0].evaluation.predictions.length;
    assert.ok(images > 4, `${images} images`);
    assert.equal(calls, 2 * Math.ceil(images / 4), "both passes, every batch, on the given one");
    assert.equal(disposed, false, "the caller's predictor is not disposed");
    // Still usable after, and the same answers as predictors made for each pass.
    for (const k of [0, 1]) {
      assert.deepEqual(
        shared.passes[k].evaluation.predictions.map((p) => p.logits),
        own.passes[k].evaluation.predictions.map((p) => p.logits),
      );
    }
  } finally {
    inner.dispose();
    model.dispose();
  }
});
