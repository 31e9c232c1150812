/** Per-image facts for the data-set statistics: how files are stored, sizes, gray content. */
import * as fs from "node:fs";
import type { ImageItem } from "./image_folder.ts";
import type { ImageCache } from "./image_cache.ts";
import { type ImageInfo, readImageInfo } from "./decode.ts";
import { type Cell, type Table, table } from "../tables.ts";

/** Per-image facts for the data-set statistics (header + decoded pixels). */
export interface ImageStats {
  relPath: string;
  split: "train" | "test";
  className: string;
  label: number;
  /** File format ("jpeg", "png", …). */
  format: string;
  width: number;
  height: number;
  /** width / height. */
  aspect: number;
  /** Bands as stored: 1 gray, 2 gray+alpha, 3 RGB, 4 RGBA. */
  channels: number;
  /** "JPEG RGB", "JPEG gray", "PNG RGBA", "PNG gray 16-bit", … */
  mode: string;
  /** True when the decoded image has no colour (R = G = B within 2 levels everywhere). */
  grayContent: boolean;
  /** Mean pixel value (0..255) of the resized image. */
  meanIntensity: number;
  fileBytes: number;
}

/** How an image is stored, in words. */
export function storageMode(info: ImageInfo): string {
  const kind = info.channels === 1
    ? "gray"
    : info.channels === 2
    ? "gray+alpha"
    : info.channels === 4
    ? "RGBA"
    : "RGB";
  return `${info.format.toUpperCase()} ${kind}${info.depth === "ushort" ? " 16-bit" : ""}`;
}

/** True when every pixel has R, G and B within `tolerance` levels of each other. */
export function isGrayContent(pixels: Uint8Array, tolerance = 2): boolean {
  for (let i = 0; i < pixels.length; i += 3) {
    const r = pixels[i], g = pixels[i + 1], b = pixels[i + 2];
    if (Math.abs(r - g) > tolerance || Math.abs(g - b) > tolerance) return false;
  }
  return true;
}

/** Header facts and a few pixel statistics of every image (pixels come from the cache). */
export async function describeImages(
  items: readonly ImageItem[],
  cache: ImageCache,
): Promise<ImageStats[]> {
  const rows: ImageStats[] = [];
  for (const item of items) {
    const info = await readImageInfo(item.path);
    const pixels = await cache.get(item);
    let sum = 0;
    for (let i = 0; i < pixels.length; i++) sum += pixels[i];
    rows.push({
      relPath: item.relPath,
      split: item.split,
      className: item.className,
      label: item.label,
      format: info.format,
      width: info.width,
      height: info.height,
      aspect: info.width / info.height,
      channels: info.channels,
      mode: storageMode(info),
      grayContent: isGrayContent(pixels),
      meanIntensity: sum / pixels.length,
      fileBytes: fs.statSync(item.path).size,
    });
  }
  return rows;
}

/** Storage modes per class with how many images are gray in content, as a table. */
export function summarizeStorage(stats: readonly ImageStats[]): Table {
  const classes = [...new Set(stats.map((s) => s.className))];
  const modes = [...new Set(stats.map((s) => s.mode))].sort();
  const rows: Record<string, Cell>[] = modes.map((mode) => ({
    "stored as": mode,
    ...Object.fromEntries(
      classes.map((c) => [c, stats.filter((s) => s.mode === mode && s.className === c).length]),
    ),
    total: stats.filter((s) => s.mode === mode).length,
  }));
  rows.push({
    "stored as": "gray content (R = G = B)",
    ...Object.fromEntries(
      classes.map((c) => [c, stats.filter((s) => s.grayContent && s.className === c).length]),
    ),
    total: stats.filter((s) => s.grayContent).length,
  });
  return table(rows, { title: `${stats.length} images` });
}
