/**
 * COVID-19 chest X-ray classification with an ImageNet-pretrained MobileNetV3-Large, reproduced
 * in TF.js on Deno. This module is the public surface: notebooks, task scripts and the bench
 * import from here.
 *
 * The stages, in the paper's order, each a folder with its own `mod.ts`: data (`prepareData`,
 * `iterateBatches`), model (`buildModel`), engine (how a model runs fast), training
 * (`trainModel`), evaluation (`evaluateModel`), figures, runs (`runExperiment`), review.
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
export {
  type AugmentationOptions,
  INPUT_MASKS,
  type InputMask,
  PAPER_CONFIG,
  QUICK_OVERRIDES,
  quickMode,
  type RunConfig,
  runConfig,
  sameSettings,
} from "./config.ts";
export { PROJECT_ROOT, projectCacheDir, projectPath, userCacheDir } from "./paths.ts";
export {
  envChoice,
  envFlag,
  envValue,
  setEnv,
  type Variable,
  type VariableName,
  VARIABLES,
} from "./env.ts";
export {
  cleanTemporaries,
  hashFile,
  recoverDir,
  replaceDirAtomic,
  writeFileAtomic,
  writeJsonAtomic,
} from "./files.ts";
export {
  numberFlag,
  parseFlags,
  runMain,
  systemErrorMessage,
  UsageError,
  userPath,
  userPaths,
} from "./cli.ts";
export { UserError } from "./errors.ts";
export { lossText, percent } from "./format.ts";
export { argmax } from "./maths.ts";
export { Rng } from "./rng.ts";
export { type Cell, csvSafe, csvText, csvUnsafe, Table, table } from "./tables.ts";
export { inNotebook, show } from "./show.ts";
export { createProgress, type Progress } from "./progress.ts";
export { codeVersion, runtimeInfo } from "./provenance.ts";
export {
  canStopPolitely,
  clearStop,
  Interrupted,
  requestStop,
  stoppableWork,
  stopRequested,
} from "./stop.ts";

export * from "./data/mod.ts";
export * from "./model/mod.ts";
export * from "./engine/mod.ts";
export * from "./train/mod.ts";
export * from "./evaluate/mod.ts";
export * from "./figures/mod.ts";
export * from "./runs/mod.ts";
export * from "./review/mod.ts";
export * from "./notebooks/mod.ts";
