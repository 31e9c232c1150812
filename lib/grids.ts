/** Image grids (sharp composites) as Figures: samples per class, augmentation previews. */
import type { Dataset, ImageItem } from "./dataset.ts";
import type { ImageCache } from "./image_cache.ts";
import { composeGrid, type Tile } from "./images.ts";
import { Figure } from "./charts.ts";
import type { Prediction } from "./evaluate.ts";
import {
  applyAugmentation,
  applyMask,
  type AugmentationOptions,
  INPUT_MASKS,
  sampleAugmentation,
} from "./preprocess.ts";
import { Rng } from "./rng.ts";

/** Float pixels (0..255) back to bytes for display. */
export function toBytes(pixels: Float32Array): Uint8Array {
  const out = new Uint8Array(pixels.length);
  for (let i = 0; i < pixels.length; i++) out[i] = Math.round(pixels[i]);
  return out;
}

function shortName(relPath: string, max = 22): string {
  const name = relPath.split("/").at(-1)!;
  return name.length > max ? `${name.slice(0, max - 1)}…` : name;
}

/** `perClass` random images of each class (seeded), one row per class, as the model sees them. */
export async function sampleGrid(
  ds: Dataset,
  cache: ImageCache,
  opts: { perClass?: number; seed?: number; split?: "train" | "test" } = {},
): Promise<Figure> {
  const perClass = opts.perClass ?? 6;
  const split = opts.split ?? "train";
  const rng = Rng.stream(opts.seed ?? 0, "sample-grid");
  const rows = [];
  for (const [label, className] of ds.classNames.entries()) {
    const items = rng.shuffle(ds[split].filter((i) => i.label === label)).slice(0, perClass);
    const tiles: Tile[] = [];
    for (const item of items) {
      tiles.push({
        pixels: await cache.get(item),
        size: cache.imageSize,
        caption: shortName(item.relPath),
      });
    }
    rows.push({ title: className, tiles });
  }
  return new Figure(`${perClass} ${split} images per class (resized to ${cache.imageSize} px)`, {
    png: await composeGrid(rows),
  });
}

/** One image, then `count` seeded draws of the training augmentation, each captioned. */
export async function augmentationPreview(
  item: ImageItem,
  cache: ImageCache,
  options: AugmentationOptions,
  opts: { count?: number; seed?: number } = {},
): Promise<Figure> {
  const pixels = await cache.get(item);
  const rng = Rng.stream(opts.seed ?? 0, "augmentation-preview");
  const tiles: Tile[] = [{ pixels, size: cache.imageSize, caption: "original\n(resized)" }];
  for (let i = 0; i < (opts.count ?? 8); i++) {
    const params = sampleAugmentation(rng, options);
    const f = params.factors;
    const fmt = (v: number | undefined, digits = 2) => (v === undefined ? "–" : v.toFixed(digits));
    tiles.push({
      pixels: toBytes(applyAugmentation(pixels, cache.imageSize, params)),
      size: cache.imageSize,
      caption: `${params.flip ? "flipped" : "not flipped"} · b ${fmt(f.brightness)}\n` +
        `c ${fmt(f.contrast)} · s ${fmt(f.saturation)} · h ${fmt(f.hue, 3)}`,
    });
  }
  return new Figure(`Training augmentation of ${item.relPath}`, {
    png: await composeGrid([
      { tiles: tiles.slice(0, 5) },
      { tiles: tiles.slice(5) },
    ], { tileSize: 180 }),
  });
}

/**
 * Test images with their prediction: the mistakes (default) or every image, each captioned with
 * its true class, the predicted class and its probability.
 */
export async function predictionGrid(
  predictions: readonly Prediction[],
  cache: ImageCache,
  classNames: readonly string[],
  opts: { only?: "wrong" | "right" | "all"; max?: number; columns?: number } = {},
): Promise<Figure> {
  const only = opts.only ?? "wrong";
  const chosen = predictions
    .filter((p) => only === "all" || (only === "wrong" ? !p.correct : p.correct))
    .slice(0, opts.max ?? 12);
  const tiles: Tile[] = [];
  for (const p of chosen) {
    tiles.push({
      pixels: await cache.get(p.item),
      size: cache.imageSize,
      caption: `${shortName(p.item.relPath)}\ntrue ${classNames[p.item.label]} → ${
        classNames[p.predicted]
      } ${(100 * p.probabilities[p.predicted]).toFixed(0)} %`,
      color: p.correct ? "#1a7f37" : "#b42318",
    });
  }
  const title = only === "wrong"
    ? `Misclassified test images (${chosen.length})`
    : `Test images (${chosen.length})`;
  if (tiles.length === 0) {
    return new Figure(title, {
      png: await composeGrid([{ title: "none", tiles: [] }], { tileSize: 40 }),
    });
  }
  const columns = opts.columns ?? 4;
  const rows = [];
  for (let i = 0; i < tiles.length; i += columns) rows.push({ tiles: tiles.slice(i, i + columns) });
  return new Figure(title, { png: await composeGrid(rows, { tileSize: 200, captionHeight: 32 }) });
}

/** One image as each shortcut experiment's model sees it: whole, border only, lung field only. */
export async function maskPreview(items: readonly ImageItem[], cache: ImageCache): Promise<Figure> {
  const size = cache.imageSize;
  const rows = [];
  for (const item of items) {
    const pixels = await cache.get(item);
    rows.push({
      title: item.className,
      tiles: INPUT_MASKS.map((mask) => ({
        pixels: toBytes(applyMask(Float32Array.from(pixels), size, mask)),
        size,
        caption: mask === "none" ? "whole image" : mask,
      })),
    });
  }
  return new Figure("What the shortcut experiments' models see", {
    png: await composeGrid(rows, { tileSize: 180 }),
  });
}
