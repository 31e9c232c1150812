/**
 * Two models on the same images: is the difference between their accuracies more than chance?
 * McNemar's exact test on the images where they disagree, and the accuracy difference with
 * Newcombe's interval for paired proportions (his method 10: Wilson score intervals combined with
 * the correlation of the pairs; Statistics in Medicine 1998). Pure maths.
 */
import { binomialCdf, wilson } from "./metrics.ts";

/** The 2×2 of paired outcomes. */
export interface PairedCounts {
  /** Both right. */
  bothRight: number;
  /** A right, B wrong. */
  onlyA: number;
  /** A wrong, B right. */
  onlyB: number;
  /** Both wrong. */
  bothWrong: number;
}

export interface PairedComparison extends PairedCounts {
  n: number;
  accuracyA: number;
  accuracyB: number;
  /** accuracyA − accuracyB. */
  difference: number;
  differenceInterval: { method: "newcombe-10"; level: number; lower: number; upper: number };
  /** McNemar's exact (binomial) two-sided p-value, as statsmodels' `mcnemar(exact=True)`. */
  mcnemarP: number;
}

/** The paired counts of two models' right/wrong on the same images. */
export function pairedCounts(aRight: readonly boolean[], bRight: readonly boolean[]): PairedCounts {
  if (aRight.length !== bRight.length) {
    throw new Error(`pairedCounts: ${aRight.length} and ${bRight.length} outcomes`);
  }
  const c = { bothRight: 0, onlyA: 0, onlyB: 0, bothWrong: 0 };
  for (let i = 0; i < aRight.length; i++) {
    if (aRight[i] && bRight[i]) c.bothRight++;
    else if (aRight[i]) c.onlyA++;
    else if (bRight[i]) c.onlyB++;
    else c.bothWrong++;
  }
  return c;
}

/** McNemar's exact test: twice the smaller binomial tail of the discordant pairs, at most 1. */
export function mcnemarExact(onlyA: number, onlyB: number): number {
  const n = onlyA + onlyB;
  if (n === 0) return 1;
  return Math.min(1, 2 * binomialCdf(Math.min(onlyA, onlyB), n, 0.5));
}

/** Everything about the difference of two models on the same images. */
export function comparePaired(counts: PairedCounts, level = 0.95): PairedComparison {
  const { bothRight: a, onlyA: b, onlyB: c, bothWrong: d } = counts;
  const n = a + b + c + d;
  if (n === 0) throw new Error("comparePaired: no images");
  const p1 = (a + b) / n, p2 = (a + c) / n;
  const w1 = wilson(a + b, n, level), w2 = wilson(a + c, n, level);
  const denominator = Math.sqrt((a + b) * (c + d) * (a + c) * (b + d));
  const phi = denominator > 0 ? (a * d - b * c) / denominator : 0;
  const delta = Math.sqrt(
    Math.max(
      0,
      (p1 - w1.lower) ** 2 - 2 * phi * (p1 - w1.lower) * (w2.upper - p2) + (w2.upper - p2) ** 2,
    ),
  );
  const epsilon = Math.sqrt(
    Math.max(
      0,
      (w1.upper - p1) ** 2 - 2 * phi * (w1.upper - p1) * (p2 - w2.lower) + (p2 - w2.lower) ** 2,
    ),
  );
  return {
    ...counts,
    n,
    accuracyA: p1,
    accuracyB: p2,
    difference: p1 - p2,
    differenceInterval: {
      method: "newcombe-10",
      level,
      lower: Math.max(-1, p1 - p2 - delta),
      upper: Math.min(1, p1 - p2 + epsilon),
    },
    mcnemarP: mcnemarExact(b, c),
  };
}
