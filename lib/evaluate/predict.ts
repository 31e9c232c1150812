/**
 * Predictions for any images (a reader's own X-ray, a folder): class probabilities from a
 * checkpoint, with exactly the preprocessing evaluation uses (decode, resize, mask, the model's
 * own normalisation).
 */
import * as fs from "node:fs";
import * as path from "node:path";
import { initBackend, tf } from "../backend.ts";
import { writeFileAtomic, writeJsonAtomic } from "../files.ts";
import { percent } from "../format.ts";
import { argmax, softmax } from "../maths.ts";
import { csvText, type Table, table } from "../tables.ts";
import { applyMask, decodeResized, IMAGE_EXTENSIONS, ImageError, toFloat } from "../data/mod.ts";
import {
  checkpointExifRotate,
  checkpointInputMask,
  type CheckpointMetadata,
} from "../model/mod.ts";
import { createPredictor, type Predictor } from "../engine/mod.ts";
import { assertFinite } from "./evaluate.ts";

/**
 * Softmax probabilities for a batch.
 * @param x Tensor4D [B, S, S, 3] RGB in 0..255 (not disposed).
 * @returns B rows of numClasses probabilities, each row summing to 1.
 */
export async function predictProbabilities(
  model: tf.LayersModel | Predictor,
  x: tf.Tensor4D,
): Promise<number[][]> {
  const probs = tf.tidy(() => tf.softmax(model.predict(x) as tf.Tensor2D));
  const rows = await probs.array() as number[][];
  probs.dispose();
  return rows;
}

export interface ImagePrediction {
  file: string;
  predicted: string;
  probabilities: Record<string, number>;
}

export interface PredictResult {
  predictions: ImagePrediction[];
  /** The temperature the probabilities were calibrated with (the checkpoint's; absent: none). */
  temperature?: number;
  /** Inputs that could not be predicted, with the reason. */
  failed: { file: string; reason: string }[];
}

/** Files to predict: files as given, folders searched recursively for images (sorted). */
export function expandInputs(
  inputs: readonly string[],
): { files: string[]; failed: PredictResult["failed"] } {
  const files: string[] = [];
  const failed: PredictResult["failed"] = [];
  const seen = new Set<string>();
  // Folders and links to folders are walked (as evaluate's ImageFolder scan does), each once.
  const walk = (dir: string) => {
    const real = fs.realpathSync(dir);
    if (seen.has(real)) return;
    seen.add(real);
    for (
      const entry of fs.readdirSync(dir, { withFileTypes: true }).sort((a, b) =>
        a.name.localeCompare(b.name)
      )
    ) {
      if (entry.name.startsWith(".")) continue;
      const p = path.join(dir, entry.name);
      let isFolder = entry.isDirectory();
      if (entry.isSymbolicLink()) {
        try {
          isFolder = fs.statSync(p).isDirectory();
        } catch {
          failed.push({ file: p, reason: "a symbolic link to nothing" });
          continue;
        }
      }
      if (isFolder) walk(p);
      else if (IMAGE_EXTENSIONS.includes(path.extname(entry.name).toLowerCase())) files.push(p);
      else {
        failed.push({
          file: p,
          reason: `not an image file (extension "${path.extname(entry.name)}")`,
        });
      }
    }
  };
  for (const input of inputs) {
    if (!fs.existsSync(input)) failed.push({ file: input, reason: "no such file or folder" });
    else if (fs.statSync(input).isDirectory()) walk(input);
    else files.push(input);
  }
  return { files, failed };
}

/**
 * Predict every image in `inputs` (files or folders). Unreadable inputs are listed with the reason;
 * the rest are still predicted.
 */
export async function predictImages(
  model: tf.LayersModel,
  meta: Pick<CheckpointMetadata, "classNames" | "imageSize" | "training" | "calibration">,
  inputs: readonly string[],
  opts: { batchSize?: number; maxPixels?: number } = {},
): Promise<PredictResult> {
  await initBackend();
  const { files, failed } = expandInputs(inputs);
  const size = meta.imageSize;
  const mask = checkpointInputMask(meta);
  const temperature = meta.calibration?.temperature ?? 1;
  const predictions: ImagePrediction[] = [];
  const batchSize = opts.batchSize ?? 8;
  const predictor = createPredictor(model);
  try {
    for (let i = 0; i < files.length; i += batchSize) {
      const ready: { file: string; pixels: Float32Array }[] = [];
      for (const file of files.slice(i, i + batchSize)) {
        try {
          const pixels = await decodeResized(file, size, {
            maxPixels: opts.maxPixels,
            exifRotate: checkpointExifRotate(meta),
          });
          ready.push({ file, pixels: applyMask(toFloat(pixels), size, mask) });
        } catch (error) {
          if (!(error instanceof ImageError)) throw error;
          failed.push({ file, reason: error.message });
        }
      }
      if (ready.length === 0) continue;
      const data = new Float32Array(ready.length * size * size * 3);
      ready.forEach((r, k) => data.set(r.pixels, k * size * size * 3));
      const x = tf.tensor4d(data, [ready.length, size, size, 3]);
      const logits = predictor.predict(x);
      const rows = await logits.array() as number[][];
      tf.dispose([x, logits]);
      rows.forEach((z, k) => {
        const p = softmax(z.map((v) => v / temperature));
        assertFinite(p, ready[k].file);
        const best = argmax(z);
        predictions.push({
          file: ready[k].file,
          predicted: meta.classNames[best],
          probabilities: Object.fromEntries(meta.classNames.map((c, j) => [c, p[j]])),
        });
      });
    }
  } finally {
    predictor.dispose();
  }
  return { predictions, failed, ...(temperature !== 1 ? { temperature } : {}) };
}

/** Predictions as a table: one row per image, one column per class probability. */
export function predictionsTable(result: PredictResult, classNames: readonly string[]): Table {
  return table(result.predictions.map((p) => ({
    file: p.file,
    predicted: p.predicted,
    ...Object.fromEntries(
      classNames.map((c) => [
        result.temperature ? `calibrated p(${c})` : `p(${c})`,
        percent(p.probabilities[c]),
      ]),
    ),
  })));
}

/**
 * Write predictions as CSV: one column per class probability, headed `calibrated p(class)` when
 * the probabilities are temperature-scaled.
 */
export async function writePredictionsCsv(
  file: string,
  result: PredictResult,
  classNames: readonly string[],
) {
  await writeFileAtomic(
    file,
    csvText([
      [
        "file",
        "predicted",
        ...classNames.map((c) => result.temperature ? `calibrated p(${c})` : `p(${c})`),
      ],
      ...result.predictions.map((p) => [
        p.file,
        p.predicted,
        ...classNames.map((c) => p.probabilities[c].toFixed(6)),
      ]),
    ]),
  );
}

/** Write predictions and failures as JSON. */
export async function writePredictionsJson(file: string, result: PredictResult): Promise<void> {
  await writeJsonAtomic(file, result);
}
