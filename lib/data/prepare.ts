/**
 * The data stages composed in the paper's order, for `deno task reproduce` and the notebooks:
 * find the data set, scan it, validate every file (decoding it into the cache), split it.
 */
import { initBackend } from "../backend.ts";
import { type RunConfig, runConfig } from "../config.ts";
import { type Dataset, type ImageItem, loadDataset, resolveDataDir } from "./image_folder.ts";
import { ImageCache } from "./image_cache.ts";
import { splitTrainValidation } from "./split.ts";
import { validateDataset, type ValidationReport } from "./validate.ts";

export interface PreparedData {
  /** The validated data set (bad files left out only with skipBad). */
  dataset: Dataset;
  /** Training / validation (from the training folder, seeded) and the test folder. */
  splits: { train: ImageItem[]; validation: ImageItem[]; test: ImageItem[] };
  /** Decoded, resized pixels at `config.imageSize`, memory + disk. */
  cache: ImageCache;
  report: ValidationReport;
  config: RunConfig;
}

/**
 * Find, scan, validate (decoding every image once into the cache) and split the data set.
 *
 * @param opts.data The data set folder (else COVID_CXR_DATA, else data/Covid19-dataset).
 * @param opts.config Settings over the paper's (image size, seed, validation fraction …).
 * @param opts.skipBad Leave unreadable files out (recorded in the report) instead of stopping.
 * @returns The validated data set, its train/validation/test split, the decode cache and the
 *   validation report.
 * @throws {DatasetError} When the data set is missing or has bad files (without `skipBad`).
 *
 * @example
 * ```ts
 * const { dataset, splits, cache } = await prepareData();
 * ```
 */
export async function prepareData(
  opts: {
    data?: string;
    config?: Partial<RunConfig>;
    skipBad?: boolean;
    onProgress?: (done: number, total: number) => void;
  } = {},
): Promise<PreparedData> {
  await initBackend(); // callers go on to make tensors; never let TF.js pick a backend itself
  const config = runConfig(opts.config);
  const root = resolveDataDir(opts.data);
  const scanned = await loadDataset(root);
  const cache = new ImageCache({
    imageSize: config.imageSize,
    maxPixels: config.maxPixels,
    exifRotate: config.exifRotate,
  });
  const { dataset, report } = await validateDataset(scanned, cache, {
    skipBad: opts.skipBad,
    onProgress: opts.onProgress,
  });
  const { train, validation } = splitTrainValidation(dataset.train, {
    validationFraction: config.validationFraction,
    seed: config.seed,
    stratify: config.stratify,
  });
  return { dataset, splits: { train, validation, test: dataset.test }, cache, report, config };
}
