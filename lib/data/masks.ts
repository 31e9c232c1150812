/**
 * The review's shortcut experiments: the model sees only the border of each image (the lung field
 * blanked) or only the lung field (the border blanked). `InputMask` is a run setting (config.ts).
 */
import type { InputMask } from "../config.ts";

/**
 * The "lung field": a central box, 20–80 % of the width and 15–85 % of the height. A rough
 * stand-in for a segmentation, generous enough to hold both lungs on these images, and leaving
 * the frame where text markers, body outline and arms are.
 */
export const LUNG_FIELD = Object.freeze({ left: 0.2, right: 0.8, top: 0.15, bottom: 0.85 });

/**
 * Blank part of an image in place (value 0) according to `mask`.
 * @param pixels Float32Array [size, size, 3], modified.
 */
export function applyMask(pixels: Float32Array, size: number, mask: InputMask): Float32Array {
  if (mask === "none") return pixels;
  const x0 = Math.round(LUNG_FIELD.left * size), x1 = Math.round(LUNG_FIELD.right * size);
  const y0 = Math.round(LUNG_FIELD.top * size), y1 = Math.round(LUNG_FIELD.bottom * size);
  for (let y = 0; y < size; y++) {
    for (let x = 0; x < size; x++) {
      const inside = x >= x0 && x < x1 && y >= y0 && y < y1;
      if (inside === (mask === "border-only")) {
        pixels.fill(0, (y * size + x) * 3, (y * size + x) * 3 + 3);
      }
    }
  }
  return pixels;
}
