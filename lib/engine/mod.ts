/**
 * The speed machinery behind one face. A layers model (lib/model/) is translated once, by
 * plan.ts, into steps; each engine interprets those steps:
 *
 * - inference: `createPredictor` — one TensorFlow graph per model (graph_predictor.ts), or
 *   TF.js operations one at a time (eager.ts);
 * - training: `createStepEngine` — the whole step as one TensorFlow graph (graph_train.ts), or
 *   TF.js's eager operations on the layers model (eager_train.ts).
 *
 * Which one runs is decided in select.ts: the graph engines wherever they can run; an error in
 * them is a bug and stops the run.
 *
 * @example
 * ```ts
 * const predictor = createPredictor(model);
 * const logits = predictor.predict(x); // [B, classes]
 * predictor.dispose();
 * ```
 * @module
 */
import type { tf } from "../backend.ts";
import { eagerPredictor } from "./eager.ts";
import { eagerStepEngine } from "./eager_train.ts";
import { graphPredictor } from "./graph_predictor.ts";
import { graphStepEngine } from "./graph_train.ts";
import { layersPredictor, type Predictor } from "./predictor.ts";
import { chooseEngine, type EngineKind } from "./select.ts";
import type { StepEngine, StepEngineOptions } from "./step.ts";

export { type Predictor } from "./predictor.ts";
export { chooseEngine, EngineError, type EngineKind, requestedEngine } from "./select.ts";
export { chooseKernels, type KernelChoice } from "./kernels.ts";
export { type NativeAugmenter, nativeAugmenter } from "./augmenter.ts";
export { kernelLibrary } from "./kernel_library.ts";
export type {
  EncodedWeights,
  NamedTensor,
  StepEngine,
  StepEngineOptions,
  StepResult,
} from "./step.ts";
export { type Flavour, type Op, type Plan, PlanError, planModel, type Step } from "./plan.ts";
export { graphEnginesUnavailable, liveSessions } from "./tf_c.ts";
export { type GraphStepEngine, graphStepEngine } from "./graph_train.ts";
export {
  type ModelCost,
  modelCost,
  opKind,
  opPhase,
  type OpTiming,
  POINTWISE_INPUT_PRODUCT,
  POINTWISE_KERNEL_PRODUCT,
  profileByKind,
  type ProfileRow,
  readStepStats,
  topOps,
} from "./profile.ts";
export {
  configProto,
  describeSessionSettings,
  type Precision,
  type SessionSettings,
  sessionSettings,
  threadPools,
  tracingRunOptions,
} from "./session_config.ts";
export {
  checkKerasParity,
  checkTorchvisionParity,
  PARITY_TOLERANCE,
  type ParityResult,
  parityTable,
  resolveParityDir,
  resolveTorchParityDir,
} from "./parity.ts";

/**
 * A predictor for `model` with its current weights: the graph engine where it can run, else the
 * eager one (`engine` forces one; "layers" is TF.js's own `model.predict`, for comparisons).
 */
export function createPredictor(
  model: tf.LayersModel,
  opts: { engine?: EngineKind | "layers"; kernels?: "auto" | "fused" | "standard" } = {},
): Predictor {
  if (opts.engine === "layers") return layersPredictor(model);
  return chooseEngine("inference", opts.engine) === "graph"
    ? graphPredictor(model, { kernels: opts.kernels })
    : eagerPredictor(model);
}

/** A training-step engine for `model`: graph where it can run, else eager (`engine` forces one). */
export async function createStepEngine(
  model: tf.LayersModel,
  opts: StepEngineOptions & { engine?: EngineKind },
): Promise<StepEngine> {
  return chooseEngine("training", opts.engine) === "graph"
    ? graphStepEngine(model, opts)
    : await eagerStepEngine(model, opts);
}
