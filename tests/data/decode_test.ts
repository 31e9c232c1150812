import assert from "node:assert/strict";
import * as path from "node:path";
import { decodeResized, ImageError, initBackend } from "../../lib/mod.ts";
import { FORMATS, halves, pixelAt, writeImage } from "../_synthetic.ts";
import { freshDir } from "../_temp.ts";

await initBackend();

Deno.test("decode: decodeResized() makes 8-bit RGB of every stored format, stretched to a square", async () => {
  const dir = freshDir("preprocess");
  const src = halves(40, 20, [250, 250, 250], [10, 10, 10]);
  for (const format of FORMATS) {
    const file = path.join(dir, `img-${format}.${format.startsWith("jpeg") ? "jpg" : "png"}`);
    await writeImage(file, src, 40, 20, format);
    const px = await decodeResized(file, 16);
    assert.equal(px.length, 16 * 16 * 3, format);
    // No crop: the left quarter is still bright, the right quarter dark (within JPEG error).
    const [l, r] = [pixelAt(px, 16, 2, 8), pixelAt(px, 16, 13, 8)];
    assert.ok(l.every((v) => v > 235), `${format} left ${l}`);
    assert.ok(r.every((v) => v < 25), `${format} right ${r}`);
  }
});

Deno.test("reliability: decodeResized() ignores an EXIF orientation tag as the paper's pipeline (PIL) does, and applies it when asked", async () => {
  const dir = freshDir("preprocess");
  // Stored: top half white, bottom half black. Orientation 6 means "rotate 90° clockwise to show",
  // so the shown image has white on the right.
  const w = 32, h = 32;
  const px = new Uint8Array(w * h * 3);
  for (let y = 0; y < h / 2; y++) px.fill(255, y * w * 3, (y + 1) * w * 3);
  const file = path.join(dir, "rotated.jpg");
  await writeImage(file, px, w, h, "jpeg-rgb", { orientation: 6 });
  const asStored = await decodeResized(file, 32);
  assert.ok(pixelAt(asStored, 32, 16, 3)[0] > 200, "as stored: top white");
  assert.ok(pixelAt(asStored, 32, 16, 28)[0] < 50, "as stored: bottom black");
  const out = await decodeResized(file, 32, { exifRotate: true });
  assert.ok(pixelAt(out, 32, 28, 16)[0] > 200, "rotated: right side white");
  assert.ok(pixelAt(out, 32, 3, 16)[0] < 50, "rotated: left side black");
});

Deno.test("decode: the decompression-bomb guard refuses oversized images with the file and the fix", async () => {
  const dir = freshDir("preprocess");
  const file = path.join(dir, "big.png");
  await writeImage(file, new Uint8Array(300 * 200 * 3), 300, 200, "png-rgb");
  await assert.rejects(() => decodeResized(file, 16, { maxPixels: 50_000 }), (e: Error) => {
    assert.ok(e instanceof ImageError);
    assert.match(e.message, /big\.png": 300×200 = 60000 pixels exceeds the limit of 50000/);
    assert.match(e.message, /--max-pixels/);
    return true;
  });
});
