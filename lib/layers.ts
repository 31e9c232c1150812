/**
 * Custom TF.js layers MobileNetV3 needs: hard-swish, hard-sigmoid and the input normalisation.
 * Each is registered with TF.js's serialization, so a saved `model.json` loads back.
 */
import { tf } from "./backend.ts";
import { normalize } from "./preprocess.ts";

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
      // d/dx: 0 for x < -3, 1 for x > 3, (2x + 3) / 6 between.
      const inner = tf.div(tf.add(tf.mul(s, 2), 3), 6);
      const grad = tf.where(
        tf.less(s, -3),
        tf.zerosLike(s),
        tf.where(tf.greater(s, 3), tf.onesLike(s), inner),
      );
      return tf.mul(dy, grad);
    },
  };
});

export class HardSwish extends tf.layers.Layer {
  static className = "HardSwish";
  override call(inputs: tf.Tensor | tf.Tensor[], _kwargs: Kwargs): tf.Tensor {
    const x = Array.isArray(inputs) ? inputs[0] : inputs;
    return hardSwishOp(x);
  }
}

/** hard-sigmoid(x) = relu6(x + 3) / 6, the gate of MobileNetV3's squeeze-excite blocks. */
export class HardSigmoid extends tf.layers.Layer {
  static className = "HardSigmoid";
  override call(inputs: tf.Tensor | tf.Tensor[], _kwargs: Kwargs): tf.Tensor {
    const x = Array.isArray(inputs) ? inputs[0] : inputs;
    return tf.tidy(() => tf.div(tf.relu6(tf.add(x, 3)), 6));
  }
}

/** Per-channel input normalisation: `(x / 255 - mean) / std` on 0..255 RGB pixels. */
export interface NormalizationSpec {
  /** Per-channel mean on the 0..1 scale. */
  mean: [number, number, number];
  /** Per-channel standard deviation on the 0..1 scale. */
  std: [number, number, number];
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

tf.serialization.registerClass(SeededDropout);
tf.serialization.registerClass(HardSwish);
tf.serialization.registerClass(HardSigmoid);
tf.serialization.registerClass(Normalize);
