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
  compareOutcomes,
  differenceText,
  type FinishedRun,
  leakageAccuracyTable,
  loadSweep,
  type Outcomes,
  outputsRoot,
  runOutcomes,
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
  /** All features together: right or wrong on each test image (by its path). */
  allOutcomes: Outcomes;
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
  const fit = async (features: readonly MetadataFeature[]) => {
    const model = await fitLogistic(trainRows, train.map((i) => i.label), numClasses, features);
    return testRows.map((r) => predictLogistic(model, r));
  };
  const score = (predicted: number[]) =>
    computeMetrics(test.map((i) => i.label), predicted, numClasses);
  const allPredicted = await fit(METADATA_FEATURES);
  const single = [];
  for (const feature of METADATA_FEATURES) {
    single.push({ feature, metrics: score(await fit([feature])) });
  }
  return { all: score(allPredicted), allOutcomes: outcomesOf(test, allPredicted), single };
}

/** Right or wrong per image, keyed by its path, from predicted classes in the items' order. */
export function outcomesOf(items: readonly ImageItem[], predicted: readonly number[]): Outcomes {
  return new Map(items.map((item, i) => [item.relPath, predicted[i] === item.label]));
}

/** Right or wrong per image of an evaluation's predictions. */
export function predictionOutcomes(predictions: readonly Prediction[]): Outcomes {
  return new Map(predictions.map((p) => [p.item.relPath, p.correct]));
}

const pct = (v: number) => percent(v);
const ci = (m: Metrics) => `${pct(m.accuracyInterval.lower)} – ${pct(m.accuracyInterval.upper)}`;

/** A model in the review's comparison. */
export interface ComparedModel {
  model: string;
  sees: string;
  metrics: Metrics;
  /** Right or wrong per test image, for the paired test against the reference. */
  outcomes?: Outcomes;
}

/**
 * One row per model: what it saw, its test accuracy and the 95 % interval; with a reference (the
 * reviewed run), each other model's accuracy difference from it on the same images, with
 * Newcombe's interval and McNemar's exact p. Two accuracies on the same 66 images are compared
 * pairwise, never by their separate intervals.
 */
export function comparisonTable(
  rows: readonly ComparedModel[],
  opts: { reference?: ComparedModel } = {},
): Table {
  const ref = opts.reference;
  return table(rows.map((r) => {
    const paired = ref?.outcomes && r.outcomes && r !== ref
      ? compareOutcomes(ref.outcomes, r.outcomes, ["reference", r.model])
      : undefined;
    return {
      model: r.model,
      "what it sees": r.sees,
      "test accuracy": pct(r.metrics.accuracy),
      correct: `${r.metrics.correct} of ${r.metrics.total}`,
      "95 % Clopper–Pearson": ci(r.metrics),
      ...(ref
        ? {
          "reviewed run − this": paired ? differenceText(paired) : r === ref ? "(reference)" : "—",
          "McNemar p": paired
            ? (paired.mcnemarP < 0.001 ? "< 0.001" : paired.mcnemarP.toFixed(3))
            : "",
        }
        : {}),
    };
  }));
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

/**
 * A run's test accuracy on all test images and on those never seen in training (byte-identical
 * and, for runs with the near-duplicate finder, near-identical copies left out).
 */
export function leakageTable(summary: RunSummary): Table {
  if (summary.leakage) return leakageAccuracyTable(summary.test, summary.leakage);
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
  return majorityModel(train, test, numClasses).metrics;
}

/** "Always the training folder's largest class", as a model of the comparison. */
export function majorityModel(
  train: readonly ImageItem[],
  test: readonly ImageItem[],
  numClasses: number,
): ComparedModel {
  const counts = Array.from(
    { length: numClasses },
    (_, k) => train.filter((i) => i.label === k).length,
  );
  const majority = counts.indexOf(Math.max(...counts));
  const predicted = test.map(() => majority);
  return {
    model: "always the largest class",
    sees: "nothing",
    metrics: computeMetrics(test.map((i) => i.label), predicted, numClasses),
    outcomes: outcomesOf(test, predicted),
  };
}

/** The metadata baseline (all features) as a model of the comparison. */
export function metadataModel(baseline: MetadataBaseline): ComparedModel {
  return {
    model: "logistic regression",
    sees: "size, shape, format, brightness",
    metrics: baseline.all,
    outcomes: baseline.allOutcomes,
  };
}

/** A finished run as a model of the comparison (its per-image outcomes from predictions.csv). */
export function runModel(run: FinishedRun, model: string, sees: string): ComparedModel {
  return { model, sees, metrics: run.summary.test, outcomes: runOutcomes(run) };
}

/** Every pair of a sweep's seeds on the same test images: difference and McNemar's p. */
export function sweepPairsTable(sweep: SweepResult): Table {
  const runs = sweep.runs.map((r) => ({
    seed: r.config.seed,
    outcomes: runOutcomes({
      runDir: path.join(sweep.sweepDir, `seed${r.config.seed}`),
      summary: r,
      history: r.history,
      bestDir: "",
    }),
  }));
  const rows = [];
  for (let i = 0; i < runs.length; i++) {
    for (let j = i + 1; j < runs.length; j++) {
      const c = compareOutcomes(runs[i].outcomes, runs[j].outcomes, [
        `seed ${runs[i].seed}`,
        `seed ${runs[j].seed}`,
      ]);
      rows.push({
        seeds: `${runs[i].seed} – ${runs[j].seed}`,
        accuracies: `${pct(c.accuracyA)} – ${pct(c.accuracyB)}`,
        "disagree on": c.onlyA + c.onlyB,
        difference: differenceText(c),
        "McNemar p": c.mcnemarP < 0.001 ? "< 0.001" : c.mcnemarP.toFixed(3),
      });
    }
  }
  return table(rows, { title: "Every pair of seeds on the same test images" });
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
