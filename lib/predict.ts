/** Class probabilities from a model (inference mode: dropout off, BatchNorm moving statistics). */
import { tf } from "./backend.ts";

/**
 * Softmax probabilities for a batch.
 * @param x Tensor4D [B, S, S, 3] RGB in 0..255 (not disposed).
 * @returns B rows of numClasses probabilities, each row summing to 1.
 */
export async function predictProbabilities(
  model: tf.LayersModel,
  x: tf.Tensor4D,
): Promise<number[][]> {
  const probs = tf.tidy(() => tf.softmax(model.predict(x) as tf.Tensor2D));
  const rows = await probs.array() as number[][];
  probs.dispose();
  return rows;
}
