/**
 * TensorFlow's own kernels, called through tfjs-node's backend where TF.js would compose many
 * small operations (used by the model's layers in training and by the eager engine).
 *
 * Measured on MobileNetV3-Large at 446 px, batch 4 (one training step, `tf.profile`): of 2.4 s in
 * kernels, only ~0.5 s were convolutions; BatchNorm's training statistics and their gradients
 * (moments, then ~20 elementwise operations per layer in the backward pass) and the ReLU gradient
 * (`Step` then `Multiply`) took most of the rest. With the native backend these become TF's own
 * fused kernels: FusedBatchNormV3 / FusedBatchNormGradV3, ReluGrad and Relu6Grad. Without it
 * (pure-JS backend) the same maths runs as TF.js composes it.
 */
import { tf } from "./backend.ts";

/** The slice of tfjs-node's backend used here. */
interface NodeBackend {
  executeMultipleOutputs(
    name: string,
    attrs: unknown[],
    inputs: tf.Tensor[],
    n: number,
  ): tf.Tensor[];
  binding: {
    TF_ATTR_FLOAT: number;
    TF_ATTR_STRING: number;
    TF_ATTR_BOOL: number;
    TF_ATTR_TYPE: number;
    TF_FLOAT: number;
  };
}

/** The native backend, when it is the live one. */
function nativeBackend(): NodeBackend | undefined {
  return tf.getBackend() === "tensorflow" ? tf.backend() as unknown as NodeBackend : undefined;
}

/** True when TensorFlow's native kernels can be called (tfjs-node is the live backend). */
export function nativeKernelsLive(): boolean {
  return nativeBackend() !== undefined;
}

/** An attribute of a native op: the float32 element type, a float, a string or a bool. */
type Attr = "float32" | number | string | boolean;

/**
 * Run TensorFlow op `name` on `inputs` with `attrs` (every op used here takes its element type as
 * `T: "float32"`) and return its `outputs` results. Throws without the native backend.
 */
export function nativeOp(
  name: string,
  inputs: tf.Tensor[],
  attrs: Record<string, Attr>,
  outputs = 1,
): tf.Tensor[] {
  const b = nativeBackend();
  if (!b) throw new Error(`nativeOp(${name}) needs the native TensorFlow backend`);
  const { binding: k } = b;
  const list = Object.entries(attrs).map(([attrName, v]) =>
    v === "float32"
      ? { name: attrName, type: k.TF_ATTR_TYPE, value: k.TF_FLOAT }
      : typeof v === "number"
      ? { name: attrName, type: k.TF_ATTR_FLOAT, value: v }
      : typeof v === "boolean"
      ? { name: attrName, type: k.TF_ATTR_BOOL, value: v }
      : { name: attrName, type: k.TF_ATTR_STRING, value: v }
  );
  return b.executeMultipleOutputs(name, list, inputs, outputs);
}

/**
 * Add a per-channel bias: TF's BiasAdd kernel with the native backend (made for exactly this;
 * TF.js's `add` goes through general broadcasting), TF.js's `add` otherwise.
 */
export function biasAdd(x: tf.Tensor, bias: tf.Tensor): tf.Tensor {
  if (!nativeKernelsLive()) return tf.add(x, bias);
  return nativeOp("BiasAdd", [x, bias], { T: "float32", data_format: "NHWC" })[0];
}

/** dy where 0 < t < 6, else 0: TF's Relu6Grad, or its composition without the native backend. */
export function relu6Grad(dy: tf.Tensor, t: tf.Tensor): tf.Tensor {
  if (nativeKernelsLive()) return nativeOp("Relu6Grad", [dy, t], { T: "float32" })[0];
  return tf.mul(dy, tf.cast(tf.logicalAnd(tf.greater(t, 0), tf.less(t, 6)), "float32"));
}

/** The moving statistics after a training step. */
export interface MovingStats {
  mean: tf.Tensor1D;
  variance: tf.Tensor1D;
}

/**
 * Batch normalisation with the batch's own statistics (training mode), differentiable in x,
 * gamma and beta, that also advances the moving statistics:
 * `moving = moving · momentum + batch · (1 − momentum)` (Keras's convention; the batch variance
 * is the unbiased one, as TF's kernel and PyTorch compute it). `onMoving` receives the new moving
 * mean and variance; they are disposed after it returns.
 *
 * With the native backend one kernel (FusedBatchNormV3 with `exponential_avg_factor`) does the
 * normalisation and both moving averages, and FusedBatchNormGradV3 the gradient.
 *
 * @param x Tensor4D [B, H, W, C]; gamma, beta, movingMean, movingVariance Tensor1D [C].
 * @returns Tensor4D like x.
 */
export function batchNormTraining(
  x: tf.Tensor4D,
  gamma: tf.Tensor1D,
  beta: tf.Tensor1D,
  moving: MovingStats,
  momentum: number,
  epsilon: number,
  onMoving: (stats: MovingStats) => void,
): tf.Tensor4D {
  if (!nativeKernelsLive()) {
    return compositeBatchNormTraining(x, gamma, beta, moving, momentum, epsilon, onMoving);
  }
  const attrs = { T: "float32", U: "float32", epsilon, data_format: "NHWC", is_training: true };
  const op = tf.customGrad((xi, g, o, save) => {
    // Outputs: y, the new moving mean and variance (TF blends them with the factor 1 − momentum),
    // and three reserve tensors the gradient kernel needs.
    const [y, mean, variance, r1, r2, r3] = nativeOp(
      "FusedBatchNormV3",
      [xi as tf.Tensor, g as tf.Tensor, o as tf.Tensor, moving.mean, moving.variance],
      { ...attrs, exponential_avg_factor: 1 - momentum } as Record<string, Attr>,
      6,
    );
    onMoving({ mean: mean as tf.Tensor1D, variance: variance as tf.Tensor1D });
    tf.dispose([mean, variance]);
    (save as tf.GradSaveFunc)([xi as tf.Tensor, g as tf.Tensor, r1, r2, r3]);
    return {
      value: y,
      gradFunc: (dy, saved) => {
        const [sx, sg, s1, s2, s3] = saved;
        const [dx, dg, db, r4, r5] = nativeOp(
          "FusedBatchNormGradV3",
          [dy as tf.Tensor, sx, sg, s1, s2, s3],
          attrs as Record<string, Attr>,
          5,
        );
        tf.dispose([r4, r5]);
        return [dx, dg, db];
      },
    };
  });
  return op(x, gamma, beta) as tf.Tensor4D;
}

/** The same maths as TF.js composes it (pure-JS backend). */
export function compositeBatchNormTraining(
  x: tf.Tensor4D,
  gamma: tf.Tensor1D,
  beta: tf.Tensor1D,
  moving: MovingStats,
  momentum: number,
  epsilon: number,
  onMoving: (stats: MovingStats) => void,
): tf.Tensor4D {
  const { mean, variance } = tf.moments(x, [0, 1, 2]);
  const n = x.shape[0] * x.shape[1] * x.shape[2];
  const next = tf.tidy(() => {
    const unbiased = tf.mul(variance, n / Math.max(1, n - 1));
    return [
      tf.add(tf.mul(moving.mean, momentum), tf.mul(mean, 1 - momentum)),
      tf.add(tf.mul(moving.variance, momentum), tf.mul(unbiased, 1 - momentum)),
    ];
  });
  onMoving({ mean: next[0] as tf.Tensor1D, variance: next[1] as tf.Tensor1D });
  tf.dispose(next);
  return tf.batchNorm(x, mean, variance, beta, gamma, epsilon) as tf.Tensor4D;
}

let registered = false;

/**
 * Give the ReLU and ReLU6 kernels TensorFlow's native gradients (ReluGrad, Relu6Grad) instead of
 * TF.js's `Step`-then-`Multiply` composition. Same values; one kernel instead of two or three.
 * Only with the native backend; safe to call more than once.
 */
export function registerNativeGradients(): void {
  if (!nativeKernelsLive() || registered) return;
  registered = true;
  for (const [kernelName, nativeName] of [["Relu", "ReluGrad"], ["Relu6", "Relu6Grad"]] as const) {
    tf.registerGradient({
      kernelName,
      inputsToSave: ["x"],
      gradFunc: (dy, saved) => {
        const [x] = saved;
        return { x: () => nativeOp(nativeName, [dy as tf.Tensor, x], { T: "float32" })[0] };
      },
    });
  }
}
