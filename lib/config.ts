import { envFlag } from "./env.ts";

/**
 * The paper's settings as one typed, frozen default. Where the paper is silent, the choice is ours
 * and says so; every field can be overridden by a flag of `deno task reproduce`.
 */

/** torchvision's `RandomHorizontalFlip(p)` + `ColorJitter(brightness, contrast, saturation, hue)`. */
export interface AugmentationOptions {
  flipProbability: number;
  /** Factor drawn from [max(0, 1 − b), 1 + b]; 0 disables. */
  brightness: number;
  /** Factor drawn from [max(0, 1 − c), 1 + c]; 0 disables. */
  contrast: number;
  /** Factor drawn from [max(0, 1 − s), 1 + s]; 0 disables. */
  saturation: number;
  /** Hue shift drawn from [−h, h] (fraction of the colour circle, h ≤ 0.5); 0 disables. */
  hue: number;
}

/**
 * Which part of the image the model may see (the review's shortcut experiments): everything,
 * only the border (the lung field blanked), or only the lung field (the border blanked).
 */
export type InputMask = "none" | "border-only" | "lung-only";
export const INPUT_MASKS: readonly InputMask[] = ["none", "border-only", "lung-only"];

export interface RunConfig {
  /** Input size in pixels. Paper, "Preprocessing": images resized to 446×446. */
  imageSize: number;
  /** Paper, "Model training": 8 epochs. */
  epochs: number;
  /**
   * Not in the paper. 4, as PyTorch's transfer-learning tutorial (whose recipe the paper's
   * training loop follows) uses; peak memory at 446 px is ~1.9 GB (16 would need ~5.6 GB).
   */
  batchSize: number;
  /** Not in the paper. 0.001 with momentum 0.9: PyTorch's transfer-learning recipe for SGD. */
  learningRate: number;
  /** Paper: SGD. Momentum is not given; 0.9 is the usual choice. */
  momentum: number;
  /** Paper: learning rate ×0.1 after epochs 4 and 6 (1-based epochs). */
  lrMilestones: number[];
  lrGamma: number;
  /**
   * Paper: a random split of the training folder, 216 images for training. floor(0.14 · 251) =
   * 35 held out for validation, as its SubsetRandomSampler code did.
   */
  validationFraction: number;
  /** The paper's split was not stratified. */
  stratify: boolean;
  /** One seed for split, batch order, augmentation, initialisation and dropout. */
  seed: number;
  /**
   * Paper: MobileNetV3-Large pretrained on ImageNet, torchvision's (`pretrained=True`).
   * "torchvision" (= "imagenet"), "keras", "none", or a .pth/.pt/.h5 path (lib/model/weights.ts).
   */
  weights: string;
  /** Paper: random horizontal flip and colour jitter (jitter values not given; see notebook 02). */
  augmentation: AugmentationOptions;
  /** Keras's MobileNetV3 dropout before the classifier. */
  dropout: number;
  /** torchvision's MobileNetV3 BatchNorm momentum 0.01, i.e. Keras's 0.99 (the paper used PyTorch). */
  batchNormMomentum: number;
  /** Decompression-bomb guard for input images. */
  maxPixels: number;
  /**
   * Not in the paper: the review's shortcut experiments train on the image border only
   * ("border-only") or the lung field only ("lung-only"). "none" is the paper's method.
   */
  inputMask: InputMask;
  /**
   * Rotate images by their EXIF orientation tag. The paper's pipeline (torchvision's ImageFolder,
   * PIL's `Image.open`) does not, so neither do we by default; data_report.json lists tagged files.
   */
  exifRotate: boolean;
}

/**
 * The model's own defaults, in one place (the builder, its BatchNorm layer and the run config read
 * them): the paper fine-tuned torchvision's MobileNetV3-Large, whose BatchNorm momentum 0.01 in
 * PyTorch's terms is 0.99 in Keras's (`moving = moving · m + batch · (1 − m)`), with dropout 0.2
 * before the classifier.
 */
export const MODEL_DEFAULTS = Object.freeze({ batchNormMomentum: 0.99, dropout: 0.2 });

export const PAPER_CONFIG: Readonly<RunConfig> = Object.freeze({
  imageSize: 446,
  epochs: 8,
  batchSize: 4,
  learningRate: 0.001,
  momentum: 0.9,
  lrMilestones: [4, 6],
  lrGamma: 0.1,
  validationFraction: 0.14,
  stratify: false,
  seed: 42,
  weights: "torchvision",
  augmentation: Object.freeze({
    flipProbability: 0.5,
    brightness: 0.2,
    contrast: 0.2,
    saturation: 0.2,
    hue: 0.02,
  }),
  dropout: MODEL_DEFAULTS.dropout,
  batchNormMomentum: MODEL_DEFAULTS.batchNormMomentum,
  maxPixels: 50_000_000,
  inputMask: "none",
  exifRotate: false,
});

/**
 * Quick mode (`COVID_CXR_QUICK=1`): the same pipeline on a small budget, for notebooks run in tests
 * and for a first look. Not comparable to the paper. Without ImageNet weights (offline) a model
 * trained 2–3 epochs at the paper's learning rate never gets past predicting the largest class
 * (measured: 39.4 % = 26/66); a 10× learning rate and BatchNorm statistics that follow the
 * weights faster (momentum 0.9) make 3 epochs learn something (63.6 % test, 83 % validation).
 */
export const QUICK_OVERRIDES: Readonly<Partial<RunConfig>> = Object.freeze({
  imageSize: 128,
  epochs: 3,
  batchSize: 8,
  learningRate: 0.01,
  batchNormMomentum: 0.9,
});

/** True when `COVID_CXR_QUICK` is on (1/true/yes; a value that is neither on nor off is refused). */
export function quickMode(): boolean {
  return envFlag("COVID_CXR_QUICK");
}

/** The paper's configuration, or its quick variant in quick mode, with overrides on top. */
export function runConfig(overrides: Partial<RunConfig> = {}): RunConfig {
  return { ...PAPER_CONFIG, ...(quickMode() ? QUICK_OVERRIDES : {}), ...overrides } as RunConfig;
}

/** Pure: do two configurations agree on every setting (key order ignored), apart from `ignore`? */
export function sameSettings(
  a: RunConfig,
  b: RunConfig,
  ignore: (keyof RunConfig)[] = [],
): boolean {
  return settingDifferences(a, b, ignore).length === 0;
}

/**
 * Pure: the settings two configurations disagree on (a setting only one of them has counts), apart
 * from `ignore`, in `b`'s order then `a`'s.
 */
export function settingDifferences(
  a: RunConfig,
  b: RunConfig,
  ignore: (keyof RunConfig)[] = [],
): (keyof RunConfig)[] {
  const canonical = (v: unknown): unknown =>
    Array.isArray(v) ? v.map(canonical) : v && typeof v === "object"
      ? Object.fromEntries(
        Object.keys(v).sort().map((k) => [k, canonical((v as Record<string, unknown>)[k])]),
      )
      : v;
  const keys = [...new Set([...Object.keys(b), ...Object.keys(a)])] as (keyof RunConfig)[];
  return keys.filter((k) =>
    !ignore.includes(k) && JSON.stringify(canonical(a[k])) !== JSON.stringify(canonical(b[k]))
  );
}
