/**
 * The only place sharp (libvips) is used: image files in, pixels out; pixels and SVG in, PNG out.
 */
import { escapeMarkup } from "./encoding.ts";
import sharp from "sharp";
import { Buffer } from "node:buffer";

/** Header facts of an image file (no pixel decoding). */
export interface ImageInfo {
  format: string;
  width: number;
  height: number;
  /** Bands as stored: 1 gray, 2 gray+alpha, 3 RGB, 4 RGBA. */
  channels: number;
  /** Colour space as libvips names it: "srgb", "b-w", "grey16", "rgb16", … */
  space: string;
  /** Sample depth: "uchar" (8-bit) or "ushort" (16-bit). */
  depth: string;
  hasAlpha: boolean;
  /** EXIF orientation (1..8) when present. */
  orientation?: number;
}

/** An image problem naming the file and the fix. */
export class ImageError extends Error {
  override name = "ImageError";
  constructor(readonly file: string, message: string) {
    super(message);
  }
}

/** Decompression-bomb guard: images above this many pixels are refused (largest in the data: 17 M). */
export const DEFAULT_MAX_PIXELS = 50_000_000;

/** Read an image's header. */
export async function readImageInfo(file: string): Promise<ImageInfo> {
  try {
    const m = await sharp(file).metadata();
    return {
      format: m.format ?? "unknown",
      width: m.width ?? 0,
      height: m.height ?? 0,
      channels: m.channels ?? 0,
      space: m.space ?? "unknown",
      depth: m.depth ?? "unknown",
      hasAlpha: m.hasAlpha ?? false,
      ...(m.orientation ? { orientation: m.orientation } : {}),
    };
  } catch (error) {
    throw new ImageError(file, `Cannot read image "${file}": ${(error as Error).message}`);
  }
}

/** Identifies the decode recipe below; cached pixels from another recipe are not reused. */
export const DECODE_RECIPE = "rgb8-exif-noalpha-fill-linear-v1";

/**
 * Decode an image file completely and resize it to `size`×`size` RGB, 8 bits per channel:
 * EXIF orientation applied; gray, 16-bit and alpha inputs made 8-bit RGB (alpha dropped, as PIL's
 * `convert("RGB")` does); stretched to the square without cropping, as torchvision's
 * `Resize((446, 446))` does, with a linear (bilinear, antialiased) kernel like PIL's BILINEAR.
 *
 * @returns Uint8Array [size, size, 3] row-major.
 */
export async function decodeResized(
  file: string,
  size: number,
  opts: { maxPixels?: number } = {},
): Promise<Uint8Array> {
  const maxPixels = opts.maxPixels ?? DEFAULT_MAX_PIXELS;
  let info: ImageInfo;
  try {
    info = await readImageInfo(file);
  } catch (error) {
    throw new ImageError(
      file,
      `Cannot decode "${file}": not a readable image (${
        (error as ImageError).message.split(": ").at(-1)
      })`,
    );
  }
  if (info.width * info.height > maxPixels) {
    throw new ImageError(
      file,
      `Refusing to decode "${file}": ${info.width}×${info.height} = ${info.width * info.height} ` +
        `pixels exceeds the limit of ${maxPixels} (decompression-bomb guard). If the image is ` +
        "genuine, raise the limit with --max-pixels.",
    );
  }
  try {
    const { data, info: out } = await sharp(file, { failOn: "error", limitInputPixels: maxPixels })
      .rotate()
      .removeAlpha()
      .toColourspace("srgb")
      .resize(size, size, { fit: "fill", kernel: "linear" })
      .raw({ depth: "uchar" })
      .toBuffer({ resolveWithObject: true });
    if (out.channels !== 3 || data.length !== size * size * 3) {
      throw new Error(`decoded to ${out.width}×${out.height}×${out.channels}`);
    }
    return new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
  } catch (error) {
    throw new ImageError(
      file,
      `Cannot decode "${file}" completely: ${
        (error as Error).message
      } (truncated or corrupt file?)`,
    );
  }
}

/** Encode RGB (3 channels) or gray (1 channel) pixels as PNG. */
export async function encodePng(
  pixels: Uint8Array,
  width: number,
  height: number,
  channels: 1 | 3 = 3,
): Promise<Uint8Array> {
  const png = await sharp(pixels, { raw: { width, height, channels } }).png().toBuffer();
  return new Uint8Array(png.buffer, png.byteOffset, png.byteLength);
}

/** Rasterise an SVG document to PNG (fonts from the system's fontconfig). */
export async function svgToPng(svg: string, opts: { density?: number } = {}): Promise<Uint8Array> {
  const png = await sharp(Buffer.from(svg), { density: opts.density ?? 144 }).png().toBuffer();
  return new Uint8Array(png.buffer, png.byteOffset, png.byteLength);
}

/** A tile of a grid: RGB pixels and a caption under it. */
export interface Tile {
  pixels: Uint8Array;
  size: number;
  caption: string;
  /** Caption colour (CSS). */
  color?: string;
}

/**
 * Composite square tiles into a grid with a caption under each and an optional title per row:
 * one PNG.
 */
export async function composeGrid(
  rows: { title?: string; tiles: Tile[] }[],
  opts: { tileSize?: number; gap?: number; captionHeight?: number; titleWidth?: number } = {},
): Promise<Uint8Array> {
  const tile = opts.tileSize ?? 160;
  const gap = opts.gap ?? 6;
  const captionHeight = opts.captionHeight ?? 30;
  const hasTitles = rows.some((r) => r.title);
  const titleWidth = hasTitles ? opts.titleWidth ?? 130 : 0;
  const columns = Math.max(...rows.map((r) => r.tiles.length));
  const width = titleWidth + columns * (tile + gap) + gap;
  const height = rows.length * (tile + captionHeight + gap) + gap;
  const composites: sharp.OverlayOptions[] = [];
  const texts: string[] = [];
  for (const [r, row] of rows.entries()) {
    const top = gap + r * (tile + captionHeight + gap);
    if (row.title) {
      texts.push(
        `<text x="${titleWidth - 8}" y="${top + tile / 2}" text-anchor="end" font-size="15" ` +
          `font-weight="bold">${escapeMarkup(row.title)}</text>`,
      );
    }
    for (const [c, t] of row.tiles.entries()) {
      const left = titleWidth + gap + c * (tile + gap);
      const input = await sharp(t.pixels, { raw: { width: t.size, height: t.size, channels: 3 } })
        .resize(tile, tile, { fit: "fill" })
        .png()
        .toBuffer();
      composites.push({ input, left, top });
      const lines = t.caption.split("\n").slice(0, 2);
      lines.forEach((line, i) => {
        texts.push(
          `<text x="${left + tile / 2}" y="${top + tile + 13 + 13 * i}" text-anchor="middle" ` +
            `font-size="11" fill="${t.color ?? "#222"}">${escapeMarkup(line)}</text>`,
        );
      });
    }
  }
  const svg = `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" ` +
    `font-family="DejaVu Sans, sans-serif">${texts.join("")}</svg>`;
  composites.push({ input: Buffer.from(svg), left: 0, top: 0 });
  const png = await sharp({
    create: { width, height, channels: 3, background: { r: 255, g: 255, b: 255 } },
  }).composite(composites).png().toBuffer();
  return new Uint8Array(png.buffer, png.byteOffset, png.byteLength);
}
