/** Pixels and SVG in, PNG out (sharp): image grids with captions, and charts rasterised. */
import sharp from "sharp";
import { Buffer } from "node:buffer";
import { escapeMarkup } from "../encoding.ts";

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
