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
  type Convention,
  conventionOf,
  CONVENTIONS,
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
export { loadModel, type LoadModelOptions, PAPER_IMAGE_SIZE } from "./load.ts";
export { type ExportResult, exportToPytorch, pytorchLoadingSnippet } from "./export.ts";
export {
  KERAS_IMAGENET,
  loadWeights,
  pretrainedCachePath,
  type PretrainedFile,
  resolveWeights,
  TORCHVISION_IMAGENET,
  WEIGHT_SOURCES,
  weightsAvailability,
  WeightsError,
  type WeightsInfo,
  type WeightsSource,
} from "./weights.ts";
export { loadKerasWeights } from "./keras_weights.ts";
export {
  checkStateDict,
  exportTorchvisionStateDict,
  loadTorchvisionWeights,
  torchvisionStateDict,
  torchvisionTensors,
} from "./torchvision.ts";
export {
  readTorchFile,
  TorchFileError,
  type TorchStateDict,
  type TorchTensor,
  writeTorchStateDict,
} from "./torch_file.ts";
export {
  CHECKPOINT_FORMAT,
  CheckpointError,
  checkpointExifRotate,
  type CheckpointInput,
  checkpointInputMask,
  type CheckpointMetadata,
  loadCheckpoint,
  readCheckpointMetadata,
  saveCheckpoint,
  updateCheckpointMetadata,
} from "./checkpoint.ts";
