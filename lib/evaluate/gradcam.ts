/**
 * Grad-CAM (Selvaraju et al. 2017, "Grad-CAM: Visual Explanations from Deep Networks via
 * Gradient-based Localization"): where in the image the last convolutional stage found what
 * drove a class score. The gradient of the score with respect to that stage's activations,
 * averaged over space, weighs its channels; the weighted sum, rectified and normalised, is the map.
 */
import { initBackend, tf } from "../backend.ts";
import { LAYER } from "../model/mod.ts";

/**
 * Grad-CAM maps for a batch.
 *
 * @param x Tensor4D [B, S, S, 3] RGB in 0..255 (not disposed).
 * @param target the class whose score to explain per image; default: the predicted class.
 * @param layerName the activation to explain (default: MobileNetV3's last conv stage, 960
 *   channels); the model's layers after it must form a chain to the logits.
 * @returns one Float32Array [S, S] in [0, 1] per image (bilinearly upsampled), and the predicted classes.
 */
export async function gradCam(
  model: tf.LayersModel,
  x: tf.Tensor4D,
  opts: { target?: number[]; layerName?: string } = {},
): Promise<{ heatmaps: Float32Array[]; predicted: number[] }> {
  await initBackend();
  const layerName = opts.layerName ?? LAYER.lastConvActivation;
  const layer = model.getLayer(layerName);
  const head = model.layers.slice(model.layers.indexOf(layer) + 1);
  const features = tf.model({ inputs: model.inputs, outputs: layer.output as tf.SymbolicTensor });
  const [batch, size] = [x.shape[0], x.shape[1]];

  const activations = features.predict(x) as tf.Tensor4D; // [B, h, w, C]
  const logits = tf.tidy(() =>
    head.reduce((y, l) => l.apply(y) as tf.Tensor, activations as tf.Tensor)
  );
  const argmax = tf.argMax(logits, 1);
  const predicted = Array.from(await argmax.data());
  tf.dispose([argmax, logits]);
  const target = opts.target ?? predicted;
  const cams = tf.tidy(() => {
    const onehot = tf.oneHot(tf.tensor1d(target, "int32"), logits.shape[1] as number);
    // d(score of the target class) / d(activations)
    const grads = tf.grad((a: tf.Tensor) =>
      tf.sum(tf.mul(head.reduce((y, l) => l.apply(y) as tf.Tensor, a), onehot))
    )(activations) as tf.Tensor4D;
    const weights = tf.mean(grads, [1, 2], true); // [B, 1, 1, C]
    const cam = tf.relu(tf.sum(tf.mul(activations, weights), -1, true)); // [B, h, w, 1]
    const max = tf.max(cam, [1, 2, 3], true);
    const normalised = tf.div(cam, tf.maximum(max, 1e-12));
    // Half-pixel centres: each cell of the map covers its own block of the image (without
    // them TF resizes as if cell centres sat at block corners, shifting the map up and left).
    return tf.image.resizeBilinear(normalised as tf.Tensor4D, [size, size], false, true).reshape([
      batch,
      size,
      size,
    ]);
  });
  activations.dispose();
  const data = await cams.data() as Float32Array;
  cams.dispose();
  const heatmaps = Array.from({ length: batch }, (_, i) => {
    const map = data.slice(i * size * size, (i + 1) * size * size);
    // Bilinear upsampling stays in [0, 1]; clamp rounding only.
    for (let j = 0; j < map.length; j++) map[j] = Math.min(1, Math.max(0, map[j]));
    return map;
  });
  return { heatmaps, predicted };
}

/** Share of a heatmap's total inside a box given as fractions of the image (for tests, reviews). */
export function heatShare(
  heat: Float32Array,
  size: number,
  box: { left: number; right: number; top: number; bottom: number },
): number {
  let inside = 0, total = 0;
  for (let y = 0; y < size; y++) {
    for (let x = 0; x < size; x++) {
      const v = heat[y * size + x];
      total += v;
      const fx = (x + 0.5) / size, fy = (y + 0.5) / size;
      if (fx >= box.left && fx < box.right && fy >= box.top && fy < box.bottom) inside += v;
    }
  }
  return total === 0 ? 0 : inside / total;
}

/** A blue → cyan → yellow → red colour scale for heat in [0, 1]. */
function heatColour(v: number): [number, number, number] {
  const stops: [number, number, number][] = [[0, 0, 140], [0, 120, 255], [0, 230, 200], [
    255,
    230,
    0,
  ], [230, 0, 0]];
  const t = Math.min(1, Math.max(0, v)) * (stops.length - 1);
  const i = Math.min(stops.length - 2, Math.floor(t));
  const f = t - i;
  return [0, 1, 2].map((c) => Math.round(stops[i][c] + f * (stops[i + 1][c] - stops[i][c]))) as [
    number,
    number,
    number,
  ];
}

/**
 * Blend a heatmap over an X-ray: the colour's weight grows with the heat, so cold regions keep
 * the image visible.
 * @returns Uint8Array [size, size, 3].
 */
export function overlayHeatmap(
  pixels: Uint8Array,
  heat: Float32Array,
  size: number,
  alpha = 0.6,
): Uint8Array {
  const out = new Uint8Array(size * size * 3);
  for (let i = 0; i < size * size; i++) {
    const [r, g, b] = heatColour(heat[i]);
    const a = alpha * (0.25 + 0.75 * heat[i]);
    out[i * 3] = Math.round((1 - a) * pixels[i * 3] + a * r);
    out[i * 3 + 1] = Math.round((1 - a) * pixels[i * 3 + 1] + a * g);
    out[i * 3 + 2] = Math.round((1 - a) * pixels[i * 3 + 2] + a * b);
  }
  return out;
}
