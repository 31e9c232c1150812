/**
 * Synthetic ImageFolder data sets made in the test: tiny images whose class is visible (a bright
 * band in a class-specific place), in every storage format the real data has.
 */
import sharp from "sharp";
import * as fs from "node:fs";
import * as path from "node:path";
import { Rng } from "../lib/rng.ts";

export const SYNTHETIC_CLASSES = ["Covid", "Normal", "Viral Pneumonia"];

/** RGB pixels of a `w`×`h` gray image with a bright band whose position encodes the class. */
export function classPattern(label: number, w: number, h: number, rng: Rng): Uint8Array {
  const px = new Uint8Array(w * h * 3);
  for (let y = 0; y < h; y++) {
    for (let x = 0; x < w; x++) {
      const band = Math.floor((x / w) * 3) === label;
      const v = Math.max(0, Math.min(255, (band ? 200 : 50) + Math.round((rng.next() - 0.5) * 60)));
      px.set([v, v, v], (y * w + x) * 3);
    }
  }
  return px;
}

/** Every storage format found in the paper's data, for synthetic images. */
export type Format = "jpeg-rgb" | "jpeg-gray" | "png-rgb" | "png-rgba" | "png-gray" | "png-gray16";
export const FORMATS: Format[] = [
  "jpeg-rgb",
  "jpeg-gray",
  "png-rgb",
  "png-rgba",
  "png-gray",
  "png-gray16",
];

/** Write RGB pixels to `file` in the given storage format. */
export async function writeImage(
  file: string,
  rgb: Uint8Array,
  w: number,
  h: number,
  format: Format,
  opts: { orientation?: number } = {},
): Promise<void> {
  fs.mkdirSync(path.dirname(file), { recursive: true });
  let img = sharp(rgb, { raw: { width: w, height: h, channels: 3 } });
  if (format === "png-rgba") img = img.ensureAlpha(1);
  if (format === "jpeg-gray" || format === "png-gray") img = img.toColourspace("b-w");
  if (format === "png-gray16") img = img.toColourspace("grey16");
  if (opts.orientation) img = img.withMetadata({ orientation: opts.orientation });
  await (format.startsWith("jpeg") ? img.jpeg({ quality: 95 }) : img.png()).toFile(file);
}

/**
 * A data set at `root` with `perClass.train` / `perClass.test` images per class, formats cycling
 * through every kind, sizes varying a little. Returns the root.
 */
export async function makeSyntheticDataset(
  root: string,
  opts: { train?: number; test?: number; seed?: number; size?: number } = {},
): Promise<string> {
  const rng = Rng.stream(opts.seed ?? 1, "synthetic");
  const base = opts.size ?? 48;
  let k = 0;
  for (const [split, n] of [["train", opts.train ?? 8], ["test", opts.test ?? 4]] as const) {
    for (const [label, className] of SYNTHETIC_CLASSES.entries()) {
      for (let i = 0; i < n; i++) {
        const format = FORMATS[k++ % FORMATS.length];
        const w = base + rng.int(16), h = base + rng.int(16);
        const ext = format.startsWith("jpeg") ? "jpeg" : "png";
        await writeImage(
          path.join(root, split, className, `${split}-${i}.${ext}`),
          classPattern(label, w, h, rng),
          w,
          h,
          format,
        );
      }
    }
  }
  return root;
}

/** A w×h RGB image whose left half is `left` and right half `right` (RGB triples). */
export function halves(w: number, h: number, left: number[], right: number[]): Uint8Array {
  const px = new Uint8Array(w * h * 3);
  for (let y = 0; y < h; y++) {
    for (let x = 0; x < w; x++) px.set(x < w / 2 ? left : right, (y * w + x) * 3);
  }
  return px;
}

/** The RGB triple at (x, y) of a `size`-wide interleaved image. */
export const pixelAt = (px: Uint8Array | Float32Array, size: number, x: number, y: number) => [
  ...px.slice((y * size + x) * 3, (y * size + x) * 3 + 3),
];
