import assert from "node:assert/strict";
import {
  classificationReport,
  clopperPearson,
  computeMetrics,
  confusionMatrix,
  wilson,
} from "../../lib/mod.ts";
import { binomialCdf, logGamma, normalQuantile } from "../../lib/evaluate/metrics.ts";

const NAMES = ["Covid", "Normal", "Viral Pneumonia"];
const close = (a: number, b: number, tol = 1e-9) =>
  assert.ok(Math.abs(a - b) <= tol, `${a} vs ${b}`);

Deno.test("metrics: a hand-computed case (2 of each class right but one)", () => {
  // Truth 0 0 1 1 2 2; predicted 0 1 1 1 2 0.
  const m = computeMetrics([0, 0, 1, 1, 2, 2], [0, 1, 1, 1, 2, 0], 3);
  assert.deepEqual(m.confusion, [[1, 1, 0], [0, 2, 0], [1, 0, 1]]);
  assert.equal(m.correct, 4);
  close(m.accuracy, 4 / 6);
  // Covid: precision 1/2 (one Viral predicted as Covid), recall 1/2.
  close(m.perClass[0].precision, 0.5);
  close(m.perClass[0].recall, 0.5);
  // Normal: precision 2/3, recall 1, F1 = 2·(2/3)·1 / (2/3 + 1) = 0.8.
  close(m.perClass[1].precision, 2 / 3);
  close(m.perClass[1].f1, 0.8);
  // Viral: precision 1, recall 1/2, F1 2/3.
  close(m.perClass[2].f1, 2 / 3);
  close(m.macro.recall, (0.5 + 1 + 0.5) / 3);
  assert.deepEqual(m.perClass.map((c) => c.support), [2, 2, 2]);
});

Deno.test("metrics: agree with scikit-learn 1.9 (precision_recall_fscore_support, classification_report)", () => {
  // Values printed by scikit-learn 1.9.1 for these labels (zero_division=0).
  const a = computeMetrics([0, 0, 0, 1, 1, 2, 2, 2, 2, 1], [0, 1, 0, 1, 2, 2, 2, 0, 2, 1], 3);
  assert.deepEqual(a.confusion, [[2, 1, 0], [0, 2, 1], [1, 0, 3]]);
  close(a.accuracy, 0.7);
  close(a.macro.precision, 0.6944444444444443, 1e-12);
  close(a.weighted.f1, 0.7, 1e-12);
  assert.equal(
    classificationReport(a, NAMES),
    "                 precision    recall  f1-score   support\n\n          Covid     0.6667    0.6667    0.6667         3\n         Normal     0.6667    0.6667    0.6667         3\nViral Pneumonia     0.7500    0.7500    0.7500         4\n\n       accuracy                         0.7000        10\n      macro avg     0.6944    0.6944    0.6944        10\n   weighted avg     0.7000    0.7000    0.7000        10\n",
  );
  // A class that is never predicted: precision 0/0 counts as 0.
  const b = computeMetrics([0, 1, 2, 2], [0, 0, 2, 2], 3);
  assert.deepEqual(b.perClass.map((c) => c.precision), [0.5, 0, 1]);
  close(b.macro.f1, 0.5555555555555555, 1e-12);
  close(b.weighted.precision, 0.625);
  assert.equal(
    classificationReport(b, NAMES),
    "                 precision    recall  f1-score   support\n\n          Covid     0.5000    1.0000    0.6667         1\n         Normal     0.0000    0.0000    0.0000         1\nViral Pneumonia     1.0000    1.0000    1.0000         2\n\n       accuracy                         0.7500         4\n      macro avg     0.5000    0.6667    0.5556         4\n   weighted avg     0.6250    0.7500    0.6667         4\n",
  );
  assert.throws(() => confusionMatrix([0, 1], [0], 2), /2 labels but 1 predictions/);
});

Deno.test("metrics: Clopper–Pearson and Wilson intervals match statsmodels' proportion_confint", () => {
  // statsmodels proportion_confint(k, n, method="beta" | "wilson").
  const cases: [number, number, [number, number], [number, number]][] = [
    [64, 66, [0.8947833514203487, 0.9963088610385701], [0.8960747808829028, 0.9916500898013463]],
    [0, 10, [0, 0.30849710781876083], [0, 0.27753279986288926]],
    [10, 10, [0.6915028921812392, 1], [0.7224672001371106, 1]],
    [33, 66, [0.37430716945155507, 0.6256928305484449], [0.38273688025050107, 0.6172631197494989]],
    [1, 3, [0.008403758659612636, 0.9057006759497539], [0.06149194472039626, 0.7923403991979523]],
  ];
  for (const [k, n, cp, w] of cases) {
    const a = clopperPearson(k, n);
    close(a.lower, cp[0], 1e-7);
    close(a.upper, cp[1], 1e-7);
    const b = wilson(k, n);
    close(b.lower, w[0], 1e-7);
    close(b.upper, w[1], 1e-7);
  }
  // The paper's 64/66: one image is 1.5 points; the interval spans about 89.5 %–99.6 %.
  const paper = clopperPearson(64, 66);
  assert.equal((100 * paper.lower).toFixed(1), "89.5");
  assert.equal((100 * paper.upper).toFixed(1), "99.6");
});

Deno.test("metrics: building blocks (log-gamma, binomial CDF, normal quantile)", () => {
  close(logGamma(1), 0, 1e-12);
  close(logGamma(5), Math.log(24), 1e-12);
  close(logGamma(0.5), Math.log(Math.sqrt(Math.PI)), 1e-12);
  close(binomialCdf(2, 4, 0.5), 11 / 16, 1e-12);
  close(binomialCdf(0, 3, 0.2), 0.512, 1e-12);
  close(normalQuantile(0.975), 1.959963984540054, 1e-8);
  close(normalQuantile(0.5), 0, 1e-12);
});
