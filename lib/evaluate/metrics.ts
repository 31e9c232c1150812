/**
 * Evaluation maths as pure functions (no tensors, no I/O): confusion matrix, accuracy, per-class
 * precision / recall / F1 / support, macro and weighted averages, a scikit-learn-style report, and
 * confidence intervals for an accuracy measured on few images.
 */

import betaQuantile from "@stdlib/stats-base-dists-beta-quantile";
import stdlibBinomialCdf from "@stdlib/stats-base-dists-binomial-cdf";
import stdlibNormalQuantile from "@stdlib/stats-base-dists-normal-quantile";
import gammaln from "@stdlib/math-base-special-gammaln";

/** counts[t][p]: images of true class t predicted as class p. */
export type ConfusionMatrix = number[][];

export function confusionMatrix(
  truth: readonly number[],
  predicted: readonly number[],
  numClasses: number,
): ConfusionMatrix {
  if (truth.length !== predicted.length) {
    throw new Error(`confusionMatrix: ${truth.length} labels but ${predicted.length} predictions`);
  }
  const m = Array.from({ length: numClasses }, () => new Array<number>(numClasses).fill(0));
  truth.forEach((t, i) => m[t][predicted[i]]++);
  return m;
}

export interface ClassMetrics {
  precision: number;
  recall: number;
  f1: number;
  support: number;
}

export interface Metrics {
  accuracy: number;
  correct: number;
  total: number;
  /** 95 % Clopper–Pearson (exact binomial) interval of the accuracy. */
  accuracyInterval: Interval;
  confusion: ConfusionMatrix;
  perClass: ClassMetrics[];
  macro: ClassMetrics;
  weighted: ClassMetrics;
}

export interface Interval {
  method: "clopper-pearson" | "wilson";
  level: number;
  lower: number;
  upper: number;
}

/** 0/0 is 0, as scikit-learn's `zero_division=0`. */
const ratio = (a: number, b: number) => (b === 0 ? 0 : a / b);

/** Precision, recall, F1 and support of each class (scikit-learn's definitions). */
export function perClassMetrics(cm: ConfusionMatrix): ClassMetrics[] {
  return cm.map((row, k) => {
    const tp = row[k];
    const support = row.reduce((s, v) => s + v, 0);
    const predictedK = cm.reduce((s, r) => s + r[k], 0);
    const precision = ratio(tp, predictedK);
    const recall = ratio(tp, support);
    return { precision, recall, f1: ratio(2 * precision * recall, precision + recall), support };
  });
}

/** Unweighted mean over classes (macro) and support-weighted mean (weighted). */
export function averages(
  perClass: readonly ClassMetrics[],
): { macro: ClassMetrics; weighted: ClassMetrics } {
  const total = perClass.reduce((s, c) => s + c.support, 0);
  const mean = (f: (c: ClassMetrics) => number, w: (c: ClassMetrics) => number) =>
    ratio(perClass.reduce((s, c) => s + f(c) * w(c), 0), perClass.reduce((s, c) => s + w(c), 0));
  const macro = {
    precision: mean((c) => c.precision, () => 1),
    recall: mean((c) => c.recall, () => 1),
    f1: mean((c) => c.f1, () => 1),
    support: total,
  };
  const weighted = {
    precision: mean((c) => c.precision, (c) => c.support),
    recall: mean((c) => c.recall, (c) => c.support),
    f1: mean((c) => c.f1, (c) => c.support),
    support: total,
  };
  return { macro, weighted };
}

/** Every metric from labels and predictions. */
export function computeMetrics(
  truth: readonly number[],
  predicted: readonly number[],
  numClasses: number,
): Metrics {
  const confusion = confusionMatrix(truth, predicted, numClasses);
  const correct = confusion.reduce((s, row, k) => s + row[k], 0);
  const total = truth.length;
  const perClass = perClassMetrics(confusion);
  return {
    accuracy: ratio(correct, total),
    correct,
    total,
    accuracyInterval: clopperPearson(correct, total),
    confusion,
    perClass,
    ...averages(perClass),
  };
}

/**
 * A text report laid out like scikit-learn's `classification_report(digits=4)`.
 */
export function classificationReport(
  m: Metrics,
  classNames: readonly string[],
  digits = 4,
): string {
  const width = Math.max(...classNames.map((n) => n.length), "weighted avg".length, digits);
  // Each field is " " + value right-aligned in 9, after the row label and one space.
  const field = (v: string) => " " + v.padStart(9);
  const num = (v: number) => field(v.toFixed(digits));
  const row = (label: string, c: ClassMetrics) =>
    label.padStart(width) + " " + num(c.precision) + num(c.recall) + num(c.f1) +
    field(String(c.support));
  return [
    " ".repeat(width) + " " + ["precision", "recall", "f1-score", "support"].map(field).join(""),
    "",
    ...classNames.map((name, k) => row(name, m.perClass[k])),
    "",
    "accuracy".padStart(width) + " " + field("") + field("") + num(m.accuracy) +
    field(String(m.total)),
    row("macro avg", m.macro),
    row("weighted avg", m.weighted),
  ].join("\n") + "\n";
}

// ---------------------------------------------------------------------------------------------
// Intervals

/** ln Γ(x) (stdlib's gammaln). */
export const logGamma: (x: number) => number = gammaln;

/** P(X ≤ k) for X ~ Binomial(n, p) (stdlib's binomial CDF). */
export function binomialCdf(k: number, n: number, p: number): number {
  return stdlibBinomialCdf(k, n, p);
}

/**
 * Clopper–Pearson ("exact") interval for k successes in n trials: the Beta distribution's
 * quantiles (Beta(k, n − k + 1) at (1 − level)/2, Beta(k + 1, n − k) at (1 + level)/2), the
 * interval whose binomial tails put (1 − level)/2 on each side. Conservative: it covers at least
 * `level`. Used for the accuracies this project reports.
 */
export function clopperPearson(k: number, n: number, level = 0.95): Interval {
  const alpha = 1 - level;
  if (n === 0) return { method: "clopper-pearson", level, lower: 0, upper: 1 };
  const lower = k === 0 ? 0 : betaQuantile(alpha / 2, k, n - k + 1);
  const upper = k === n ? 1 : betaQuantile(1 - alpha / 2, k + 1, n - k);
  return { method: "clopper-pearson", level, lower, upper };
}

/** Wilson score interval (narrower than Clopper–Pearson; for comparison). */
export function wilson(k: number, n: number, level = 0.95): Interval {
  if (n === 0) return { method: "wilson", level, lower: 0, upper: 1 };
  const z = normalQuantile(1 - (1 - level) / 2);
  const p = k / n;
  const denom = 1 + (z * z) / n;
  const centre = (p + (z * z) / (2 * n)) / denom;
  const half = (z / denom) * Math.sqrt((p * (1 - p)) / n + (z * z) / (4 * n * n));
  return {
    method: "wilson",
    level,
    lower: Math.max(0, centre - half),
    upper: Math.min(1, centre + half),
  };
}

/** Standard normal quantile (stdlib's). */
export function normalQuantile(p: number): number {
  return stdlibNormalQuantile(p, 0, 1);
}

/**
 * Fisher's exact test of a 2×2 table [[a, b], [c, d]], two-sided: the probability, with the
 * margins fixed, of a table no more likely than this one (as SciPy's `fisher_exact`).
 */
export function fisherExact(a: number, b: number, c: number, d: number): number {
  const row1 = a + b, row2 = c + d, col1 = a + c, n = a + b + c + d;
  if (n === 0) return 1;
  const lnChoose = (m: number, k: number) =>
    logGamma(m + 1) - logGamma(k + 1) - logGamma(m - k + 1);
  const lnP = (x: number) => lnChoose(row1, x) + lnChoose(row2, col1 - x) - lnChoose(n, col1);
  const observed = lnP(a);
  let p = 0;
  for (let x = Math.max(0, col1 - row2); x <= Math.min(row1, col1); x++) {
    const lp = lnP(x);
    // A relative tolerance, as SciPy uses, so that tables as likely as this one are counted.
    if (lp <= observed + 1e-7 * Math.abs(observed) + 1e-12) p += Math.exp(lp);
  }
  return Math.min(1, p);
}
