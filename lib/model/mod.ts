/**
 * The model: MobileNetV3-Large as a TF.js layers model, its weights (Keras's files, the head
 * swap), the input normalisation that travels with them, and self-describing checkpoints.
 *
 * @example
 * ```ts
 * const { model } = await buildModel({ weights: "none", numClasses: 3, imageSize: 446, seed: 42 });
 * ```
 * @module
 */
export {
  HardSigmoid,
  hardSigmoid,
  HardSwish,
  hardSwish,
  Normalize,
  SeededDropout,
} from "./layers.ts";
export {
  KERAS_NORMALIZATION,
  normalizationAffine,
  type NormalizationSpec,
  normalizationSummary,
  normalize,
  TORCHVISION_IMAGENET_NORMALIZATION,
} from "./normalization.ts";
export {
  type BlockSpec,
  buildMobileNetV3Large,
  type BuildModelOptions,
  dropoutLayers,
  LARGE_BLOCKS,
  LAYER,
} from "./mobilenet_v3.ts";
export {
  type ArchitectureRow,
  architectureTable,
  describeArchitecture,
  describeHead,
} from "./describe.ts";
export { buildModel, type ModelOptions } from "./build.ts";
export {
  IMAGENET_WEIGHTS,
  imagenetCachePath,
  loadKerasWeights,
  resolveWeights,
  weightsAvailability,
  WeightsError,
  type WeightsInfo,
  type WeightsSource,
} from "./weights.ts";
export {
  CHECKPOINT_FORMAT,
  CheckpointError,
  type CheckpointInput,
  type CheckpointMetadata,
  loadCheckpoint,
  readCheckpointMetadata,
  saveCheckpoint,
} from "./checkpoint.ts";
