/**
 * The paper's model set-up: MobileNetV3-Large with pretrained weights up to and including the
 * 1280-unit layer, and a new classifier for the data set's classes (the head swap). The model is
 * built in the convention its weights need (torchvision's padding and normalisation for
 * torchvision's weights, Keras's for Keras's).
 */
import { initBackend, type tf } from "../backend.ts";
import { buildMobileNetV3Large } from "./mobilenet_v3.ts";
import { loadWeights, resolveWeights, type WeightsInfo, type WeightsSource } from "./weights.ts";

export interface ModelOptions {
  /** "torchvision" (= "imagenet"), "keras", "none" (random) or a .pth/.pt/.h5 path. */
  weights: WeightsSource;
  numClasses: number;
  imageSize: number;
  seed: number;
  dropout?: number;
  batchNormMomentum?: number;
  /** Where official weight files are cached (default: the user cache dir). */
  cacheDir?: string;
}

/**
 * Build MobileNetV3-Large with its weights, as the paper sets it up: pretrained layers up to and
 * including the 1280-unit layer, and a new `numClasses`-way classifier when the weights file has
 * a different number of classes. Fails before anything is built when the weights cannot be had.
 *
 * @param opts.weights "torchvision" (the paper's), "keras", "none" or a weights file.
 * @returns The model (built in its weights' convention; the caller disposes it), where its
 *   weights came from, and whether the classifier was loaded too (same number of classes).
 * @throws {WeightsError} When the weights cannot be downloaded or read.
 *
 * @example
 * ```ts
 * const { model, weights } = await buildModel({ weights: "none", numClasses: 3, imageSize: 446, seed: 42 });
 * ```
 */
export async function buildModel(
  opts: ModelOptions,
): Promise<{ model: tf.LayersModel; weights: WeightsInfo; classifierLoaded: boolean }> {
  await initBackend();
  const weights = await resolveWeights(opts.weights, { cacheDir: opts.cacheDir });
  const model = buildMobileNetV3Large({
    imageSize: opts.imageSize,
    numClasses: opts.numClasses,
    normalization: weights.normalization,
    convention: weights.convention ?? "keras", // older checkpoints recorded none: Keras's
    dropout: opts.dropout,
    batchNormMomentum: opts.batchNormMomentum,
    seed: opts.seed,
  });
  try {
    const { classifierLoaded } = await loadWeights(model, weights);
    return { model, weights, classifierLoaded };
  } catch (error) {
    model.dispose();
    throw error;
  }
}
