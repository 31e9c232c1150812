import assert from "node:assert/strict";
import * as fs from "node:fs";
import * as path from "node:path";
import { initBackend, tf } from "../lib/backend.ts";
import { decodeResized, ImageError } from "../lib/images.ts";
import { ImageCache } from "../lib/image_cache.ts";
import { withTemp } from "./_temp.ts";
import { loadDataset } from "../lib/dataset.ts";
import {
  applyAugmentation,
  type AugmentationParams,
  normalize,
  sampleAugmentation,
} from "../lib/preprocess.ts";
import { iterateBatches } from "../lib/batches.ts";
import { KERAS_NORMALIZATION, TORCHVISION_IMAGENET_NORMALIZATION } from "../lib/weights.ts";
import { PAPER_CONFIG } from "../lib/config.ts";
import { Rng } from "../lib/rng.ts";
import { FORMATS, makeSyntheticDataset, writeImage } from "./_synthetic.ts";

await initBackend();

/** A w×h image whose left half is `left` and right half `right` (RGB triples). */
function halves(w: number, h: number, left: number[], right: number[]): Uint8Array {
  const px = new Uint8Array(w * h * 3);
  for (let y = 0; y < h; y++) {
    for (let x = 0; x < w; x++) px.set(x < w / 2 ? left : right, (y * w + x) * 3);
  }
  return px;
}

const at = (
  px: Uint8Array | Float32Array,
  size: number,
  x: number,
  y: number,
) => [...px.slice((y * size + x) * 3, (y * size + x) * 3 + 3)];

Deno.test("preprocess: decodeResized() makes 8-bit RGB of every stored format, stretched to a square", async () => {
  await withTemp("preprocess-", async (dir) => {
    const src = halves(40, 20, [250, 250, 250], [10, 10, 10]);
    for (const format of FORMATS) {
      const file = path.join(dir, `img-${format}.${format.startsWith("jpeg") ? "jpg" : "png"}`);
      await writeImage(file, src, 40, 20, format);
      const px = await decodeResized(file, 16);
      assert.equal(px.length, 16 * 16 * 3, format);
      // No crop: the left quarter is still bright, the right quarter dark (within JPEG error).
      const [l, r] = [at(px, 16, 2, 8), at(px, 16, 13, 8)];
      assert.ok(l.every((v) => v > 235), `${format} left ${l}`);
      assert.ok(r.every((v) => v < 25), `${format} right ${r}`);
    }
  });
});

Deno.test("preprocess: decodeResized() honours EXIF orientation", async () => {
  await withTemp("preprocess-", async (dir) => {
    // Stored: top half white, bottom half black. Orientation 6 means "rotate 90° clockwise to show",
    // so the shown image has white on the right.
    const w = 32, h = 32;
    const px = new Uint8Array(w * h * 3);
    for (let y = 0; y < h / 2; y++) px.fill(255, y * w * 3, (y + 1) * w * 3);
    const file = path.join(dir, "rotated.jpg");
    await writeImage(file, px, w, h, "jpeg-rgb", { orientation: 6 });
    const out = await decodeResized(file, 32);
    assert.ok(at(out, 32, 28, 16)[0] > 200, "right side white");
    assert.ok(at(out, 32, 3, 16)[0] < 50, "left side black");
  });
});

Deno.test("preprocess: the decompression-bomb guard refuses oversized images with the file and the fix", async () => {
  await withTemp("preprocess-", async (dir) => {
    const file = path.join(dir, "big.png");
    await writeImage(file, new Uint8Array(300 * 200 * 3), 300, 200, "png-rgb");
    await assert.rejects(() => decodeResized(file, 16, { maxPixels: 50_000 }), (e: Error) => {
      assert.ok(e instanceof ImageError);
      assert.match(e.message, /big\.png": 300×200 = 60000 pixels exceeds the limit of 50000/);
      assert.match(e.message, /--max-pixels/);
      return true;
    });
  });
});

Deno.test("preprocess: ImageCache decodes each image once, then serves it from memory and from disk", async () => {
  await withTemp("preprocess-", async (dir) => {
    const root = await makeSyntheticDataset(path.join(dir, "data"), { train: 2, test: 1 });
    const ds = await loadDataset(root);
    const cacheDir = path.join(dir, "cache");
    const a = new ImageCache({ imageSize: 24, dir: cacheDir });
    const first = await a.get(ds.train[0]);
    await a.get(ds.train[0]);
    assert.deepEqual(a.stats, { decoded: 1, fromDisk: 0, fromMemory: 1 });
    const b = new ImageCache({ imageSize: 24, dir: cacheDir }); // a new process, say
    assert.deepEqual(await b.get(ds.train[0]), first);
    assert.deepEqual(b.stats, { decoded: 0, fromDisk: 1, fromMemory: 0 });
    // Keyed by content: another size is another entry; a damaged cache file is decoded again.
    const c = new ImageCache({ imageSize: 20, dir: cacheDir });
    await c.get(ds.train[0]);
    assert.equal(c.stats.decoded, 1);
    const cached = fs.readdirSync(b.dir, { recursive: true }).map(String).find((f) =>
      f.endsWith(".rgb")
    )!;
    fs.truncateSync(path.join(b.dir, cached), 10);
    const d = new ImageCache({ imageSize: 24, dir: cacheDir });
    assert.deepEqual(await d.get(ds.train[0]), first);
    assert.equal(d.stats.decoded, 1);
  });
});

Deno.test("preprocess: augmentation is reproducible from the seed and differs between seeds", () => {
  const px = halves(16, 16, [200, 120, 90], [20, 60, 40]);
  const draw = (seed: number) => {
    const rng = Rng.stream(seed, "augment", 1);
    return [0, 1, 2].map(() =>
      applyAugmentation(px, 16, sampleAugmentation(rng, PAPER_CONFIG.augmentation))
    );
  };
  assert.deepEqual(draw(7), draw(7));
  assert.notDeepEqual(draw(7), draw(8));
  const rng = Rng.stream(1, "x");
  const flips = Array.from(
    { length: 2000 },
    () => sampleAugmentation(rng, PAPER_CONFIG.augmentation).flip,
  );
  const rate = flips.filter(Boolean).length / flips.length;
  assert.ok(Math.abs(rate - 0.5) < 0.05, `flip rate ${rate}`);
});

Deno.test("preprocess: flip mirrors; brightness, contrast, saturation, hue follow torchvision's formulas", () => {
  const only = (
    step: AugmentationParams["order"][0],
    f: number,
    flip = false,
  ): AugmentationParams => ({
    flip,
    order: [step],
    factors: { [step]: f },
  });
  // 2×1 image: pixel A (100,100,100), pixel B (200,200,200).
  const grays = new Uint8Array([100, 100, 100, 200, 200, 200]);
  assert.deepEqual([...applyAugmentation(grays, 1, { flip: false, order: [], factors: {} })], [
    100,
    100,
    100,
    200,
    200,
    200,
  ]);
  const flipped = applyAugmentation(halves(4, 4, [255, 0, 0], [0, 0, 255]), 4, {
    flip: true,
    order: [],
    factors: {},
  });
  assert.deepEqual(at(flipped, 4, 0, 0), [0, 0, 255]);
  assert.deepEqual(at(flipped, 4, 3, 3), [255, 0, 0]);
  // Brightness 1.5: multiply, clamp at 255.
  const sq = new Uint8Array([100, 100, 100, 200, 200, 200, 100, 100, 100, 200, 200, 200]); // 2×2
  assert.deepEqual([...applyAugmentation(sq, 2, only("brightness", 1.5))].slice(0, 6), [
    150,
    150,
    150,
    255,
    255,
    255,
  ]);
  // Contrast 0.5: blend with the image's mean gray (150).
  assert.deepEqual([...applyAugmentation(sq, 2, only("contrast", 0.5))].slice(0, 6), [
    125,
    125,
    125,
    175,
    175,
    175,
  ]);
  // Saturation 0 on pure red: its gray level 0.299 · 255 in every channel.
  const red = new Uint8Array([255, 0, 0]);
  const desat = applyAugmentation(red, 1, only("saturation", 0));
  for (const v of desat) assert.ok(Math.abs(v - 0.299 * 255) < 1e-3);
  // Hue +1/3 turns red into green; +1/2 into cyan.
  assert.deepEqual([...applyAugmentation(red, 1, only("hue", 1 / 3))].map(Math.round), [0, 255, 0]);
  assert.deepEqual([...applyAugmentation(red, 1, only("hue", 0.5))].map(Math.round), [0, 255, 255]);
  // A gray image does not change under saturation or hue: they do nothing to a gray X-ray.
  assert.deepEqual([...applyAugmentation(sq, 2, only("saturation", 1.7))], [...sq]);
  assert.deepEqual([...applyAugmentation(sq, 2, only("hue", 0.2))], [...sq]);
});

Deno.test("preprocess: normalize() maps 0..255 to Keras's [-1, 1] and to ImageNet mean/std", async () => {
  const x = tf.tensor4d([0, 127.5, 255, 255, 0, 51], [1, 1, 2, 3]);
  const keras = normalize(x, KERAS_NORMALIZATION);
  const expected = [0, 127.5, 255, 255, 0, 51].map((v) => v / 127.5 - 1);
  (await keras.data()).forEach((v, i) => assert.ok(Math.abs(v - expected[i]) < 1e-6));
  const imagenet = normalize(x, TORCHVISION_IMAGENET_NORMALIZATION);
  const { mean, std } = TORCHVISION_IMAGENET_NORMALIZATION;
  (await imagenet.data()).forEach((v, i) => {
    const c = i % 3;
    assert.ok(Math.abs(v - ([0, 127.5, 255, 255, 0, 51][i] / 255 - mean[c]) / std[c]) < 1e-5);
  });
  tf.dispose([x, keras, imagenet]);
});

Deno.test("preprocess: iterateBatches() yields [B,S,S,3] float32 + labels, every item once, and leaks no tensor", async () => {
  await withTemp("preprocess-", async (dir) => {
    const root = await makeSyntheticDataset(path.join(dir, "data"), { train: 5, test: 1 });
    const ds = await loadDataset(root);
    const cache = new ImageCache({ imageSize: 16, dir: path.join(dir, "cache") });
    const before = tf.memory().numTensors;
    const seen: string[] = [];
    const shapes: number[][] = [];
    for await (
      const batch of iterateBatches(ds.train, {
        batchSize: 4,
        cache,
        shuffle: Rng.stream(1, "shuffle"),
        augment: { rng: Rng.stream(1, "augment"), options: PAPER_CONFIG.augmentation },
      })
    ) {
      shapes.push(batch.x.shape);
      assert.equal(batch.x.dtype, "float32");
      assert.equal(batch.labels.dtype, "int32");
      assert.deepEqual([...await batch.labels.data()], batch.items.map((i) => i.label));
      const [min, max] = [batch.x.min(), batch.x.max()];
      assert.ok((await min.data())[0] >= 0 && (await max.data())[0] <= 255);
      seen.push(...batch.items.map((i) => i.path));
      tf.dispose([batch.x, batch.labels, min, max]);
    }
    assert.deepEqual(shapes.map((s) => s[0]), [4, 4, 4, 3]);
    assert.deepEqual(shapes[0].slice(1), [16, 16, 3]);
    assert.deepEqual([...seen].sort(), ds.train.map((i) => i.path).sort());
    // Stopping early leaves nothing behind either.
    for await (const batch of iterateBatches(ds.train, { batchSize: 4, cache })) {
      tf.dispose([batch.x, batch.labels]);
      break;
    }
    assert.equal(tf.memory().numTensors, before);
  });
});
