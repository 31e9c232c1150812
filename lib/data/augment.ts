/**
 * The paper's training augmentation after decoding (lib/data/decode.ts resizes): random
 * horizontal flip and colour jitter. Normalisation belongs to the weights and is the model's first
 * layer (lib/model/normalization.ts).
 *
 * Augmentation runs on plain arrays, one image at a time, from a seeded Rng: the same seed gives
 * the same augmented images.
 */
import type { AugmentationOptions } from "../config.ts";
import type { Rng } from "../rng.ts";

export type JitterStep = "brightness" | "contrast" | "saturation" | "hue";
const JITTER_STEPS: JitterStep[] = ["brightness", "contrast", "saturation", "hue"];

/** The random choices for one image. */
export interface AugmentationParams {
  flip: boolean;
  /** The jitter steps in the order applied (torchvision applies them in random order). */
  order: JitterStep[];
  factors: Partial<Record<JitterStep, number>>;
}

/** Draw one image's augmentation the way torchvision does: flip, then order, then factors. */
export function sampleAugmentation(rng: Rng, opts: AugmentationOptions): AugmentationParams {
  const flip = rng.next() < opts.flipProbability;
  const order = rng.permutation(4).map((i) => JITTER_STEPS[i]);
  const factors: Partial<Record<JitterStep, number>> = {};
  for (const step of JITTER_STEPS) {
    const v = opts[step];
    if (v <= 0) continue;
    factors[step] = step === "hue" ? rng.uniform(-v, v) : rng.uniform(Math.max(0, 1 - v), 1 + v);
  }
  return { flip, order: order.filter((s) => factors[s] !== undefined), factors };
}

const clamp255 = (v: number) => (v < 0 ? 0 : v > 255 ? 255 : v);
/** ITU-R 601 luma, as torchvision's `rgb_to_grayscale` and PIL's "L" mode. */
const gray = (r: number, g: number, b: number) => 0.299 * r + 0.587 * g + 0.114 * b;

function adjustBrightness(x: Float32Array, f: number): void {
  for (let i = 0; i < x.length; i++) x[i] = clamp255(x[i] * f);
}

function adjustContrast(x: Float32Array, f: number): void {
  // Blend with the mean gray level of the whole image.
  let sum = 0;
  for (let i = 0; i < x.length; i += 3) sum += gray(x[i], x[i + 1], x[i + 2]);
  const mean = sum / (x.length / 3);
  for (let i = 0; i < x.length; i++) x[i] = clamp255(f * x[i] + (1 - f) * mean);
}

function adjustSaturation(x: Float32Array, f: number): void {
  // Blend each pixel with its own gray level: a gray pixel (R = G = B) does not change.
  for (let i = 0; i < x.length; i += 3) {
    const l = gray(x[i], x[i + 1], x[i + 2]);
    x[i] = clamp255(f * x[i] + (1 - f) * l);
    x[i + 1] = clamp255(f * x[i + 1] + (1 - f) * l);
    x[i + 2] = clamp255(f * x[i + 2] + (1 - f) * l);
  }
}

function adjustHue(x: Float32Array, shift: number): void {
  // Rotate the hue in HSV space; gray pixels have no hue (saturation 0) and do not change.
  for (let i = 0; i < x.length; i += 3) {
    const r = x[i], g = x[i + 1], b = x[i + 2];
    const max = Math.max(r, g, b), min = Math.min(r, g, b);
    const delta = max - min;
    if (delta === 0) continue;
    let h = max === r
      ? ((g - b) / delta) % 6
      : max === g
      ? (b - r) / delta + 2
      : (r - g) / delta + 4;
    h = h / 6 + shift;
    h -= Math.floor(h);
    const s = delta / max, v = max;
    const k = (n: number) => (n + h * 6) % 6;
    const f = (n: number) => v - v * s * Math.max(0, Math.min(k(n), 4 - k(n), 1));
    x[i] = f(5);
    x[i + 1] = f(3);
    x[i + 2] = f(1);
  }
}

/**
 * Apply drawn augmentation to one image.
 * @param pixels Uint8Array [size, size, 3] RGB (not modified).
 * @returns Float32Array [size, size, 3] in 0..255.
 */
export function applyAugmentation(
  pixels: Uint8Array,
  size: number,
  params: AugmentationParams,
): Float32Array {
  const out = new Float32Array(pixels.length);
  if (params.flip) {
    for (let y = 0; y < size; y++) {
      const row = y * size * 3;
      for (let x = 0; x < size; x++) {
        const src = row + x * 3, dst = row + (size - 1 - x) * 3;
        out[dst] = pixels[src];
        out[dst + 1] = pixels[src + 1];
        out[dst + 2] = pixels[src + 2];
      }
    }
  } else {
    out.set(pixels);
  }
  for (const step of params.order) {
    const f = params.factors[step]!;
    if (step === "brightness") adjustBrightness(out, f);
    else if (step === "contrast") adjustContrast(out, f);
    else if (step === "saturation") adjustSaturation(out, f);
    else adjustHue(out, f);
  }
  return out;
}

/** Pixels as float32 with no augmentation (validation, test, prediction). */
export function toFloat(pixels: Uint8Array): Float32Array {
  return Float32Array.from(pixels);
}

/**
 * How much each jitter step changes an image at a given strength: the largest change of any
 * value (0..255). On a gray image stored as RGB, saturation and hue change nothing.
 */
export function jitterEffect(
  pixels: Uint8Array,
  size: number,
  factors: Record<JitterStep, number> = {
    brightness: 1.2,
    contrast: 1.2,
    saturation: 1.2,
    hue: 0.02,
  },
): { step: JitterStep; factor: number; maxChange: number }[] {
  return JITTER_STEPS.map((step) => {
    const out = applyAugmentation(pixels, size, {
      flip: false,
      order: [step],
      factors: { [step]: factors[step] },
    });
    let max = 0;
    for (let i = 0; i < out.length; i++) max = Math.max(max, Math.abs(out[i] - pixels[i]));
    return { step, factor: factors[step], maxChange: max };
  });
}
