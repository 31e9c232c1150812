/** What every training-step engine provides (the graph one and the eager one compute the same step). */
import type { tf } from "../backend.ts";
import type { KernelChoice } from "./kernels.ts";
import type { EngineKind } from "./select.ts";

/** A named tensor as TF.js optimizers save and restore them. */
export interface NamedTensor {
  name: string;
  tensor: tf.Tensor;
}

/** Optimizer state as `tf.io.encodeWeights` gives it (bytes and their specs). */
export type EncodedWeights = Awaited<ReturnType<typeof tf.io.encodeWeights>>;

export interface StepResult {
  /** The batch's mean cross-entropy. */
  loss: number;
  /** The predicted class of each image (before the update). */
  predicted: ArrayLike<number>;
}

/**
 * Training steps on a model: SGD with momentum on the mean cross-entropy, BatchNorm moving
 * averages updated, dropout masks drawn from the layers' seeds and the global step. Whatever the
 * engine, reading the model (predict, save, getWeights) always gives the current weights.
 */
export interface StepEngine {
  readonly kind: EngineKind;
  /** Which kernels the steps use: the fused ones (graph engine only) or TensorFlow's own. */
  readonly kernels: KernelChoice;
  setLearningRate(lr: number): void;
  /** One step on a batch (x and labels are not disposed). */
  step(x: tf.Tensor4D, labels: tf.Tensor1D, globalStep: number): Promise<StepResult>;
  /** The momentum buffers, named and ordered as TF.js's optimizer saves them, encoded. */
  optimizerState(): Promise<EncodedWeights>;
  /** Free the engine; the model keeps the last weights. */
  dispose(): void;
}

export interface StepEngineOptions {
  learningRate: number;
  momentum: number;
  numClasses: number;
  /** Momentum buffers of an interrupted run (by position; not disposed here). */
  optimizerWeights?: NamedTensor[];
  /** The graph engines' kernels, fused or TensorFlow's (kernels.ts; default COVID_CXR_KERNELS, else auto). */
  kernels?: "auto" | "fused" | "standard";
}
