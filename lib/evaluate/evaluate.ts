/**
 * Evaluate a model on a set of images: predictions with probabilities, then the metrics.
 */
import * as fs from "node:fs";
import * as path from "node:path";
import { initBackend, tf } from "../backend.ts";
import { UserError } from "../errors.ts";
import type { InputMask } from "../config.ts";
import { argmax, softmax } from "../maths.ts";
import { createProgress } from "../progress.ts";
import {
  DatasetError,
  type ImageCache,
  type ImageItem,
  iterateBatches,
  scanImageFolder,
  type ScanProblem,
} from "../data/mod.ts";
import { createPredictor, type Predictor } from "../engine/mod.ts";
import { computeMetrics, type Metrics } from "./metrics.ts";

/** A model whose outputs are not numbers (NaN or infinite): damaged weights, or a diverged run. */
export class ModelOutputError extends UserError {
  override name = "ModelOutputError";
}

/** Throws {@link ModelOutputError} when a row of probabilities holds NaN or an infinity. */
export function assertFinite(probabilities: readonly number[], what: string): void {
  if (!probabilities.every(Number.isFinite)) {
    throw new ModelOutputError(
      `The model's output for ${what} is not a number (${probabilities.join(", ")}): its weights ` +
        "are damaged or its training diverged. Nothing was written from it.",
    );
  }
}

/** One image's prediction. */
export interface Prediction {
  item: ImageItem;
  predicted: number;
  /** The model's outputs before the softmax. */
  logits: number[];
  /** softmax(logits / temperature): calibrated when the evaluation has a temperature. */
  probabilities: number[];
  correct: boolean;
}

export interface Evaluation {
  predictions: Prediction[];
  metrics: Metrics;
  /** The temperature the probabilities were calibrated with (absent: none, T = 1). */
  temperature?: number;
  /** How the predictions ran (lib/engine/select.ts). */
  engine: Predictor["engine"];
  /** Which element-wise kernels they used (lib/engine/kernels.ts); absent for the eager engine. */
  kernels?: Predictor["kernels"];
}

/**
 * Predict every item in inference mode (one TensorFlow graph where the native backend runs) and
 * compute the paper's metrics.
 *
 * @param model The trained model (not disposed).
 * @param items The images to score, labelled.
 * @param opts.cache Their decoded pixels at the model's size.
 * @param opts.temperature Calibrate the probabilities (the checkpoint's T); absent: T = 1.
 * @returns Per-image predictions (logits and probabilities) and the metrics.
 * @throws {ModelOutputError} When an output is not a number (damaged weights).
 *
 * @example
 * ```ts
 * const { metrics } = await evaluateModel(model, splits.test, { cache, numClasses: 3 });
 * console.log(metrics.accuracy, metrics.confusion);
 * ```
 */
export async function evaluateModel(
  model: tf.LayersModel,
  items: readonly ImageItem[],
  opts: {
    cache: ImageCache;
    numClasses: number;
    batchSize?: number;
    mask?: InputMask;
    quiet?: boolean;
    /** Divide the logits by this before the softmax (temperature scaling; default 1). */
    temperature?: number;
    /**
     * A predictor of `model` to use (the caller disposes it): several evaluations of one model
     * share one TensorFlow graph instead of building one each. Absent: one is made and freed.
     */
    predictor?: Predictor;
  },
): Promise<Evaluation> {
  await initBackend();
  if (items.length === 0) throw new DatasetError("Nothing to evaluate: no images were given");
  const temperature = opts.temperature ?? 1;
  const batchSize = opts.batchSize ?? 8;
  const predictions: Prediction[] = [];
  const progress = createProgress("  evaluate", Math.ceil(items.length / batchSize), {
    quiet: opts.quiet,
  });
  let done = 0;
  const predictor = opts.predictor ?? createPredictor(model);
  try {
    for await (
      const batch of iterateBatches(items, { batchSize, cache: opts.cache, mask: opts.mask })
    ) {
      const logits = predictor.predict(batch.x);
      const rows = await logits.array() as number[][];
      tf.dispose([logits, batch.x, batch.labels]);
      rows.forEach((z, i) => {
        const p = softmax(z.map((v) => v / temperature));
        assertFinite(p, batch.items[i].relPath);
        const predicted = argmax(z);
        predictions.push({
          item: batch.items[i],
          predicted,
          logits: z,
          probabilities: p,
          correct: predicted === batch.items[i].label,
        });
      });
      progress.update(++done);
    }
  } finally {
    if (!opts.predictor) predictor.dispose();
  }
  await progress.end();
  const metrics = computeMetrics(
    predictions.map((p) => p.item.label),
    predictions.map((p) => p.predicted),
    opts.numClasses,
  );
  return {
    predictions,
    metrics,
    engine: predictor.engine,
    kernels: predictor.kernels,
    ...(temperature !== 1 ? { temperature } : {}),
  };
}

/** The images of an evaluation folder, labelled by the model's classes. */
export interface EvaluationImages {
  /** The folder of class folders that was scanned. */
  folder: string;
  /** Paths are relative to this (the data set root when `dir` was one: SHA256SUMS lives there). */
  root: string;
  items: ImageItem[];
  /** Class folders found, with their image counts (a shrink is visible). */
  counts: { className: string; images: number }[];
  /**
   * Files the scan found but cannot use (links to nothing, BMP, no extension, .dcm, links into
   * another class): validation stops on them unless --skip-bad, as reproduce does.
   */
  problems: ScanProblem[];
}

/**
 * The images to evaluate in `dir`, labelled with the checkpoint's classes: `dir` is an ImageFolder
 * (one sub-folder per class), or a data set root whose `test/` is one. Classes are matched by name;
 * a folder whose class the model does not know is an error.
 */
export async function loadEvaluationImages(
  dir: string,
  classNames: readonly string[],
): Promise<EvaluationImages> {
  if (!fs.existsSync(dir)) {
    throw new DatasetError(`Cannot evaluate on "${dir}": no such folder`);
  }
  if (!fs.statSync(dir).isDirectory()) {
    throw new DatasetError(
      `Cannot evaluate on "${dir}": a file, not a folder (give an ImageFolder: one sub-folder ` +
        "per class, or a data set root holding train/ and test/)",
    );
  }
  const isRoot = fs.existsSync(path.join(dir, "test")) && fs.existsSync(path.join(dir, "train"));
  const folder = isRoot ? path.join(dir, "test") : dir;
  const scanned = await scanImageFolder(folder, "test", { root: dir });
  const unknown = scanned.classNames.filter((c) => !classNames.includes(c));
  if (unknown.length > 0) {
    throw new DatasetError(
      `Cannot evaluate on ${folder}: class folder(s) ${unknown.join(", ")} unknown to the model, ` +
        `which knows ${classNames.join(", ")}`,
    );
  }
  return {
    folder,
    root: dir,
    // Relabel by the model's class order.
    items: scanned.items.map((item) => ({ ...item, label: classNames.indexOf(item.className) })),
    counts: scanned.classNames.map((className) => ({
      className,
      images: scanned.items.filter((i) => i.className === className).length,
    })),
    problems: scanned.problems,
  };
}
