/**
 * The review of the method: what the data set lets a model learn without looking at the lungs,
 * and what the headline number rests on. Evidence, computed; the notebook (06) reads it out.
 */
import * as fs from "node:fs";
import * as path from "node:path";
import { initBackend, tf } from "../backend.ts";
import { quickMode, type RunConfig, sameSettings } from "../config.ts";
import { percent } from "../format.ts";
import { argmax } from "../maths.ts";
import { type Table, table } from "../tables.ts";
import type { ImageItem, ImageStats } from "../data/mod.ts";
import { computeMetrics, type Metrics, type Prediction } from "../evaluate/mod.ts";
import {
  loadSweep,
  outputsRoot,
  type RunSummary,
  runSweep,
  type SweepResult,
} from "../runs/mod.ts";

/** Non-medical facts about an image that a trivial classifier may use. */
export const METADATA_FEATURES = [
  "width",
  "height",
  "aspect ratio",
  "stored gray",
  "stored with alpha",
  "PNG file",
  "mean intensity",
] as const;
export type MetadataFeature = typeof METADATA_FEATURES[number];

/** The feature vector of one image (see {@link METADATA_FEATURES}). */
export function metadataVector(s: ImageStats): Record<MetadataFeature, number> {
  return {
    width: s.width,
    height: s.height,
    "aspect ratio": s.aspect,
    "stored gray": s.channels <= 2 ? 1 : 0,
    "stored with alpha": s.channels === 2 || s.channels === 4 ? 1 : 0,
    "PNG file": s.format === "png" ? 1 : 0,
    "mean intensity": s.meanIntensity,
  };
}

/** A fitted multinomial logistic regression on standardised features. */
export interface LogisticModel {
  features: readonly MetadataFeature[];
  mean: number[];
  std: number[];
  weights: number[][]; // [features][classes]
  bias: number[];
}

/**
 * Fit multinomial logistic regression (softmax, L2 1e-3) by full-batch Adam from zero weights:
 * deterministic, a few hundred milliseconds.
 */
export async function fitLogistic(
  rows: readonly Record<MetadataFeature, number>[],
  labels: readonly number[],
  numClasses: number,
  features: readonly MetadataFeature[],
  opts: { steps?: number; learningRate?: number } = {},
): Promise<LogisticModel> {
  await initBackend();
  const raw = rows.map((r) => features.map((f) => r[f]));
  const mean = features.map((_, j) => raw.reduce((s, r) => s + r[j], 0) / raw.length);
  const std = features.map((_, j) =>
    Math.sqrt(raw.reduce((s, r) => s + (r[j] - mean[j]) ** 2, 0) / raw.length) || 1
  );
  const x = tf.tensor2d(raw.map((r) => r.map((v, j) => (v - mean[j]) / std[j])));
  const y = tf.tidy(() => tf.oneHot(tf.tensor1d(labels as number[], "int32"), numClasses));
  const w = tf.variable(tf.zeros([features.length, numClasses]));
  const b = tf.variable(tf.zeros([numClasses]));
  const optimizer = tf.train.adam(opts.learningRate ?? 0.05);
  for (let i = 0; i < (opts.steps ?? 400); i++) {
    optimizer.minimize(() =>
      tf.add(
        tf.losses.softmaxCrossEntropy(y, tf.add(tf.matMul(x, w), b)),
        tf.mul(1e-3, tf.sum(tf.square(w))),
      ) as tf.Scalar
    );
  }
  const model: LogisticModel = {
    features,
    mean,
    std,
    weights: await w.array() as number[][],
    bias: await b.array() as number[],
  };
  optimizer.dispose();
  tf.dispose([x, y, w, b]);
  return model;
}

/** Pure: the class with the highest score under a fitted model. */
export function predictLogistic(
  model: LogisticModel,
  row: Record<MetadataFeature, number>,
): number {
  const z = model.features.map((f, j) => (row[f] - model.mean[j]) / model.std[j]);
  const scores = model.bias.map((b, k) =>
    b + z.reduce((s, v, j) => s + v * model.weights[j][k], 0)
  );
  return argmax(scores);
}

export interface MetadataBaseline {
  /** All features together. */
  all: Metrics;
  /** Each feature alone. */
  single: { feature: MetadataFeature; metrics: Metrics }[];
}

/**
 * How well image size, shape, storage format and brightness alone predict the class: logistic
 * regression fitted on the training folder, scored on the test folder.
 */
export async function metadataBaseline(
  train: readonly ImageItem[],
  test: readonly ImageItem[],
  stats: readonly ImageStats[],
  numClasses: number,
): Promise<MetadataBaseline> {
  const byPath = new Map(stats.map((s) => [s.relPath, metadataVector(s)]));
  const rows = (items: readonly ImageItem[]) =>
    items.map((i) => {
      const v = byPath.get(i.relPath);
      if (!v) throw new Error(`metadataBaseline: no statistics for ${i.relPath}`);
      return v;
    });
  const [trainRows, testRows] = [rows(train), rows(test)];
  const score = async (features: readonly MetadataFeature[]) => {
    const model = await fitLogistic(trainRows, train.map((i) => i.label), numClasses, features);
    return computeMetrics(
      test.map((i) => i.label),
      testRows.map((r) => predictLogistic(model, r)),
      numClasses,
    );
  };
  const all = await score(METADATA_FEATURES);
  const single = [];
  for (const feature of METADATA_FEATURES) {
    single.push({ feature, metrics: await score([feature]) });
  }
  return { all, single };
}

const pct = (v: number) => percent(v);
const ci = (m: Metrics) => `${pct(m.accuracyInterval.lower)} – ${pct(m.accuracyInterval.upper)}`;

/** One row per model: what it saw, its test accuracy and the 95 % interval. */
export function comparisonTable(rows: { model: string; sees: string; metrics: Metrics }[]): Table {
  return table(rows.map((r) => ({
    model: r.model,
    "what it sees": r.sees,
    "test accuracy": pct(r.metrics.accuracy),
    correct: `${r.metrics.correct} of ${r.metrics.total}`,
    "95 % Clopper–Pearson": ci(r.metrics),
  })));
}

/** Test accuracy of each single metadata feature, best first. */
export function singleFeatureTable(baseline: MetadataBaseline): Table {
  return table(
    [...baseline.single]
      .sort((a, b) => b.metrics.accuracy - a.metrics.accuracy)
      .map((s) => ({
        feature: s.feature,
        "test accuracy": pct(s.metrics.accuracy),
        "95 % Clopper–Pearson": ci(s.metrics),
      })),
  );
}

/** A run's test accuracy on all test images and on those never seen in training. */
export function leakageTable(summary: RunSummary): Table {
  const rows = [{ images: `all ${summary.test.total} test images`, metrics: summary.test }];
  if (summary.unseenTest) {
    rows.push({
      images: `the ${summary.unseenTest.metrics.total} not copied from training`,
      metrics: summary.unseenTest.metrics,
    });
  }
  return table(rows.map((r) => ({
    "evaluated on": r.images,
    accuracy: pct(r.metrics.accuracy),
    correct: `${r.metrics.correct} of ${r.metrics.total}`,
    "95 % Clopper–Pearson": ci(r.metrics),
  })));
}

/** Majority-class accuracy on the test set: the floor every model must beat. */
export function majorityBaseline(
  train: readonly ImageItem[],
  test: readonly ImageItem[],
  numClasses: number,
): Metrics {
  const counts = Array.from(
    { length: numClasses },
    (_, k) => train.filter((i) => i.label === k).length,
  );
  const majority = counts.indexOf(Math.max(...counts));
  return computeMetrics(test.map((i) => i.label), test.map(() => majority), numClasses);
}

/**
 * Images for a Grad-CAM grid: `perClass` correctly classified images of each class, then up to
 * `wrong` misclassified ones.
 */
export function gradCamGroups(
  predictions: readonly Prediction[],
  classNames: readonly string[],
  opts: { perClass?: number; wrong?: number } = {},
): { title: string; items: ImageItem[] }[] {
  const groups = classNames.map((c, k) => ({
    title: `right: ${c}`,
    items: predictions.filter((p) => p.correct && p.item.label === k).slice(0, opts.perClass ?? 3)
      .map((p) => p.item),
  }));
  groups.push({
    title: "wrong",
    items: predictions.filter((p) => !p.correct).slice(0, opts.wrong ?? 3).map((p) => p.item),
  });
  return groups.filter((g) => g.items.length > 0);
}

/** The default seeds of the review's sweep. */
export const REVIEW_SEEDS = [1, 2, 3, 4, 5];

/**
 * The seed sweep for the review: a finished one for `config` in the outputs folder, or, in quick
 * mode, a 3-seed quick sweep run now. In full mode a missing sweep is not started here (it takes
 * about 20–25 minutes for 5 seeds at 446 px on 2 cores); the note says how to run it.
 */
export async function sweepForReview(
  config: RunConfig,
  opts: { root?: string; data?: string } = {},
): Promise<{ sweep?: SweepResult; note: string }> {
  const root = outputsRoot(opts.root);
  const candidates = fs.existsSync(root)
    ? fs.readdirSync(root).filter((d) => d.startsWith("sweep_")).map((d) => path.join(root, d))
    : [];
  for (const dir of candidates.sort().reverse()) {
    const sweep = loadSweep(dir);
    if (sweep && sweep.runs.every((r) => sameSettings(r.config, config, ["seed"]))) {
      return { sweep, note: `Seed sweep from ${dir}` };
    }
  }
  if (quickMode()) {
    const sweep = await runSweep([1, 2, 3], {
      config,
      data: opts.data,
      outputs: root,
      quiet: true,
    });
    return { sweep, note: `Quick seed sweep (3 seeds) run now in ${sweep.sweepDir}` };
  }
  return {
    note: `No seed sweep with these settings in ${root}. Run \`deno task reproduce --seeds ` +
      `${
        REVIEW_SEEDS.join(",")
      }\` (with the same flags as the run reviewed here) and reopen this notebook.`,
  };
}
