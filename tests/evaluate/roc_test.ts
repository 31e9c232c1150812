import assert from "node:assert/strict";
import {
  aucWithInterval,
  classDiagnostics,
  predictiveValues,
  rocAnalysis,
  rocCurve,
} from "../../lib/mod.ts";

interface RocCase {
  name: string;
  labels: number[];
  probabilities: number[][];
  per_class: {
    auc: number;
    delong_se: number;
    fpr: number[];
    tpr: number[];
    thresholds: (number | null)[];
  }[];
  macro_auc: number;
  macro_delong_se: number;
  z: number;
}

const reference = JSON.parse(
  Deno.readTextFileSync(new URL("../testdata/review_reference.json", import.meta.url)),
) as { roc: RocCase[] };
const close = (a: number, b: number, what: string, tol = 1e-9) =>
  assert.ok(Math.abs(a - b) <= tol, `${what}: ${a} vs reference ${b}`);

Deno.test("roc: curves, per-class and macro AUC match scikit-learn; DeLong intervals match an independent implementation", () => {
  const names = ["Covid", "Normal", "Viral Pneumonia"];
  for (const c of reference.roc) {
    const roc = rocAnalysis(c.labels, c.probabilities, names);
    assert.equal(roc.perClass.length, 3, c.name);
    for (const [k, ref] of c.per_class.entries()) {
      const ours = roc.perClass[k];
      close(ours.auc, ref.auc, `${c.name} class ${k} AUC`);
      close(ours.interval.standardError, ref.delong_se, `${c.name} class ${k} DeLong SE`);
      close(
        ours.interval.lower,
        Math.max(0, ref.auc - c.z * ref.delong_se),
        `${c.name} ${k} lower`,
        1e-8,
      );
      close(
        ours.interval.upper,
        Math.min(1, ref.auc + c.z * ref.delong_se),
        `${c.name} ${k} upper`,
        1e-8,
      );
      assert.equal(ours.curve.length, ref.fpr.length, `${c.name} class ${k}: curve points`);
      ours.curve.forEach((p, i) => {
        close(p.falsePositiveRate, ref.fpr[i], `${c.name} ${k} fpr[${i}]`);
        close(p.truePositiveRate, ref.tpr[i], `${c.name} ${k} tpr[${i}]`);
        if (ref.thresholds[i] === null) assert.equal(p.threshold, Infinity);
        else close(p.threshold, ref.thresholds[i]!, `${c.name} ${k} threshold[${i}]`, 1e-12);
      });
    }
    close(roc.macro.auc, c.macro_auc, `${c.name} macro AUC`);
    close(roc.macro.interval.standardError, c.macro_delong_se, `${c.name} macro SE`);
  }
});

Deno.test("roc: a perfect ranking has AUC 1 with no DeLong spread; a class absent from the labels is left out", () => {
  const perfect = aucWithInterval([true, true, false, false], [0.9, 0.8, 0.2, 0.1]);
  assert.equal(perfect.auc, 1);
  assert.deepEqual([perfect.interval.lower, perfect.interval.upper], [1, 1]);
  const reversed = aucWithInterval([true, false], [0.1, 0.9]);
  assert.equal(reversed.auc, 0);
  const roc = rocAnalysis([0, 0, 1, 1], [[0.9, 0.1, 0], [0.6, 0.4, 0], [0.3, 0.7, 0], [
    0.2,
    0.8,
    0,
  ]], ["a", "b", "c"]);
  assert.deepEqual(roc.perClass.map((c) => c.className), ["a", "b"]);
  // Ties count half: one positive tied with the only negative.
  assert.equal(aucWithInterval([true, true, false], [0.5, 0.9, 0.5]).auc, 0.75);
  assert.deepEqual(
    rocCurve([true, false, true], [0.8, 0.8, 0.2]).map((
      p,
    ) => [p.falsePositiveRate, p.truePositiveRate]),
    [[0, 0], [1, 0.5], [1, 1]],
  );
});

Deno.test("roc: sensitivity, specificity and predictive values per class, with exact intervals and at a stated prevalence", () => {
  // 26 Covid (24 right, 2 called Normal), 20 Normal (18 right, 2 called VP), 20 VP (all right).
  const confusion = [[24, 2, 0], [0, 18, 2], [0, 0, 20]];
  const [covid, normal] = classDiagnostics(confusion, ["Covid", "Normal", "Viral Pneumonia"], {
    prevalence: 0.05,
  });
  assert.equal(covid.sensitivity.k, 24);
  assert.equal(covid.sensitivity.n, 26);
  assert.equal(covid.specificity.k, 40);
  assert.equal(covid.specificity.n, 40);
  assert.equal(covid.ppv.value, 1);
  assert.equal(normal.ppv.k, 18);
  assert.equal(normal.ppv.n, 20);
  assert.equal(normal.npv.k, 44);
  assert.equal(normal.npv.n, 46);
  // Clopper–Pearson for 24/26 (scipy's beta.ppf): 0.7487 – 0.9905.
  close(covid.sensitivity.interval.lower, 0.74866, "24/26 lower", 1e-4);
  close(covid.sensitivity.interval.upper, 0.99055, "24/26 upper", 1e-4);
  close(covid.prevalence, 26 / 66, "prevalence");
  // Bayes at 5 %: sensitivity 18/20, specificity 44/46 for Normal.
  const expected = predictiveValues(0.9, 44 / 46, 0.05);
  close(normal.atPrevalence!.ppv, expected.ppv, "PPV at 5 %");
  close(expected.ppv, (0.9 * 0.05) / (0.9 * 0.05 + (2 / 46) * 0.95), "Bayes by hand");
  assert.ok(normal.atPrevalence!.ppvInterval.lower < normal.atPrevalence!.ppv);
  assert.ok(normal.atPrevalence!.ppvInterval.upper > normal.atPrevalence!.ppv);
  // A perfect specificity makes PPV 1 at any prevalence.
  assert.equal(covid.atPrevalence!.ppv, 1);
});
