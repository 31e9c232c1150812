import assert from "node:assert/strict";
import {
  brierScore,
  calibrationBins,
  calibrationSummary,
  expectedCalibrationError,
  fitTemperature,
  Rng,
  temperatureProbabilities,
} from "../../lib/mod.ts";

const close = (a: number, b: number, tol: number, what: string) =>
  assert.ok(Math.abs(a - b) <= tol, `${what}: ${a} vs ${b}`);

Deno.test("calibration: ECE and Brier score on a hand-computed case", () => {
  // Two images at 0.9 confidence (one right), two at 0.6 (both right).
  const p = [[0.9, 0.1, 0], [0.9, 0, 0.1], [0.6, 0.4, 0], [0.2, 0.6, 0.2]];
  const labels = [0, 1, 0, 1];
  const bins = calibrationBins(p, labels);
  assert.deepEqual(bins[9], { lower: 0.9, upper: 1, count: 2, confidence: 0.9, accuracy: 0.5 });
  assert.deepEqual(bins[6], { lower: 0.6, upper: 0.7, count: 2, confidence: 0.6, accuracy: 1 });
  // ECE = 2/4 · |0.5 − 0.9| + 2/4 · |1 − 0.6| = 0.4.
  close(expectedCalibrationError(p, labels), 0.4, 1e-12, "ECE");
  // Brier: (0.01+0.01) + (0.81+1+0.01) + (0.16+0.16) + (0.04+0.16+0.04) = 2.4, over 4 images.
  close(brierScore(p, labels), 0.6, 1e-12, "Brier");
  // A perfect, certain model scores 0 on both.
  assert.equal(expectedCalibrationError([[1, 0, 0]], [0]), 0);
  assert.equal(brierScore([[0, 1, 0]], [1]), 0);
});

// Reference values from scikit-learn 1.9.1 (`brier_score_loss(labels, p, labels=[0, 1, 2])`,
// multi-class) and torchmetrics (`MulticlassCalibrationError(num_classes=3, n_bins=10,
// norm="l1")`) for p = softmax(LOGITS).
const LOGITS = [
  [4.082, -5.111, 0.836],
  [-1.136, -0.905, -0.431],
  [-4.04, -0.464, -1.73],
  [6.646, 0.452, -0.705],
  [-0.563, -1.336, -2.11],
  [-0.782, 0.964, -0.477],
  [1.916, -0.4, 0.049],
  [3.092, 1.09, -1.01],
  [-0.366, 1.081, 3.87],
  [-0.539, -0.487, 2.005],
  [-1.773, -0.583, 1.765],
  [1.161, 0.183, 1.34],
];
const LABELS = [0, 1, 2, 0, 1, 2, 0, 1, 2, 0, 0, 1];

Deno.test("calibration: Brier score agrees with scikit-learn, ECE with torchmetrics", () => {
  const p = temperatureProbabilities(LOGITS, 1);
  close(brierScore(p, LABELS), 0.8457174548713199, 1e-12, "Brier vs scikit-learn");
  close(expectedCalibrationError(p, LABELS), 0.4611717760562897, 1e-7, "ECE vs torchmetrics");
});

Deno.test("calibration: temperature scaling recovers a planted temperature and never changes a prediction", () => {
  // Labels drawn from softmax(z / 2.5): the calibrated temperature is 2.5.
  const rng = Rng.stream(11, "calibration");
  const normal = () =>
    Math.sqrt(-2 * Math.log(1 - rng.next())) * Math.cos(2 * Math.PI * rng.next());
  const logits: number[][] = [], labels: number[] = [];
  for (let i = 0; i < 4000; i++) {
    const z = [0, 1, 2].map(() => 4 * normal());
    const p = z.map((v) => Math.exp(v / 2.5));
    const u = rng.next() * p.reduce((a, b) => a + b, 0);
    labels.push(u < p[0] ? 0 : u < p[0] + p[1] ? 1 : 2);
    logits.push(z);
  }
  const fit = fitTemperature(logits, labels);
  close(fit.temperature, 2.5, 0.15, "temperature");
  assert.ok(fit.nllAfter < fit.nllBefore, "the fitted temperature lowers the NLL");
  const argmax = (rows: number[][]) => rows.map((r) => r.indexOf(Math.max(...r)));
  assert.deepEqual(argmax(temperatureProbabilities(logits, fit.temperature)), argmax(logits));
  const summary = calibrationSummary(logits, labels, fit.temperature);
  assert.ok(summary.eceAfter < summary.eceBefore / 3, JSON.stringify(summary));
  // Overconfident logits on one's own data: T > 1 (softer); underconfident: T < 1.
  assert.ok(fitTemperature(logits.map((z) => z.map((v) => v * 3)), labels).temperature > 5);
  assert.ok(fitTemperature(logits.map((z) => z.map((v) => v / 3)), labels).temperature < 1);
});

Deno.test("calibration: when every prediction is right no temperature is fitted (the likelihood has no minimum) and T = 1 is kept", () => {
  const logits = [[3, 0, 0], [0, 2, 1], [0, 0, 0.5]];
  const fit = fitTemperature(logits, [0, 1, 2]);
  assert.equal(fit.temperature, 1);
  assert.match(fit.notFitted ?? "", /all 3 predictions are right/);
  assert.equal(fit.nllAfter, fit.nllBefore);
  // One mistake is enough for a finite optimum; a confident one asks for a softer softmax.
  const withMistake = fitTemperature([...logits, [0, 4, 0]], [0, 1, 2, 0]);
  assert.equal(withMistake.notFitted, undefined);
  assert.ok(
    withMistake.temperature > 1 && withMistake.temperature < 100,
    String(withMistake.temperature),
  );
});
