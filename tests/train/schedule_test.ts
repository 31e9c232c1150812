import assert from "node:assert/strict";
import { learningRateAt, PAPER_CONFIG } from "../../lib/mod.ts";

Deno.test("schedule: the learning-rate schedule drops ×0.1 after epochs 4 and 6", () => {
  const rates = [1, 2, 3, 4, 5, 6, 7, 8].map((e) => learningRateAt(e, PAPER_CONFIG));
  assert.deepEqual(rates, [0.001, 0.001, 0.001, 0.001, 0.0001, 0.0001, 0.00001, 0.00001]);
  assert.equal(learningRateAt(3, { learningRate: 0.1, lrMilestones: [], lrGamma: 0.1 }), 0.1);
});
