/**
 * A model evaluated on a folder of images, as `deno task evaluate` does it: find the images
 * (a data set's test/, or any ImageFolder), check every file, apply everything the checkpoint's
 * metadata says (input size, normalisation, mask), predict, score.
 */
import * as path from "node:path";
import { ImageCache, validateDataset, type ValidationReport } from "../data/mod.ts";
import {
  checkpointExifRotate,
  checkpointInputMask,
  type CheckpointMetadata,
} from "../model/mod.ts";
import type { tf } from "../backend.ts";
import type { Predictor } from "../engine/mod.ts";
import { DatasetError } from "../data/mod.ts";
import {
  evaluateModel,
  type Evaluation,
  type EvaluationImages,
  loadEvaluationImages,
} from "./evaluate.ts";

export interface FolderEvaluation {
  evaluation: Evaluation;
  images: EvaluationImages;
  report: ValidationReport;
  /** The decoded images, as the model saw them (for figures and Grad-CAM). */
  cache: ImageCache;
}

/** Evaluate `model` (with its metadata) on the images in `dir`. */
export async function evaluateFolder(
  model: tf.LayersModel,
  meta: CheckpointMetadata,
  dir: string,
  opts: {
    skipBad?: boolean;
    batchSize?: number;
    maxPixels?: number;
    quiet?: boolean;
    /** Make every image 1-channel gray at this size before the model's preprocessing. */
    grayAt?: number;
    /** A predictor of `model` to use (see evaluateModel; the caller disposes it). */
    predictor?: Predictor;
  } = {},
): Promise<FolderEvaluation> {
  const images = await loadEvaluationImages(dir, meta.classNames);
  const cache = new ImageCache({
    imageSize: meta.imageSize,
    maxPixels: opts.maxPixels,
    grayAt: opts.grayAt,
    exifRotate: checkpointExifRotate(meta),
    // Each image is read twice (checked, then predicted), so the disk cache serves the second
    // read; holding a folder's pixels in memory too cost ~130 MB of a run's peak for 219 images.
    memoryLimitBytes: 0,
  });
  const { dataset, report } = await validateDataset(
    {
      root: images.root,
      classNames: meta.classNames,
      train: [],
      test: images.items,
      problems: images.problems,
    },
    cache,
    { skipBad: opts.skipBad, scope: path.relative(images.root, images.folder) },
  );
  if (dataset.test.length === 0) {
    throw new DatasetError(
      `Nothing to evaluate in ${images.folder}: ${
        images.items.length === 0
          ? "no image files in its class folders"
          : `all ${images.items.length} images were left out as unreadable`
      }.`,
    );
  }
  const evaluation = await evaluateModel(model, dataset.test, {
    cache,
    numClasses: meta.classNames.length,
    batchSize: opts.batchSize,
    mask: checkpointInputMask(meta),
    quiet: opts.quiet,
    temperature: meta.calibration?.temperature,
    predictor: opts.predictor,
  });
  return { evaluation, images: { ...images, items: dataset.test }, report, cache };
}
