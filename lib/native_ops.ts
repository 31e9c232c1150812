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

/** Batch statistics of a training-mode batch normalisation, for the moving averages. */
export interface BatchStats {
  mean: tf.Tensor1D;
  variance: tf.Tensor1D;
}

/**
 * Batch normalisation with the batch's own statistics (training mode), differentiable in x,
 * gamma and beta. `onStats` receives the batch mean and variance (for moving averages); they are
 * disposed after it returns.
 *
 * @param x Tensor4D [B, H, W, C]; gamma, beta Tensor1D [C].
 * @returns Tensor4D like x.
 */
export function batchNormTraining(
  x: tf.Tensor4D,
  gamma: tf.Tensor1D,
  beta: tf.Tensor1D,
  epsilon: number,
  onStats: (stats: BatchStats) => void,
): tf.Tensor4D {
  const b = nativeBackend();
  if (!b) return compositeBatchNormTraining(x, gamma, beta, epsilon, onStats);
  const attrs = (training: boolean) => [
    floatType(b, "T"),
    floatType(b, "U"),
    { name: "epsilon", type: b.binding.TF_ATTR_FLOAT, value: epsilon },
    { name: "data_format", type: b.binding.TF_ATTR_STRING, value: "NHWC" },
    { name: "is_training", type: b.binding.TF_ATTR_BOOL, value: training },
  ];
  const op = tf.customGrad((xi, g, o, save) => {
    const empty = tf.tensor1d([]);
    // Outputs: y, batch mean, batch variance (for the moving averages), and three reserve
    // tensors the gradient kernel needs.
    const [y, mean, variance, r1, r2, r3] = b.executeMultipleOutputs(
      "FusedBatchNormV3",
      [...attrs(true), { name: "exponential_avg_factor", type: b.binding.TF_ATTR_FLOAT, value: 1 }],
      [xi as tf.Tensor, g as tf.Tensor, o as tf.Tensor, empty, empty],
      6,
    );
    empty.dispose();
    onStats({ mean: mean as tf.Tensor1D, variance: variance as tf.Tensor1D });
    tf.dispose([mean, variance]);
    (save as tf.GradSaveFunc)([xi as tf.Tensor, g as tf.Tensor, r1, r2, r3]);
    return {
      value: y,
      gradFunc: (dy, saved) => {
        const [sx, sg, s1, s2, s3] = saved;
        const [dx, dg, db, r4, r5] = b.executeMultipleOutputs(
          "FusedBatchNormGradV3",
          attrs(true),
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
function compositeBatchNormTraining(
  x: tf.Tensor4D,
  gamma: tf.Tensor1D,
  beta: tf.Tensor1D,
  epsilon: number,
  onStats: (stats: BatchStats) => void,
): tf.Tensor4D {
  const { mean, variance } = tf.moments(x, [0, 1, 2]);
  const n = x.shape[0] * x.shape[1] * x.shape[2];
  // Report the unbiased variance, as TF's fused kernel (and PyTorch's running variance) do.
  const unbiased = tf.tidy(() => tf.mul(variance, n / Math.max(1, n - 1)));
  onStats({ mean: tf.keep(mean.clone()) as tf.Tensor1D, variance: unbiased as tf.Tensor1D });
  tf.dispose(unbiased);
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
