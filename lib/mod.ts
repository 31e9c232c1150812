/**
 * COVID-19 chest X-ray classification with an ImageNet-pretrained MobileNetV3-Large, reproduced
 * in TF.js on Deno. This module is the public surface: notebooks and task scripts import from here.
 *
 * The stages, in the paper's order: data (`prepareData`), preprocessing (`iterateBatches`,
 * augmentation), model (`buildModel`), training (`trainModel`), evaluation (`evaluateModel`).
 *
 * @example
 * ```ts
 * import { initBackend, prepareData, countByClass, plotClassCounts } from "./lib/mod.ts";
 * await initBackend();
 * const { dataset } = await prepareData();
 * await plotClassCounts(countByClass(dataset)).save("outputs/class-counts");
 * ```
 * @module
 */
export { type BackendInfo, initBackend, tf } from "./backend.ts";
export { PROJECT_ROOT, projectCacheDir, projectPath, userCacheDir } from "./paths.ts";
export { PAPER_CONFIG, QUICK_OVERRIDES, quickMode, type RunConfig, runConfig } from "./config.ts";
export { Rng } from "./rng.ts";

// Data
export {
  countByClass,
  type Dataset,
  DatasetError,
  describeImages,
  type DuplicateGroup,
  duplicatesTable,
  findDuplicates,
  type ImageItem,
  type ImageStats,
  leakedTestItems,
  loadDataset,
  resolveDataDir,
  splitSummary,
  splitTrainValidation,
  summarizeStorage,
  validateDataset,
  type ValidationReport,
} from "./dataset.ts";
export { prepareData, type PreparedData } from "./pipeline.ts";
export {
  decodeResized,
  DEFAULT_MAX_PIXELS,
  ImageError,
  type ImageInfo,
  readImageInfo,
} from "./images.ts";
export { ImageCache } from "./image_cache.ts";

// Preprocessing
export {
  applyAugmentation,
  type AugmentationOptions,
  type AugmentationParams,
  jitterEffect,
  normalizationSummary,
  normalize,
  sampleAugmentation,
} from "./preprocess.ts";
export { type Batch, batchCount, batchSummary, iterateBatches } from "./batches.ts";

// Model
export {
  type ArchitectureRow,
  architectureTable,
  buildMobileNetV3Large,
  buildModel,
  describeArchitecture,
  describeHead,
  LARGE_BLOCKS,
  LAYER,
  type ModelOptions,
} from "./model.ts";
export {
  HardSigmoid,
  HardSwish,
  type NormalizationSpec,
  Normalize,
  SeededDropout,
} from "./layers.ts";
export {
  IMAGENET_WEIGHTS,
  imagenetCachePath,
  KERAS_NORMALIZATION,
  loadKerasWeights,
  resolveWeights,
  TORCHVISION_IMAGENET_NORMALIZATION,
  weightsAvailability,
  WeightsError,
  type WeightsInfo,
} from "./weights.ts";
export {
  checkParity,
  PARITY_TOLERANCE,
  type ParityResult,
  parityTable,
  resolveParityDir,
} from "./parity.ts";
export {
  CheckpointError,
  type CheckpointMetadata,
  loadCheckpoint,
  readCheckpointMetadata,
  saveCheckpoint,
} from "./checkpoint.ts";

// Figures and tables
export { Figure, plotClassCounts, plotFigure, plotImageSizes, plotStorageModes } from "./charts.ts";
export { augmentationPreview, maskPreview, predictionGrid, sampleGrid } from "./grids.ts";
export { type Cell, Table, table } from "./tables.ts";
export { inNotebook, show } from "./show.ts";
export {
  expandInputs,
  type ImagePrediction,
  predictImages,
  predictionsTable,
  predictProbabilities,
  type PredictResult,
  writePredictionsCsv,
  writePredictionsJson,
} from "./predict.ts";

// Training, evaluation, runs
export {
  createStepEngine,
  type EpochRecord,
  learningRateAt,
  loadTrainingState,
  type StepEngine,
  trainModel,
  type TrainOptions,
  type TrainResult,
  validationPass,
} from "./train.ts";
export { type Predictor, predictorFor } from "./inference.ts";
export {
  evaluateModel,
  type Evaluation,
  loadEvaluationImages,
  type Prediction,
} from "./evaluate.ts";
export {
  classificationReport,
  clopperPearson,
  computeMetrics,
  type ConfusionMatrix,
  confusionMatrix,
  type Interval,
  type Metrics,
  wilson,
} from "./metrics.ts";
export { plotConfusionMatrix, plotTrainingCurves } from "./charts.ts";
export {
  accuracySentence,
  intervalTable,
  metricsTable,
  outputsRoot,
  renderReport,
  resolveRunDir,
  type RunSummary,
} from "./report.ts";
export {
  evaluateRun,
  type ExperimentOptions,
  type ExperimentResult,
  type FinishedRun,
  loadRun,
  runExperiment,
  trainOrLoadRun,
} from "./experiment.ts";

// Review
export { gradCam, gradCamGrid, heatShare, overlayHeatmap } from "./gradcam.ts";
export { applyMask, INPUT_MASKS, type InputMask, LUNG_FIELD } from "./preprocess.ts";
export {
  loadSweep,
  plotSeedSpread,
  runSweep,
  type Spread,
  spread,
  summarizeSweep,
  type SweepResult,
  sweepRunsTable,
  sweepSpreadTable,
} from "./sweep.ts";
export {
  comparisonTable,
  fitLogistic,
  gradCamGroups,
  leakageTable,
  majorityBaseline,
  METADATA_FEATURES,
  metadataBaseline,
  metadataVector,
  predictLogistic,
  REVIEW_SEEDS,
  singleFeatureTable,
  sweepForReview,
} from "./review.ts";
export { findOrTrainRun, listRuns } from "./experiment.ts";
