/**
 * A model evaluated on a folder of images, as `deno task evaluate` does it: find the images
 * (a data set's test/, or any ImageFolder), check every file, apply everything the checkpoint's
 * metadata says (input size, normalisation, mask), predict, score.
 */
import * as path from "node:path";
import { ImageCache, type ImageItem, validateDataset, type ValidationReport } from "../data/mod.ts";
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

/** The images of a folder, checked and decoded as a checkpoint's model would see them. */
export interface FolderImages {
  images: EvaluationImages;
  /** The images left after the check (all of them unless `skipBad` left some out). */
  items: ImageItem[];
  report: ValidationReport;
  /** The decoded images, as the model sees them (on disk; for figures and Grad-CAM). */
  cache: ImageCache;
}

/** What reading a folder for a model needs of the model's metadata. */
export type ImageSettings = Pick<CheckpointMetadata, "classNames" | "imageSize"> & {
  exifRotate?: boolean;
};

/**
 * Find the images in `dir` (an ImageFolder, or a root with test/), check every file and decode it
 * into the disk cache at the model's size (`grayAt`: made 1-channel gray at that size first). Bad
 * files stop with the list of them unless `skipBad`; nothing left to evaluate is an error.
 */
export async function readFolderImages(
  dir: string,
  settings: ImageSettings,
  opts: {
    skipBad?: boolean;
    maxPixels?: number;
    grayAt?: number;
    onProgress?: (done: number, total: number) => void;
    /** The folder as `loadEvaluationImages` already found it (not hashed again). */
    images?: EvaluationImages;
  } = {},
): Promise<FolderImages> {
  const images = opts.images ?? await loadEvaluationImages(dir, settings.classNames);
  const cache = new ImageCache({
    imageSize: settings.imageSize,
    maxPixels: opts.maxPixels,
    grayAt: opts.grayAt,
    exifRotate: settings.exifRotate ?? false,
    // Each image is read twice (checked, then predicted), so the disk cache serves the second
    // read; holding a folder's pixels in memory too cost ~130 MB of a run's peak for 219 images.
    memoryLimitBytes: 0,
  });
  const { dataset, report } = await validateDataset(
    {
      root: images.root,
      classNames: settings.classNames,
      train: [],
      test: images.items,
      problems: images.problems,
    },
    cache,
    {
      skipBad: opts.skipBad,
      scope: path.relative(images.root, images.folder),
      onProgress: opts.onProgress,
    },
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
  return { images, items: dataset.test, report, cache };
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
  const { images, items, report, cache } = await readFolderImages(
    dir,
    { ...meta, exifRotate: checkpointExifRotate(meta) },
    opts,
  );
  const evaluation = await evaluateModel(model, items, {
    cache,
    numClasses: meta.classNames.length,
    batchSize: opts.batchSize,
    mask: checkpointInputMask(meta),
    quiet: opts.quiet,
    temperature: meta.calibration?.temperature,
    predictor: opts.predictor,
  });
  return { evaluation, images: { ...images, items }, report, cache };
}
