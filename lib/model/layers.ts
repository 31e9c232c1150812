/**
 * Custom TF.js layers MobileNetV3 needs: hard-swish, hard-sigmoid, the input normalisation, seeded
 * dropout and a BatchNorm that trains with TensorFlow's fused kernels. Each is registered with
 * TF.js's serialization, so a saved `model.json` loads back. The eager engine runs the same
 * functions ({@link hardSwish}, {@link hardSigmoid}).
 */
import { MODEL_DEFAULTS } from "../config.ts";
import { tf } from "../backend.ts";
import { batchNormTraining, relu6Grad } from "../native_ops.ts";
import { type NormalizationSpec, normalize } from "./normalization.ts";

type Kwargs = Record<string, unknown>;

/**
 * hard-swish(x) = x · relu6(x + 3) / 6 (Howard et al. 2019, "Searching for MobileNetV3").
 * Written with a custom gradient so the tape keeps only `x` (the composite form would keep four
 * intermediate tensors per activation, and there are ~30 of them at 446 px).
 */
const hardSwishOp = tf.customGrad((x, save) => {
  const input = x as tf.Tensor;
  (save as tf.GradSaveFunc)([input]);
  const value = tf.tidy(() => tf.mul(input, tf.div(tf.relu6(tf.add(input, 3)), 6)));
  return {
    value,
    gradFunc: (dy, saved) => {
      const [s] = saved;
      // d/dx x·relu6(x+3)/6 = relu6(x+3)/6 + x/6 · [0 < x+3 < 6]; the bracket times dy is
      // exactly what ReLU6's gradient computes, natively one kernel.
      const t = tf.add(s, 3);
      const gate = relu6Grad(dy as tf.Tensor, t);
      return tf.mul(tf.add(tf.mul(dy, tf.relu6(t)), tf.mul(gate, s)), 1 / 6);
    },
  };
});

/** hard-swish(x) = x · relu6(x + 3) / 6, eagerly. @returns a tensor like x; caller disposes. */
export function hardSwish(x: tf.Tensor): tf.Tensor {
  return hardSwishOp(x);
}

/** hard-sigmoid(x) = relu6(x + 3) / 6, eagerly. @returns a tensor like x; caller disposes. */
export function hardSigmoid(x: tf.Tensor): tf.Tensor {
  return tf.tidy(() => tf.div(tf.relu6(tf.add(x, 3)), 6));
}

export class HardSwish extends tf.layers.Layer {
  static className = "HardSwish";
  override call(inputs: tf.Tensor | tf.Tensor[], _kwargs: Kwargs): tf.Tensor {
    return hardSwish(Array.isArray(inputs) ? inputs[0] : inputs);
  }
}

/** hard-sigmoid(x) = relu6(x + 3) / 6, the gate of MobileNetV3's squeeze-excite blocks. */
export class HardSigmoid extends tf.layers.Layer {
  static className = "HardSigmoid";
  override call(inputs: tf.Tensor | tf.Tensor[], _kwargs: Kwargs): tf.Tensor {
    return hardSigmoid(Array.isArray(inputs) ? inputs[0] : inputs);
  }
}

/**
 * The model's first layer: normalisation belongs to the weights (timm's `pretrained_cfg`,
 * Keras's `include_preprocessing`), so it travels inside the saved model and its metadata.
 */
export class Normalize extends tf.layers.Layer {
  static className = "Normalize";
  readonly mean: [number, number, number];
  readonly std: [number, number, number];

  constructor(args: NormalizationSpec & { name?: string }) {
    super({ name: args.name });
    this.mean = args.mean;
    this.std = args.std;
  }

  override call(inputs: tf.Tensor | tf.Tensor[], _kwargs: Kwargs): tf.Tensor {
    const x = Array.isArray(inputs) ? inputs[0] : inputs;
    return normalize(x, { mean: this.mean, std: this.std });
  }

  override getConfig(): tf.serialization.ConfigDict {
    return { ...super.getConfig(), mean: this.mean, std: this.std };
  }
}

/**
 * Dropout whose mask is reproducible: the mask of training step `step` comes from `seed + step`.
 * (TF.js's Dropout with a fixed seed draws the same mask at every step; without a seed it draws
 * from Math.random and no two runs agree.) The training loop sets `step` before each batch.
 */
export class SeededDropout extends tf.layers.Layer {
  static className = "SeededDropout";
  readonly rate: number;
  readonly seed: number;
  step = 0;

  constructor(args: { rate: number; seed: number; name?: string }) {
    super({ name: args.name });
    this.rate = args.rate;
    this.seed = args.seed;
  }

  override call(inputs: tf.Tensor | tf.Tensor[], kwargs: Kwargs): tf.Tensor {
    const x = Array.isArray(inputs) ? inputs[0] : inputs;
    if (!kwargs.training || this.rate === 0) return x;
    return tf.dropout(x, this.rate, undefined, this.seed + this.step);
  }

  override getConfig(): tf.serialization.ConfigDict {
    return { ...super.getConfig(), rate: this.rate, seed: this.seed };
  }
}

/**
 * Batch normalisation with Keras's weights and semantics (gamma, beta, moving mean, moving
 * variance; `moving = moving · momentum + batch · (1 − momentum)`), whose training mode runs
 * TensorFlow's fused kernels (see native_ops.ts) instead of TF.js's composition.
 */
export class BatchNorm extends tf.layers.Layer {
  static className = "BatchNorm";
  readonly epsilon: number;
  readonly momentum: number;
  gamma!: tf.LayerVariable;
  beta!: tf.LayerVariable;
  movingMean!: tf.LayerVariable;
  movingVariance!: tf.LayerVariable;

  constructor(args: { epsilon?: number; momentum?: number; name?: string }) {
    super({ name: args.name });
    this.epsilon = args.epsilon ?? 1e-3;
    this.momentum = args.momentum ?? MODEL_DEFAULTS.batchNormMomentum;
  }

  override build(inputShape: tf.Shape | tf.Shape[]): void {
    const shape = (Array.isArray(inputShape[0]) ? inputShape[0] : inputShape) as tf.Shape;
    const channels = [shape.at(-1) as number];
    // The weight order of Keras's BatchNormalization: gamma, beta, moving_mean, moving_variance.
    this.gamma = this.addWeight("gamma", channels, "float32", tf.initializers.ones());
    this.beta = this.addWeight("beta", channels, "float32", tf.initializers.zeros());
    this.movingMean = this.addWeight(
      "moving_mean",
      channels,
      "float32",
      tf.initializers.zeros(),
      undefined,
      false,
    );
    this.movingVariance = this.addWeight(
      "moving_variance",
      channels,
      "float32",
      tf.initializers.ones(),
      undefined,
      false,
    );
    this.built = true;
  }

  override call(inputs: tf.Tensor | tf.Tensor[], kwargs: Kwargs): tf.Tensor {
    const x = (Array.isArray(inputs) ? inputs[0] : inputs) as tf.Tensor4D;
    if (!kwargs.training) {
      // x · α + β with α = γ / √(σ² + ε), β = beta − μ·α: the order PyTorch's and TensorFlow's
      // inference kernels compute in.
      return tf.tidy(() => {
        const alpha = tf.div(
          this.gamma.read(),
          tf.sqrt(tf.add(this.movingVariance.read(), this.epsilon)),
        );
        const beta = tf.sub(this.beta.read(), tf.mul(this.movingMean.read(), alpha));
        return tf.add(tf.mul(x, alpha), beta);
      });
    }
    return batchNormTraining(
      x,
      this.gamma.read() as tf.Tensor1D,
      this.beta.read() as tf.Tensor1D,
      {
        mean: this.movingMean.read() as tf.Tensor1D,
        variance: this.movingVariance.read() as tf.Tensor1D,
      },
      this.momentum,
      this.epsilon,
      ({ mean, variance }) => {
        // write() takes its own copy; the caller disposes these.
        this.movingMean.write(mean);
        this.movingVariance.write(variance);
      },
    );
  }

  override getConfig(): tf.serialization.ConfigDict {
    return { ...super.getConfig(), epsilon: this.epsilon, momentum: this.momentum };
  }
}

tf.serialization.registerClass(SeededDropout);
tf.serialization.registerClass(BatchNorm);
tf.serialization.registerClass(HardSwish);
tf.serialization.registerClass(HardSigmoid);
tf.serialization.registerClass(Normalize);
