/** What every inference engine provides. */
import type { tf } from "../backend.ts";
import type { KernelChoice } from "./kernels.ts";

/** A compiled model; `dispose()` frees what it holds. */
export interface Predictor {
  /** @param x Tensor4D [B, S, S, 3] RGB 0..255 (not disposed). @returns logits [B, classes]; caller disposes. */
  predict(x: tf.Tensor4D): tf.Tensor2D;
  dispose(): void;
  /** How it runs: "graph" (one TensorFlow session call), "eager" (op by op) or "layers" (TF.js). */
  readonly engine: "graph" | "eager" | "layers";
  /** The graph engine's element-wise kernels: the project's fused hard-swish, or TensorFlow's. */
  readonly kernels?: KernelChoice;
}

/** TF.js's own `model.predict`, for comparisons (tests, bench); the weights stay live. */
export function layersPredictor(model: tf.LayersModel): Predictor {
  return {
    engine: "layers",
    predict: (x) => model.predict(x) as tf.Tensor2D,
    dispose: () => {},
  };
}
