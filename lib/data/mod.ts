/**
 * The data: an ImageFolder data set found, scanned, validated, de-duplicated and split as the paper
 * did; images decoded once into a cache; training augmentation; batches as tensors.
 *
 * @example
 * ```ts
 * const { dataset, splits, cache } = await prepareData();
 * ```
 * @module
 */
export {
  classBalanceSentence,
  countByClass,
  type Dataset,
  DatasetError,
  DEFAULT_DATA_DIR,
  IMAGE_EXTENSIONS,
  imageFolderClasses,
  type ImageItem,
  loadDataset,
  resolveDataDir,
  resolveExternalDir,
  scanImageFolder,
  type ScanProblem,
} from "./image_folder.ts";
export {
  type DuplicateGroup,
  duplicatesTable,
  findDuplicates,
  leakedTestItems,
} from "./duplicates.ts";
export {
  calibrateNearDuplicates,
  findNearDuplicates,
  type ImageSignature,
  imageSignature,
  imageSignatures,
  NEAR_DUPLICATE_METHOD,
  type NearDuplicateCalibration,
  type NearDuplicatePair,
  nearDuplicatePairs,
  type NearDuplicateReport,
  SIGNATURE_IMAGE_SIZE,
  signatureDistance,
} from "./near_duplicates.ts";
export { splitSummary, splitTrainValidation } from "./split.ts";
export { parseChecksums, validateDataset, type ValidationReport } from "./validate.ts";
export {
  describeImages,
  type ImageStats,
  isGrayContent,
  storageMode,
  summarizeStorage,
} from "./image_stats.ts";
export {
  COPY_KINDS,
  type CopyKind,
  decodeResized,
  DEFAULT_MAX_PIXELS,
  exifOrientations,
  ImageError,
  type ImageInfo,
  readImageInfo,
  writeSyntheticCopy,
} from "./decode.ts";
export { ImageCache } from "./image_cache.ts";
export {
  applyAugmentation,
  type AugmentationParams,
  jitterEffect,
  type JitterStep,
  sampleAugmentation,
  toFloat,
} from "./augment.ts";
export { applyMask, LUNG_FIELD } from "./masks.ts";
export {
  type Batch,
  type BatchAugmenter,
  batchCount,
  batchSummary,
  iterateBatches,
} from "./batches.ts";
export { prepareData, type PreparedData } from "./prepare.ts";
