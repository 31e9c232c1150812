/**
 * Image files in, pixels out (sharp, i.e. libvips): headers, complete decoding, resizing to the
 * model's square. The figures' PNG compositing lives in lib/figures/raster.ts.
 */
import sharp from "sharp";
import { UserError } from "../errors.ts";

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
export class ImageError extends UserError {
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
    // The header only: no pixel limit here (the decode applies --max-pixels with its own message).
    const m = await sharp(file, { limitInputPixels: false }).metadata();
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
export const DECODE_RECIPE = "rgb8-noalpha-fill-linear-v1";

/** The recipe of `decodeResized(…, { grayAt, exifRotate })`, for caches. */
export function decodeRecipe(grayAt?: number, exifRotate = false): string {
  const base = exifRotate ? "rgb8-exif-noalpha-fill-linear-v1" : DECODE_RECIPE;
  return grayAt ? `${base}-gray${grayAt}` : base;
}

/**
 * An image made 1-channel gray at `size`×`size` (8 bits) before anything else: every file then
 * looks stored alike (no colour, no alpha, no 16 bits, one size), so a model cannot tell sources
 * apart by how their files were stored. The review's check of the format confounder.
 */
async function grayAt(image: sharp.Sharp, size: number): Promise<sharp.Sharp> {
  const gray = await image.grayscale().resize(size, size, { fit: "fill", kernel: "linear" })
    .raw({ depth: "uchar" }).toBuffer();
  return sharp(gray, { raw: { width: size, height: size, channels: 1 } });
}

/**
 * Decode an image file completely and resize it to `size`×`size` RGB, 8 bits per channel:
 * gray, 16-bit and alpha inputs made 8-bit RGB (alpha dropped, as PIL's `convert("RGB")` does);
 * stretched to the square without cropping, as torchvision's `Resize((446, 446))` does, with a
 * linear (bilinear, antialiased) kernel like PIL's BILINEAR. An EXIF orientation tag is ignored,
 * as the paper's pipeline (torchvision's ImageFolder: PIL's `Image.open`) ignores it, unless
 * `exifRotate` asks for the image as a viewer shows it.
 *
 * @returns Uint8Array [size, size, 3] row-major.
 */
export async function decodeResized(
  file: string,
  size: number,
  opts: { maxPixels?: number; grayAt?: number; exifRotate?: boolean } = {},
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
    const opened = sharp(file, { failOn: "error", limitInputPixels: maxPixels });
    const image = (opts.exifRotate ? opened.rotate() : opened).removeAlpha();
    const { data, info: out } = await (opts.grayAt ? await grayAt(image, opts.grayAt) : image)
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

/**
 * How a file can be saved again and still be the same X-ray: the copies a near-duplicate finder
 * must catch (resized, re-encoded, cropped by up to 5 %, brightness/contrast changed, another bit
 * depth, gray made colour or colour made gray).
 */
export const COPY_KINDS = [
  "resized",
  "jpeg-reencoded",
  "cropped-5%",
  "cropped-2.5%",
  "brightness-contrast",
  "bit-depth",
  "gray-rgb",
] as const;
export type CopyKind = typeof COPY_KINDS[number];

/**
 * PNG copies are written uncompressed: they are read once and deleted, PNG is lossless at any
 * level, and zlib's default level took 70 % of a first run's near-duplicate calibration.
 */
const PNG_LEVEL = 0;

/** A file as synthetic copies are made from: reduced to at most 1024 px, as stored. */
export interface CopySource {
  data: Buffer;
  width: number;
  height: number;
  channels: number;
  depth?: string;
}

/**
 * Read `file` for {@link writeCopyOf}: at most 1024 px (copies in the wild are often smaller; it
 * also keeps this fast), in its own format, without EXIF rotation (as signatures are computed).
 */
export async function copySource(file: string): Promise<CopySource> {
  const info = await readImageInfo(file);
  const { data, info: reduced } = await sharp(file, { limitInputPixels: false })
    .resize(1024, 1024, { fit: "inside", withoutEnlargement: true })
    .toBuffer({ resolveWithObject: true });
  return {
    data,
    width: reduced.width,
    height: reduced.height,
    channels: info.channels,
    depth: info.depth,
  };
}

/**
 * Write a copy of `source` changed as `kind` says to `out` (without extension; the one written is
 * returned). `random` in [0, 1) places a crop.
 */
export async function writeCopyOf(
  source: CopySource,
  kind: CopyKind,
  out: string,
  random: number,
): Promise<string> {
  const image = sharp(source.data);
  const { width, height } = source;
  switch (kind) {
    case "resized":
      await image.resize(Math.max(32, Math.round(width / 2))).jpeg({ quality: 90 })
        .toFile(`${out}.jpg`);
      return `${out}.jpg`;
    case "jpeg-reencoded":
      await image.jpeg({ quality: 50 }).toFile(`${out}.jpg`);
      return `${out}.jpg`;
    case "cropped-5%":
    case "cropped-2.5%": {
      const fraction = kind === "cropped-5%" ? 0.05 : 0.025;
      const cw = Math.round(width * fraction), ch = Math.round(height * fraction);
      await image.extract({
        left: Math.round(cw * random),
        top: Math.round(ch * ((random * 7) % 1)),
        width: width - cw,
        height: height - ch,
      }).png({ compressionLevel: PNG_LEVEL }).toFile(`${out}.png`);
      return `${out}.png`;
    }
    case "brightness-contrast":
      await image.linear(1.25, -20).jpeg({ quality: 92 }).toFile(`${out}.jpg`);
      return `${out}.jpg`;
    case "bit-depth": {
      // 16-bit images become 8-bit sRGB; 8-bit ones become 16-bit (gray or RGB as stored).
      const changed = source.depth === "ushort"
        ? image.toColourspace("srgb")
        : image.toColourspace(source.channels <= 2 ? "grey16" : "rgb16");
      await changed.png({ compressionLevel: PNG_LEVEL }).toFile(`${out}.png`);
      return `${out}.png`;
    }
    case "gray-rgb":
      await (source.channels <= 2 ? image.toColourspace("srgb") : image.toColourspace("b-w"))
        .png({ compressionLevel: PNG_LEVEL }).toFile(`${out}.png`);
      return `${out}.png`;
  }
}

/**
 * Write a copy of `file` changed as `kind` says to `out` (without extension; the one written is
 * returned). `random` in [0, 1) places a crop. The source is first reduced to at most 1024 px
 * (see {@link copySource}; several copies of one file: read it once with that).
 */
export async function writeSyntheticCopy(
  file: string,
  kind: CopyKind,
  out: string,
  random: number,
): Promise<string> {
  return await writeCopyOf(await copySource(file), kind, out, random);
}

/** The images whose EXIF orientation tag asks for a rotation or flip (tag 2–8), with the tag. */
export async function exifOrientations(
  items: readonly { path: string; relPath: string }[],
): Promise<{ file: string; orientation: number }[]> {
  const tagged: { file: string; orientation: number }[] = [];
  for (const item of items) {
    try {
      const o = (await readImageInfo(item.path)).orientation;
      if (o && o !== 1) tagged.push({ file: item.relPath, orientation: o });
    } catch { /* unreadable files are validation's to report */ }
  }
  return tagged;
}
