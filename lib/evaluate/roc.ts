/**
 * ROC curves and AUC, one class against the rest, with DeLong's 95 % intervals. Pure maths on
 * labels and scores (no tensors, no I/O).
 *
 * DeLong et al. (Biometrics 1988): each image's placement value (the share of the other group it
 * out-scores, ties counting half) gives the AUC's variance without resampling. The macro average's
 * interval uses the same placement values' covariance across classes (every class's AUC is
 * computed on the same images). An AUC of exactly 0 or 1 has no spread under DeLong: its interval
 * is that single value, which says nothing about how sure it is on few images.
 */
import { normalQuantile } from "./metrics.ts";

/** One point of a ROC curve. */
export interface RocPoint {
  /** Scores at or above this are called positive (Infinity for the first point). */
  threshold: number;
  falsePositiveRate: number;
  truePositiveRate: number;
}

export interface AucInterval {
  method: "delong";
  level: number;
  lower: number;
  upper: number;
  standardError: number;
}

/** One class against the rest. */
export interface ClassRoc {
  className: string;
  positives: number;
  negatives: number;
  auc: number;
  interval: AucInterval;
  curve: RocPoint[];
}

export interface RocAnalysis {
  perClass: ClassRoc[];
  /** The unweighted mean of the per-class AUCs, with its DeLong interval. */
  macro: { auc: number; interval: AucInterval };
}

/**
 * The ROC curve of scores for a binary truth: one point per distinct score, highest first, after
 * the (0, 0) point; as scikit-learn's `roc_curve(drop_intermediate=False)`.
 */
export function rocCurve(positive: readonly boolean[], scores: readonly number[]): RocPoint[] {
  const order = scores.map((_, i) => i).sort((a, b) => scores[b] - scores[a]);
  const p = positive.filter(Boolean).length;
  const n = positive.length - p;
  const points: RocPoint[] = [{ threshold: Infinity, falsePositiveRate: 0, truePositiveRate: 0 }];
  let tp = 0, fp = 0;
  for (let i = 0; i < order.length; i++) {
    if (positive[order[i]]) tp++;
    else fp++;
    // One point per distinct score: only after its last image.
    if (i + 1 < order.length && scores[order[i + 1]] === scores[order[i]]) continue;
    points.push({
      threshold: scores[order[i]],
      falsePositiveRate: n ? fp / n : 0,
      truePositiveRate: p ? tp / p : 0,
    });
  }
  return points;
}

/** Placement values: for each positive the share of negatives it out-scores, and vice versa. */
function placements(positive: readonly boolean[], scores: readonly number[]) {
  const pos = scores.filter((_, i) => positive[i]);
  const neg = scores.filter((_, i) => !positive[i]);
  const psi = (x: number, y: number) => (x > y ? 1 : x === y ? 0.5 : 0);
  const v10 = pos.map((x) => neg.reduce((s, y) => s + psi(x, y), 0) / neg.length);
  const v01 = neg.map((y) => pos.reduce((s, x) => s + psi(x, y), 0) / pos.length);
  const auc = v10.reduce((s, v) => s + v, 0) / v10.length;
  return { v10, v01, auc, m: pos.length, n: neg.length };
}

/**
 * Each image's contribution to the AUC's deviation (the placement value's distance from the AUC,
 * scaled so that the squares sum to DeLong's variance S10/m + S01/n).
 */
function influence(positive: readonly boolean[], scores: readonly number[]) {
  const { v10, v01, auc, m, n } = placements(positive, scores);
  const out = new Array<number>(positive.length);
  let i10 = 0, i01 = 0;
  for (let i = 0; i < positive.length; i++) {
    out[i] = positive[i]
      ? (v10[i10++] - auc) / Math.sqrt(m * Math.max(1, m - 1))
      : (v01[i01++] - auc) / Math.sqrt(n * Math.max(1, n - 1));
  }
  return { auc, influence: out };
}

function interval(auc: number, variance: number, level: number): AucInterval {
  const se = Math.sqrt(Math.max(0, variance));
  const z = normalQuantile(1 - (1 - level) / 2);
  return {
    method: "delong",
    level,
    lower: Math.max(0, auc - z * se),
    upper: Math.min(1, auc + z * se),
    standardError: se,
  };
}

/** AUC of one binary problem with DeLong's interval. Needs at least one positive and one negative. */
export function aucWithInterval(
  positive: readonly boolean[],
  scores: readonly number[],
  level = 0.95,
): { auc: number; interval: AucInterval } {
  const { auc, influence: f } = influence(positive, scores);
  return { auc, interval: interval(auc, f.reduce((s, v) => s + v * v, 0), level) };
}

/**
 * One-vs-rest ROC analysis of class probabilities: `probabilities[i][k]` is image i's score for
 * class k. Classes without positives or without negatives among the images are left out (their
 * AUC is undefined), as scikit-learn refuses them.
 */
export function rocAnalysis(
  labels: readonly number[],
  probabilities: readonly (readonly number[])[],
  classNames: readonly string[],
  level = 0.95,
): RocAnalysis {
  const perClass: ClassRoc[] = [];
  const influences: number[][] = [];
  for (const [k, className] of classNames.entries()) {
    const positive = labels.map((l) => l === k);
    const scores = probabilities.map((p) => p[k]);
    const positives = positive.filter(Boolean).length;
    const negatives = positive.length - positives;
    if (positives === 0 || negatives === 0) continue;
    const { auc, influence: f } = influence(positive, scores);
    influences.push(f);
    perClass.push({
      className,
      positives,
      negatives,
      auc,
      interval: interval(auc, f.reduce((s, v) => s + v * v, 0), level),
      curve: rocCurve(positive, scores),
    });
  }
  const k = perClass.length;
  const macroAuc = perClass.reduce((s, c) => s + c.auc, 0) / Math.max(1, k);
  let variance = 0;
  for (const a of influences) {
    for (const b of influences) {
      for (let i = 0; i < a.length; i++) variance += a[i] * b[i];
    }
  }
  return {
    perClass,
    macro: { auc: macroAuc, interval: interval(macroAuc, variance / (k * k), level) },
  };
}
