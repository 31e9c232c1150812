import assert from "node:assert/strict";
import {
  computeMetrics,
  type EpochRecord,
  plotConfusionMatrix,
  plotSeedSpread,
  plotTrainingCurves,
} from "../../lib/mod.ts";
import { assertSnapshot } from "../_snapshot.ts";

const CLASSES = ["Covid", "Normal", "Viral Pneumonia"];

const history: EpochRecord[] = [1, 2, 3, 4, 5, 6].map((epoch) => ({
  epoch,
  learningRate: epoch <= 4 ? 0.001 : 0.0001,
  trainLoss: 1 / epoch,
  trainAccuracy: 0.5 + epoch / 20,
  validLoss: [0.9, 0.7, 0.6, 0.65, 0.55, 0.58][epoch - 1],
  validAccuracy: 0.5 + epoch / 25,
  improved: [true, true, true, false, true, false][epoch - 1],
  seconds: 30,
  peakRssMB: 1000,
}));

Deno.test("charts: the confusion matrix shows every count under the class names (snapshot)", () => {
  const fig = plotConfusionMatrix([[25, 1, 0], [0, 18, 2], [0, 3, 17]], CLASSES, {
    subtitle: "60 of 66 correct",
  });
  const svg = fig.svg!;
  for (const c of CLASSES) assert.ok(svg.includes(`>${c}<`), c);
  for (const n of [25, 18, 17, 3, 2, 1]) assert.ok(svg.includes(`>${n}<`), String(n));
  assertSnapshot("confusion_matrix.svg", svg);
});

Deno.test("charts: the training curves mark the learning-rate drop and the kept epoch (snapshot)", () => {
  const svg = plotTrainingCurves(history).svg!;
  assert.match(svg, /lr 1e-4/);
  assert.match(svg, /lowest validation loss \(epoch 5, the checkpoint kept\)/);
  assertSnapshot("training_curves.svg", svg);
});

Deno.test("charts: the training curves of a one-epoch run draw without a console warning", () => {
  const warnings: unknown[][] = [];
  const warn = console.warn;
  console.warn = (...args: unknown[]) => warnings.push(args);
  try {
    const svg = plotTrainingCurves(history.slice(0, 1)).svg!;
    assert.match(svg, /valid/);
  } finally {
    console.warn = warn;
  }
  assert.deepEqual(warnings, []);
});

Deno.test("charts: the seed spread plots each seed's accuracy with its interval and the mean", () => {
  const runs = [1, 2, 3].map((seed) => ({
    config: { seed },
    test: computeMetrics(
      Array.from({ length: 66 }, (_, i) => i % 3),
      Array.from({ length: 66 }, (_, i) => (i < 6 * seed ? (i + 1) % 3 : i % 3)),
      3,
    ),
  }));
  const svg = plotSeedSpread(runs).svg!;
  assert.match(svg, /mean over seeds 81\.8 %/);
  assertSnapshot("seed_spread.svg", svg);
});
