/**
 * Near-identical images: the same X-ray saved at another size, crop, contrast, bit depth or
 * colour mode. SHA-256 (duplicates.ts) finds only byte-for-byte copies; a test image that is a
 * re-encoded training image is the same leak.
 *
 * The signature (why not a perceptual hash): each image as the model's decoder makes it, gray,
 * averaged into 32×32 cells whose values are replaced by their ranks — blind to any monotone
 * change of brightness, contrast or gamma (the external probe's README calibrated the same idea).
 * Two images' distance is the mean absolute difference of their ranks, minimised over crops of up
 * to 5 % of either image (in steps of 2.5 % per side), since a crop moves every cell of a
 * whole-image signature. Measured on this data set's own images (80 images × 8 kinds of copy,
 * against all 50,076 pairs of distinct files): 64-bit pHash and dHash found the crops only at
 * thresholds where distinct pairs already matched (5 % crops reached 0.25 of pHash's bits, distinct
 * images 0.125 at the 0.1 % quantile), the rank signature without the crop search likewise (crops
 * 0.12, distinct pairs 0.086); with the crop search every copy was under 0.044 and distinct images
 * of different classes over 0.057.
 *
 * The threshold is chosen on the data set itself (calibrateNearDuplicates): synthetic copies of
 * some of its images as positives, pairs of images of different classes as negatives.
 */
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { createHash } from "node:crypto";
import { writeJsonAtomic } from "../files.ts";
import { projectCacheDir } from "../paths.ts";
import { Rng } from "../rng.ts";
import { COPY_KINDS, type CopyKind, copySource, decodeResized, writeCopyOf } from "./decode.ts";
import { ImageCache } from "./image_cache.ts";
import type { Dataset, ImageItem } from "./image_folder.ts";

/** Signatures are computed at this decode size, whatever size a run trains at. */
export const SIGNATURE_IMAGE_SIZE = 128;
/** Cells per side of the rank thumbnail. */
const CELLS = 32;
/** Crops searched per side: 0, 2.5 % and 5 % (at most 5 % in all per axis). */
const CROP_STEP = 0.025;
const CROP_MAX = 0.05;
/**
 * Pairs whose uncropped distance is above this are not searched over crops: 5 % crops of this
 * data set's images moved the uncropped distance by at most 0.12, and near-identical pairs sit
 * under 0.05.
 */
const SEARCH_BELOW = 0.15;

/** Rank thumbnails of one image: uncropped, and each crop searched. */
export interface ImageSignature {
  full: Float32Array;
  crops: Float32Array[];
}

/** The crops searched: [left, top, right, bottom] fractions, uncropped excluded. */
export function cropGrid(step = CROP_STEP, max = CROP_MAX): [number, number, number, number][] {
  const axis: [number, number][] = [];
  const n = Math.round(max / step);
  for (let a = 0; a <= n; a++) for (let b = 0; a + b <= n; b++) axis.push([a * step, b * step]);
  const out: [number, number, number, number][] = [];
  for (const [l, r] of axis) {
    for (const [t, b] of axis) if (l + r + t + b > 0) out.push([l, t, r, b]);
  }
  return out;
}
const CROPS = cropGrid();

/** Ranks of the values, scaled to [0, 1], ties sharing their mean rank. */
export function rankValues(values: ArrayLike<number>): Float32Array {
  const sorted = Float64Array.from(values).sort();
  const out = new Float32Array(values.length);
  const scale = values.length > 1 ? values.length - 1 : 1;
  // First index whose value is not below v (or, with `after`, above it).
  const bound = (v: number, after: boolean) => {
    let lo = 0, hi = sorted.length;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (sorted[mid] < v || (after && sorted[mid] === v)) lo = mid + 1;
      else hi = mid;
    }
    return lo;
  };
  for (let i = 0; i < values.length; i++) {
    out[i] = (bound(values[i], false) + bound(values[i], true) - 1) / 2 / scale;
  }
  return out;
}

/** Summed-area table of the gray values (ITU-R 601 luma) of RGB pixels [size, size, 3]. */
function grayIntegral(pixels: Uint8Array, size: number): Float64Array {
  const stride = size + 1;
  const sums = new Float64Array(stride * stride);
  for (let y = 0; y < size; y++) {
    let row = 0;
    for (let x = 0; x < size; x++) {
      const i = 3 * (y * size + x);
      row += 0.299 * pixels[i] + 0.587 * pixels[i + 1] + 0.114 * pixels[i + 2];
      sums[(y + 1) * stride + x + 1] = sums[y * stride + x + 1] + row;
    }
  }
  return sums;
}

/** The region [l, 1 − r] × [t, 1 − b] averaged into CELLS × CELLS cells, as ranks. */
function rankThumbnail(sums: Float64Array, size: number, crop: readonly number[]): Float32Array {
  const [l, t, r, b] = crop;
  const stride = size + 1;
  const x0 = l * size, x1 = (1 - r) * size, y0 = t * size, y1 = (1 - b) * size;
  const cells = new Float64Array(CELLS * CELLS);
  for (let cy = 0; cy < CELLS; cy++) {
    const ay = Math.round(y0 + ((y1 - y0) * cy) / CELLS);
    const by = Math.max(ay + 1, Math.round(y0 + ((y1 - y0) * (cy + 1)) / CELLS));
    for (let cx = 0; cx < CELLS; cx++) {
      const ax = Math.round(x0 + ((x1 - x0) * cx) / CELLS);
      const bx = Math.max(ax + 1, Math.round(x0 + ((x1 - x0) * (cx + 1)) / CELLS));
      cells[cy * CELLS + cx] = (sums[by * stride + bx] - sums[ay * stride + bx] -
        sums[by * stride + ax] + sums[ay * stride + ax]) / ((bx - ax) * (by - ay));
    }
  }
  return rankValues(cells);
}

/** The signature of decoded RGB pixels [size, size, 3]. */
export function imageSignature(pixels: Uint8Array, size: number): ImageSignature {
  const sums = grayIntegral(pixels, size);
  return {
    full: rankThumbnail(sums, size, [0, 0, 0, 0]),
    crops: CROPS.map((c) => rankThumbnail(sums, size, c)),
  };
}

/** Mean absolute difference; stops early (returning at least `stopAbove`) once above it. */
function meanAbsoluteDifference(a: Float32Array, b: Float32Array, stopAbove = Infinity): number {
  const limit = stopAbove * a.length;
  let s = 0;
  for (let i = 0; i < a.length; i++) {
    s += Math.abs(a[i] - b[i]);
    if (s > limit) return s / a.length;
  }
  return s / a.length;
}

/**
 * Distance of two images (0 = the same ranks; distinct X-rays are around 0.1–0.3): the smallest
 * over one image uncropped against the other cropped, either way round.
 */
export function signatureDistance(a: ImageSignature, b: ImageSignature): number {
  let best = meanAbsoluteDifference(a.full, b.full);
  if (best >= SEARCH_BELOW) return best;
  for (const crop of a.crops) best = Math.min(best, meanAbsoluteDifference(crop, b.full, best));
  for (const crop of b.crops) best = Math.min(best, meanAbsoluteDifference(a.full, crop, best));
  return best;
}

/** Signatures of images, from the decode cache at {@link SIGNATURE_IMAGE_SIZE}. */
export async function imageSignatures(
  items: readonly ImageItem[],
  opts: { cache?: ImageCache; maxPixels?: number } = {},
): Promise<ImageSignature[]> {
  // Each image is read once here: its pixels are kept on disk, not in memory (they held ~80 MB
  // of a run's peak through training).
  const cache = opts.cache ??
    new ImageCache({
      imageSize: SIGNATURE_IMAGE_SIZE,
      maxPixels: opts.maxPixels,
      memoryLimitBytes: 0,
    });
  const out: ImageSignature[] = [];
  for (const item of items) out.push(imageSignature(await cache.get(item), cache.imageSize));
  return out;
}

/** A threshold chosen on the data set's own images, with how well it does there. */
export interface NearDuplicateCalibration {
  /** Pairs at or under this distance are near-identical. */
  threshold: number;
  /** Images copied (half chose the threshold, the other half measured it). */
  images: number;
  /** Copies of the held-out images found at the threshold, per kind of copy and in all. */
  detection: { kind: CopyKind | "all"; found: number; copies: number }[];
  /** Pairs of images of different classes (taken as distinct X-rays) under the threshold. */
  falsePairs: { pairs: number; under: number };
  /** Largest distance of a copy among the images that chose the threshold. */
  largestCopyDistance: number;
  /**
   * The 0.1 % quantile of the distances of all pairs of distinct files (the threshold's cap: real
   * near-duplicates are far rarer than one pair in a thousand).
   */
  distinctQuantile: number;
}

/**
 * Choose the threshold on the data set's own images: `sample` images (stratified by class,
 * seeded) are copied in every {@link COPY_KINDS} way; half of them set the threshold to the
 * largest distance of one of their copies (every copy found), capped at the 0.1 % quantile of
 * distances between all pairs of distinct files; the other half measures the detection rate at
 * that threshold, and the pairs of images of different classes the false-pair rate.
 */
export async function calibrateNearDuplicates(
  items: readonly ImageItem[],
  signatures: readonly ImageSignature[],
  opts: { sample?: number; seed?: number; maxPixels?: number } = {},
): Promise<NearDuplicateCalibration> {
  const rng = Rng.stream(opts.seed ?? 0, "near-duplicate-calibration");
  const byClass = new Map<number, number[]>();
  items.forEach((item, i) => byClass.set(item.label, [...(byClass.get(item.label) ?? []), i]));
  const want = Math.min(opts.sample ?? 40, items.length);
  const pools = [...byClass.values()].map((p) => rng.shuffle(p));
  const chosen: number[] = [];
  for (let k = 0; chosen.length < want; k++) {
    for (const pool of pools) if (k < pool.length && chosen.length < want) chosen.push(pool[k]);
  }
  // Each copy's crop position drawn in a fixed order, so that the copies do not depend on which
  // of the images being copied at once finishes first.
  const randoms = chosen.map(() => COPY_KINDS.map(() => rng.next()));
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "near-duplicates-"));
  const copiesOf = async (n: number) => {
    const index = chosen[n];
    const source = await copySource(items[index].path);
    const found: { image: number; kind: CopyKind; distance: number }[] = [];
    for (const [k, kind] of COPY_KINDS.entries()) {
      const file = await writeCopyOf(source, kind, path.join(dir, `${n}-${kind}`), randoms[n][k]);
      const pixels = await decodeResized(file, SIGNATURE_IMAGE_SIZE, { maxPixels: opts.maxPixels });
      found.push({
        image: n,
        kind,
        distance: signatureDistance(
          signatures[index],
          imageSignature(pixels, SIGNATURE_IMAGE_SIZE),
        ),
      });
      fs.rmSync(file);
    }
    return found;
  };
  const perImage: Awaited<ReturnType<typeof copiesOf>>[] = [];
  try {
    // Two images at a time: encoding and decoding one copy keeps about one core busy.
    let next = 0;
    const worker = async () => {
      for (let n = next++; n < chosen.length; n = next++) perImage[n] = await copiesOf(n);
    };
    await Promise.all([worker(), worker()]);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
  const distances = perImage.flat();
  // Different-class pairs are taken as distinct X-rays (the false-pair rate). The cap uses every
  // pair of distinct files: same-class images can be closer than different-class ones, and a
  // threshold above many of them would call a whole class one image.
  const differentClass: number[] = [];
  const allPairs: number[] = [];
  for (let i = 0; i < items.length; i++) {
    for (let j = i + 1; j < items.length; j++) {
      if (items[i].sha256 === items[j].sha256) continue;
      const d = signatureDistance(signatures[i], signatures[j]);
      allPairs.push(d);
      if (items[i].label !== items[j].label) differentClass.push(d);
    }
  }
  allPairs.sort((a, b) => a - b);
  const distinctQuantile = allPairs.length
    ? allPairs[Math.floor(0.001 * (allPairs.length - 1))]
    : Infinity;
  const fit = distances.filter((d) => d.image % 2 === 0);
  const held = distances.filter((d) => d.image % 2 === 1);
  const largestCopyDistance = Math.max(...fit.map((d) => d.distance));
  const threshold = Math.min(largestCopyDistance, distinctQuantile);
  const found = (ds: typeof held) => ds.filter((d) => d.distance <= threshold).length;
  return {
    threshold,
    images: chosen.length,
    detection: [
      ...COPY_KINDS.map((kind) => {
        const of = held.filter((d) => d.kind === kind);
        return { kind, found: found(of), copies: of.length };
      }),
      { kind: "all" as const, found: found(held), copies: held.length },
    ],
    falsePairs: {
      pairs: differentClass.length,
      under: differentClass.filter((d) => d <= threshold).length,
    },
    largestCopyDistance,
    distinctQuantile,
  };
}

/** Two images that are the same X-ray. */
export interface NearDuplicatePair {
  a: ImageItem;
  b: ImageItem;
  distance: number;
  /** Byte-identical files (distance 0 by definition). */
  byteIdentical: boolean;
  /** "train-test" when the pair spans both splits (leakage). */
  kind: "train-test" | "within-train" | "within-test";
}

/** Every pair at or under `threshold` (training images first in a cross-split pair). */
export function nearDuplicatePairs(
  items: readonly ImageItem[],
  signatures: readonly ImageSignature[],
  threshold: number,
): NearDuplicatePair[] {
  const pairs: NearDuplicatePair[] = [];
  for (let i = 0; i < items.length; i++) {
    for (let j = i + 1; j < items.length; j++) {
      const byteIdentical = items[i].sha256 === items[j].sha256;
      const distance = byteIdentical ? 0 : signatureDistance(signatures[i], signatures[j]);
      if (distance <= threshold) pairs.push(pairOf(items[i], items[j], distance));
    }
  }
  return sortPairs(pairs);
}

/** Two images as a pair, the training image first in a cross-split one. */
function pairOf(a: ImageItem, b: ImageItem, distance: number): NearDuplicatePair {
  const byteIdentical = a.sha256 === b.sha256;
  if (a.split === "test" && b.split === "train") [a, b] = [b, a];
  const kind = a.split !== b.split
    ? "train-test"
    : a.split === "train"
    ? "within-train"
    : "within-test";
  return { a, b, distance, byteIdentical, kind };
}

/** Cross-split pairs first, then within the test set, then within training; closest first. */
function sortPairs(pairs: NearDuplicatePair[]): NearDuplicatePair[] {
  const order = { "train-test": 0, "within-test": 1, "within-train": 2 };
  return pairs.sort((x, y) =>
    order[x.kind] - order[y.kind] || x.distance - y.distance ||
    x.a.relPath.localeCompare(y.a.relPath) || x.b.relPath.localeCompare(y.b.relPath)
  );
}

/** What a data set holds of near-identical images, and how the finder was calibrated on it. */
export interface NearDuplicateReport {
  method: string;
  calibration: NearDuplicateCalibration;
  pairs: NearDuplicatePair[];
}

export const NEAR_DUPLICATE_METHOD = "rank signature of 32×32 gray cells, searched over crops " +
  "of up to 5 %; threshold from synthetic copies of the data set's own images";

/** Identifies the signature and calibration recipe: a cached calibration of another is redone. */
const RECIPE = "rank32-crop5-v2";

/**
 * Near-identical images of a data set, within and across its splits. The calibration (about half
 * a minute: it writes and decodes some 280 copies) is cached per data set content in the
 * project's cache folder, and so are the pairs of distinct files under its threshold (the
 * signatures took ~3 s of every run at 317 images; a pair's distance depends only on the two
 * files' contents).
 */
export async function findNearDuplicates(
  dataset: Dataset,
  opts: { maxPixels?: number; seed?: number; log?: (line: string) => void } = {},
): Promise<NearDuplicateReport> {
  const items = [...dataset.train, ...dataset.test];
  const fingerprint = createHash("sha256")
    .update(
      [RECIPE, ...items.map((i) => `${i.sha256} ${i.label}`).sort()].join("\n"),
    )
    .digest("hex").slice(0, 32);
  const dir = path.join(projectCacheDir(), "near-duplicates");
  const file = path.join(dir, `${fingerprint}.json`);
  const pairsFile = path.join(dir, `${fingerprint}.pairs.json`);
  const calibration = readJson<NearDuplicateCalibration>(file);
  const known = readJson<KnownPairs>(pairsFile);
  if (calibration && known?.threshold === calibration.threshold) {
    return {
      method: NEAR_DUPLICATE_METHOD,
      calibration,
      pairs: pairsOfKnown(items, known),
    };
  }
  const signatures = await imageSignatures(items, { maxPixels: opts.maxPixels });
  let fitted = calibration;
  if (!fitted) {
    opts.log?.(
      "Calibrating the near-duplicate finder on synthetic copies of the data set's images",
    );
    fitted = await calibrateNearDuplicates(items, signatures, {
      seed: opts.seed,
      maxPixels: opts.maxPixels,
    });
    await writeCached(file, fitted);
  }
  const pairs = nearDuplicatePairs(items, signatures, fitted.threshold);
  await writeCached(
    pairsFile,
    {
      threshold: fitted.threshold,
      pairs: pairs.filter((p) => !p.byteIdentical).map((p) => [p.a.sha256, p.b.sha256, p.distance]),
    } satisfies KnownPairs,
  );
  return { method: NEAR_DUPLICATE_METHOD, calibration: fitted, pairs };
}

/** The pairs of distinct files at or under `threshold`, by content: [sha256, sha256, distance]. */
interface KnownPairs {
  threshold: number;
  pairs: [string, string, number][];
}

/**
 * nearDuplicatePairs' answer from known pairs: byte-identical files pair at 0, distinct ones when
 * they are a known pair (the distance is symmetric, so either order).
 */
function pairsOfKnown(items: readonly ImageItem[], known: KnownPairs): NearDuplicatePair[] {
  const distance = new Map<string, number>();
  for (const [a, b, d] of known.pairs) {
    distance.set(`${a} ${b}`, d);
    distance.set(`${b} ${a}`, d);
  }
  return sortPairs(
    items.flatMap((a, i) =>
      items.slice(i + 1).flatMap((b) => {
        const d = a.sha256 === b.sha256 ? 0 : distance.get(`${a.sha256} ${b.sha256}`);
        return d === undefined ? [] : [pairOf(a, b, d)];
      })
    ),
  );
}

/** A cached JSON file, or undefined when it is missing or unreadable (then it is made again). */
function readJson<T>(file: string): T | undefined {
  try {
    return JSON.parse(fs.readFileSync(file, "utf8"));
  } catch {
    return undefined;
  }
}

async function writeCached(file: string, value: unknown): Promise<void> {
  try {
    await writeJsonAtomic(file, value);
  } catch { /* a read-only cache only costs the work next time */ }
}
