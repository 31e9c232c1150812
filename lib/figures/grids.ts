/**
 * Image grids (sharp composites) as Figures: samples per class, augmentation previews, predictions,
 * what the shortcut experiments see, Grad-CAM overlays.
 */
import { tf } from "../backend.ts";
import { type AugmentationOptions, INPUT_MASKS, type InputMask } from "../config.ts";
import { Rng } from "../rng.ts";
import {
  applyAugmentation,
  applyMask,
  type Dataset,
  type ImageCache,
  type ImageItem,
  type NearDuplicatePair,
  sampleAugmentation,
  toFloat,
} from "../data/mod.ts";
import { gradCam, overlayHeatmap, type Prediction } from "../evaluate/mod.ts";
import { Figure } from "./figure.ts";
import { composeGrid, type Tile } from "./raster.ts";

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

/**
 * Grad-CAM overlays for chosen images, one row per group (e.g. "correct Covid", "wrong"), each
 * tile captioned with the true and the predicted class.
 */
export async function gradCamGrid(
  model: tf.LayersModel,
  groups: { title: string; items: ImageItem[] }[],
  cache: ImageCache,
  classNames: readonly string[],
  opts: { mask?: InputMask; title?: string } = {},
): Promise<Figure> {
  const size = cache.imageSize;
  const rows: { title: string; tiles: Tile[] }[] = [];
  for (const group of groups) {
    const tiles: Tile[] = [];
    for (const item of group.items) {
      const pixels = await cache.get(item);
      const input = applyMask(toFloat(pixels), size, opts.mask ?? "none");
      const x = tf.tensor4d(input, [1, size, size, 3]);
      const { heatmaps, predicted } = await gradCam(model, x);
      x.dispose();
      tiles.push({
        pixels: overlayHeatmap(pixels, heatmaps[0], size),
        size,
        caption: `${item.relPath.split("/").at(-1)!.slice(0, 22)}\ntrue ${
          classNames[item.label]
        } → ${classNames[predicted[0]]}`,
        color: predicted[0] === item.label ? "#1a7f37" : "#b42318",
      });
    }
    if (tiles.length > 0) rows.push({ title: group.title, tiles });
  }
  return new Figure(opts.title ?? "Grad-CAM: where the last convolutional stage looked", {
    png: await composeGrid(rows, { tileSize: 180, titleWidth: 150 }),
  });
}

/**
 * Pairs of images that are the same X-ray, side by side, one pair per row: the row says whether
 * the pair crosses the train–test split and its distance (0 for byte-identical files), for a
 * person to confirm what the finder found.
 */
export async function nearDuplicateGallery(
  pairs: readonly NearDuplicatePair[],
  cache: ImageCache,
): Promise<Figure> {
  const rows = [];
  for (const p of pairs) {
    rows.push({
      title: `${p.kind === "train-test" ? "train–test" : p.kind.replace("-", " ")} ${
        p.byteIdentical ? "identical" : `d ${p.distance.toFixed(3)}`
      }`,
      tiles: await Promise.all([p.a, p.b].map(async (item) => ({
        pixels: await cache.get(item),
        size: cache.imageSize,
        caption: `${item.split}/${item.className}\n${shortName(item.relPath, 28)}`,
      }))),
    });
  }
  if (rows.length === 0) {
    return new Figure("Same X-ray twice: no pairs", {
      png: await composeGrid([{ title: "no pairs found", tiles: [] }], {
        tileSize: 40,
        titleWidth: 190,
      }),
    });
  }
  return new Figure(`Same X-ray twice: ${pairs.length} pairs`, {
    png: await composeGrid(rows, { tileSize: 170, titleWidth: 190, captionHeight: 32 }),
  });
}
