/**
 * Leakage in a run's words: which test images training saw (byte-identical copies, and the same
 * X-ray saved otherwise), what the test accuracy is without them, and the pairs side by side for
 * a person to confirm.
 */
import * as path from "node:path";
import { percent } from "../format.ts";
import { type Table, table } from "../tables.ts";
import type {
  ImageCache,
  NearDuplicateCalibration,
  NearDuplicatePair,
  NearDuplicateReport,
} from "../data/mod.ts";
import { computeMetrics, type Metrics, type Prediction } from "../evaluate/mod.ts";
import { type Figure, nearDuplicateGallery } from "../figures/mod.ts";

/** summary.json's record of leakage. */
export interface LeakageSummary {
  method: string;
  calibration: NearDuplicateCalibration;
  /** Test images byte-identical to a training image. */
  byteIdentical: string[];
  /** Test images near-identical (and not byte-identical) to a training image, with the nearest. */
  nearIdentical: { test: string; train: string; distance: number }[];
  /** Every train–test pair (byte-identical ones at distance 0). */
  crossSplit: { train: string; test: string; distance: number; byteIdentical: boolean }[];
  /** Pairs inside the test folder: one X-ray counted twice. */
  withinTest: { a: string; b: string; distance: number; byteIdentical: boolean }[];
  /** Test metrics without the byte-identical copies, and without either kind. */
  withoutByteIdentical: Metrics;
  clean: Metrics;
}

/** The leakage of a run's test predictions, from the data set's near-duplicate report. */
export function leakageSummary(
  near: NearDuplicateReport,
  predictions: readonly Prediction[],
  numClasses: number,
): LeakageSummary {
  const cross = near.pairs.filter((p) => p.kind === "train-test");
  const byteIdentical = new Set(cross.filter((p) => p.byteIdentical).map((p) => p.b.relPath));
  const nearest = new Map<string, { train: string; distance: number }>();
  for (const p of cross) {
    if (byteIdentical.has(p.b.relPath)) continue;
    const seen = nearest.get(p.b.relPath);
    if (!seen || p.distance < seen.distance) {
      nearest.set(p.b.relPath, { train: p.a.relPath, distance: p.distance });
    }
  }
  const metricsWithout = (excluded: Set<string>) => {
    const kept = predictions.filter((p) => !excluded.has(p.item.relPath));
    return computeMetrics(
      kept.map((p) => p.item.label),
      kept.map((p) => p.predicted),
      numClasses,
    );
  };
  return {
    method: near.method,
    calibration: near.calibration,
    byteIdentical: [...byteIdentical].sort(),
    nearIdentical: [...nearest].map(([test, n]) => ({ test, ...n }))
      .sort((a, b) => a.test.localeCompare(b.test)),
    crossSplit: cross.map((p) => ({
      train: p.a.relPath,
      test: p.b.relPath,
      distance: p.distance,
      byteIdentical: p.byteIdentical,
    })),
    withinTest: near.pairs.filter((p) => p.kind === "within-test").map((p) => ({
      a: p.a.relPath,
      b: p.b.relPath,
      distance: p.distance,
      byteIdentical: p.byteIdentical,
    })),
    withoutByteIdentical: metricsWithout(byteIdentical),
    clean: metricsWithout(new Set([...byteIdentical, ...nearest.keys()])),
  };
}

const pct = (v: number) => percent(v);
const ci = (m: Metrics) => `${pct(m.accuracyInterval.lower)} – ${pct(m.accuracyInterval.upper)}`;

/** The accuracy on all test images, without the byte-identical copies, and without either kind. */
export function leakageAccuracyTable(test: Metrics, leakage: LeakageSummary): Table {
  const rows = [
    { images: `all ${test.total} test images`, metrics: test },
    {
      images: `without the ${leakage.byteIdentical.length} byte-identical to training images`,
      metrics: leakage.withoutByteIdentical,
    },
    {
      images: `without those and the ${leakage.nearIdentical.length} near-identical ones`,
      metrics: leakage.clean,
    },
  ];
  return table(rows.map((r) => ({
    "evaluated on": r.images,
    accuracy: pct(r.metrics.accuracy),
    correct: `${r.metrics.correct} of ${r.metrics.total}`,
    "95 % Clopper–Pearson": ci(r.metrics),
  })));
}

/** Every cross-split and within-test pair, byte-identical or near, with its distance. */
export function leakagePairsTable(leakage: LeakageSummary): Table {
  return table([
    ...leakage.crossSplit.map((p) => ({
      pair: "train – test",
      first: p.train,
      second: p.test,
      kind: p.byteIdentical ? "byte-identical" : "near-identical",
      distance: p.distance.toFixed(4),
    })),
    ...leakage.withinTest.map((p) => ({
      pair: "test – test",
      first: p.a,
      second: p.b,
      kind: p.byteIdentical ? "byte-identical" : "near-identical",
      distance: p.distance.toFixed(4),
    })),
  ], {
    title: `${leakage.crossSplit.length} train–test and ${leakage.withinTest.length} ` +
      `within-test pairs (threshold ${leakage.calibration.threshold.toFixed(4)})`,
  });
}

/** How the near-duplicate finder did on the data set's own synthetic copies, in one sentence. */
export function calibrationSentence(c: NearDuplicateCalibration): string {
  const all = c.detection.find((d) => d.kind === "all")!;
  return `The near-duplicate threshold (${c.threshold.toFixed(4)}) was chosen on synthetic ` +
    `copies (resized, re-encoded, cropped up to 5 %, brightness/contrast, bit depth, gray/colour) ` +
    `of ${c.images} of this data set's images: at it, ${all.found} of ${all.copies} copies of the ` +
    `images that did not set it were found (${pct(all.copies ? all.found / all.copies : 0)}), ` +
    `and ${c.falsePairs.under.toLocaleString("en")} of ${
      c.falsePairs.pairs.toLocaleString("en")
    } pairs of images of different classes fell under it (${
      (100 * (c.falsePairs.pairs ? c.falsePairs.under / c.falsePairs.pairs : 0)).toFixed(3)
    } %).${
      all.copies && all.found / all.copies < 0.95
        ? ` That is under 95 %: on these images copies are hard to tell from distinct images of ` +
          "the same class, so near-identical pairs may be missed; the byte-identical ones are " +
          "found regardless."
        : ""
    }`;
}

/** The gallery of every cross-split and within-test pair (an image saying so when none). */
export async function leakageGallery(
  near: NearDuplicateReport,
  cache: ImageCache,
): Promise<Figure> {
  const pairs: NearDuplicatePair[] = near.pairs.filter((p) => p.kind !== "within-train");
  return await nearDuplicateGallery(pairs, cache);
}

/** Write `near_duplicates.png` when there are pairs to show; returns whether it was written. */
export async function writeLeakageGallery(
  dir: string,
  near: NearDuplicateReport,
  cache: ImageCache,
): Promise<boolean> {
  if (!near.pairs.some((p) => p.kind !== "within-train")) return false;
  await (await leakageGallery(near, cache)).save(path.join(dir, "near_duplicates"));
  return true;
}

/** What the leakage numbers say, by rule: counts, the accuracy without the leaked images. */
export function leakageFinding(test: Metrics, leakage: LeakageSummary): string {
  const leaked = leakage.byteIdentical.length + leakage.nearIdentical.length;
  const within = leakage.withinTest.length
    ? ` Inside the test folder, ${leakage.withinTest.length} pair(s) count one X-ray twice.`
    : "";
  if (leaked === 0) {
    return "No test image is the same X-ray as a training image, byte for byte or " +
      `near-identical (threshold ${leakage.calibration.threshold.toFixed(4)}).${within}`;
  }
  const gap = 100 * (test.accuracy - leakage.clean.accuracy);
  return `${leaked} of ${test.total} test images (${
    pct(leaked / test.total)
  }) are the same X-ray as a training image (${leakage.byteIdentical.length} byte-identical, ` +
    `${leakage.nearIdentical.length} near-identical): the model was trained on them with their ` +
    `labels. Without them the accuracy is ${
      pct(leakage.clean.accuracy)
    } (${leakage.clean.correct} of ${leakage.clean.total}; ${ci(leakage.clean)}), against ${
      pct(test.accuracy)
    } on all ` +
    `test images${
      Math.abs(gap) >= 0.05
        ? ` — ${Math.abs(gap).toFixed(1)} points ${gap > 0 ? "lower" : "higher"}`
        : ", the same"
    }.${within}`;
}
