/**
 * Training kernels that TensorFlow has natively but TF.js composes from many small operations.
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
  executeSingleOutput(name: string, attrs: unknown[], inputs: tf.Tensor[]): tf.Tensor;
  binding: {
    TF_ATTR_FLOAT: number;
    TF_ATTR_STRING: number;
    TF_ATTR_BOOL: number;
    TF_ATTR_TYPE: number;
    TF_FLOAT: number;
  };
}

/** The native backend, when it is the live one. */
export function nativeBackend(): NodeBackend | undefined {
  return tf.getBackend() === "tensorflow" ? tf.backend() as unknown as NodeBackend : undefined;
}

function floatType(b: NodeBackend, name: string) {
  return { name, type: b.binding.TF_ATTR_TYPE, value: b.binding.TF_FLOAT };
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
  const b = nativeBackend();
  if (!b) return compositeBatchNormTraining(x, gamma, beta, moving, momentum, epsilon, onMoving);
  const attrs = (extra: unknown[] = []) => [
    floatType(b, "T"),
    floatType(b, "U"),
    { name: "epsilon", type: b.binding.TF_ATTR_FLOAT, value: epsilon },
    { name: "data_format", type: b.binding.TF_ATTR_STRING, value: "NHWC" },
    { name: "is_training", type: b.binding.TF_ATTR_BOOL, value: true },
    ...extra,
  ];
  const op = tf.customGrad((xi, g, o, save) => {
    // Outputs: y, the new moving mean and variance (TF blends them with the factor 1 − momentum),
    // and three reserve tensors the gradient kernel needs.
    const [y, mean, variance, r1, r2, r3] = b.executeMultipleOutputs(
      "FusedBatchNormV3",
      attrs([{
        name: "exponential_avg_factor",
        type: b.binding.TF_ATTR_FLOAT,
        value: 1 - momentum,
      }]),
      [xi as tf.Tensor, g as tf.Tensor, o as tf.Tensor, moving.mean, moving.variance],
      6,
    );
    onMoving({ mean: mean as tf.Tensor1D, variance: variance as tf.Tensor1D });
    tf.dispose([mean, variance]);
    (save as tf.GradSaveFunc)([xi as tf.Tensor, g as tf.Tensor, r1, r2, r3]);
    return {
      value: y,
      gradFunc: (dy, saved) => {
        const [sx, sg, s1, s2, s3] = saved;
        const [dx, dg, db, r4, r5] = b.executeMultipleOutputs(
          "FusedBatchNormGradV3",
          attrs(),
          [dy as tf.Tensor, sx, sg, s1, s2, s3],
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
  const b = nativeBackend();
  if (!b || registered) return;
  registered = true;
  for (const [kernelName, nativeName] of [["Relu", "ReluGrad"], ["Relu6", "Relu6Grad"]] as const) {
    tf.registerGradient({
      kernelName,
      inputsToSave: ["x"],
      gradFunc: (dy, saved) => {
        const [x] = saved;
        return {
          x: () => b.executeSingleOutput(nativeName, [floatType(b, "T")], [dy as tf.Tensor, x]),
        };
      },
    });
  }
}
