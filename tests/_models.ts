/** Small MobileNetV3-Large models for tests: 64 px, the smallest convenient input (5 stride-2 stages). */
import {
  buildMobileNetV3Large,
  KERAS_NORMALIZATION,
  tf,
  TORCHVISION_IMAGENET_NORMALIZATION,
} from "../lib/mod.ts";

export const SMALL = 64;

/** A freshly initialised model at {@link SMALL} px (Keras conventions), seeded. */
export function small(numClasses = 3, seed = 1): tf.LayersModel {
  return buildMobileNetV3Large({
    imageSize: SMALL,
    numClasses,
    normalization: KERAS_NORMALIZATION,
    convention: "keras",
    seed,
  });
}

/**
 * A model at {@link SMALL} px for comparing training steps, in either convention: dropout 0.5 and
 * BatchNorm momentum 0.9, so one step moves the dropout masks and the moving averages visibly.
 */
export function smallForTraining(convention: "keras" | "torchvision"): tf.LayersModel {
  return buildMobileNetV3Large({
    imageSize: SMALL,
    numClasses: 3,
    normalization: convention === "keras"
      ? KERAS_NORMALIZATION
      : TORCHVISION_IMAGENET_NORMALIZATION,
    convention,
    seed: 3,
    batchNormMomentum: 0.9,
    dropout: 0.5,
  });
}

/** `model.predict(x)`'s values. */
export async function outputs(model: tf.LayersModel, x: tf.Tensor): Promise<Float32Array> {
  const y = model.predict(x) as tf.Tensor;
  const data = await y.data() as Float32Array;
  y.dispose();
  return data;
}

/** Two random images at {@link SMALL} px, values 0..255 (seeded). Caller disposes. */
export const pixels = (): tf.Tensor4D =>
  tf.randomUniform([2, SMALL, SMALL, 3], 0, 255, "float32", 7) as tf.Tensor4D;
