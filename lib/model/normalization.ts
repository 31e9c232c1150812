/**
 * Input normalisation belongs to the weights (timm's `pretrained_cfg`, Keras's
 * `include_preprocessing`): the model's first layer applies what its weights declare, and
 * checkpoints record it, so a saved model cannot be fed the wrong scaling.
 */
import { tf } from "../backend.ts";

/** Per-channel input normalisation: `(x / 255 - mean) / std` on 0..255 RGB pixels. */
export interface NormalizationSpec {
  /** Per-channel mean on the 0..1 scale. */
  mean: [number, number, number];
  /** Per-channel standard deviation on the 0..1 scale. */
  std: [number, number, number];
}

/** Keras's MobileNetV3 weights expect `x / 127.5 - 1` on 0..255 RGB, i.e. mean = std = 0.5. */
export const KERAS_NORMALIZATION: NormalizationSpec = Object.freeze({
  mean: [0.5, 0.5, 0.5],
  std: [0.5, 0.5, 0.5],
}) as NormalizationSpec;

/** torchvision's ImageNet statistics: the paper's `transforms.Normalize(mean, std)`. */
export const TORCHVISION_IMAGENET_NORMALIZATION: NormalizationSpec = Object.freeze({
  mean: [0.485, 0.456, 0.406],
  std: [0.229, 0.224, 0.225],
}) as NormalizationSpec;

/**
 * The normalisation as one multiply-add per channel on 0..255 pixels: `x · scale + shift` with
 * scale = 1 / (255 std) and shift = −mean / std. Every engine computes it from here.
 */
export function normalizationAffine(spec: NormalizationSpec): { scale: number[]; shift: number[] } {
  return {
    scale: spec.std.map((s) => 1 / (255 * s)),
    shift: spec.mean.map((m, i) => -m / spec.std[i]),
  };
}

/**
 * The normalisation step: `(x / 255 − mean) / std` per channel, on 0..255 RGB. The model's first
 * layer computes this with the normalisation its weights expect (torchvision's ImageNet mean/std,
 * or Keras's mean = std = 0.5, i.e. `x / 127.5 − 1`).
 *
 * @param x Tensor [..., 3] in 0..255.
 * @returns Tensor of the same shape; caller disposes.
 */
export function normalize(x: tf.Tensor, spec: NormalizationSpec): tf.Tensor {
  const { scale, shift } = normalizationAffine(spec);
  return tf.tidy(() => tf.add(tf.mul(x, tf.tensor1d(scale)), tf.tensor1d(shift)));
}

/** Min, mean and max of pixels before and after a normalisation (what the first layer does). */
export async function normalizationSummary(
  pixels: Uint8Array,
  specs: Record<string, NormalizationSpec>,
): Promise<{ stage: string; min: number; mean: number; max: number }[]> {
  const stat = (data: ArrayLike<number>) => {
    let min = Infinity, max = -Infinity, sum = 0;
    for (let i = 0; i < data.length; i++) {
      min = Math.min(min, data[i]);
      max = Math.max(max, data[i]);
      sum += data[i];
    }
    return { min, mean: sum / data.length, max };
  };
  const rows = [{ stage: "pixels (0..255)", ...stat(pixels) }];
  const x = tf.tensor2d(Float32Array.from(pixels), [pixels.length / 3, 3]);
  for (const [name, spec] of Object.entries(specs)) {
    const y = normalize(x, spec);
    rows.push({ stage: name, ...stat(await y.data()) });
    y.dispose();
  }
  x.dispose();
  return rows;
}
