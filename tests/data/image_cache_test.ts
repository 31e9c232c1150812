import assert from "node:assert/strict";
import * as fs from "node:fs";
import * as path from "node:path";
import { ImageCache, initBackend, loadDataset } from "../../lib/mod.ts";
import { makeSyntheticDataset } from "../_synthetic.ts";
import { freshDir } from "../_temp.ts";

await initBackend();

Deno.test("image_cache: ImageCache decodes each image once, then serves it from memory and from disk", async () => {
  const dir = freshDir("preprocess");
  const root = await makeSyntheticDataset(path.join(dir, "data"), { train: 2, test: 1 });
  const ds = await loadDataset(root);
  const cacheDir = path.join(dir, "cache");
  const a = new ImageCache({ imageSize: 24, dir: cacheDir });
  const first = await a.get(ds.train[0]);
  await a.get(ds.train[0]);
  assert.deepEqual(a.stats, { decoded: 1, fromDisk: 0, fromMemory: 1, damaged: 0 });
  const b = new ImageCache({ imageSize: 24, dir: cacheDir }); // a new process, say
  assert.deepEqual(await b.get(ds.train[0]), first);
  assert.deepEqual(b.stats, { decoded: 0, fromDisk: 1, fromMemory: 0, damaged: 0 });
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
  assert.deepEqual([d.stats.decoded, d.stats.damaged], [1, 1]);
});

Deno.test("reliability: a cached image damaged but of the right size fails its checksum and is decoded again", async () => {
  const dir = freshDir("cache-damage");
  const root = await makeSyntheticDataset(path.join(dir, "data"), { train: 1, test: 1 });
  const ds = await loadDataset(root);
  const cacheDir = path.join(dir, "cache");
  const a = new ImageCache({ imageSize: 24, dir: cacheDir });
  const first = Uint8Array.from(await a.get(ds.train[0]));
  const file = fs.readdirSync(a.dir, { recursive: true }).map(String).find((f) =>
    f.endsWith(".rgb")
  )!;
  const bytes = fs.readFileSync(path.join(a.dir, file));
  assert.equal(bytes.length, 24 * 24 * 3 + 32, "pixels, then their SHA-256");
  bytes[100] ^= 0xff; // one pixel flipped, size unchanged
  fs.writeFileSync(path.join(a.dir, file), bytes);
  const b = new ImageCache({ imageSize: 24, dir: cacheDir });
  assert.deepEqual(await b.get(ds.train[0]), first, "the damaged pixels are not used");
  assert.deepEqual(b.stats, { decoded: 1, fromDisk: 0, fromMemory: 0, damaged: 1 });
  // The entry was rewritten: the next reader takes it from disk.
  const c = new ImageCache({ imageSize: 24, dir: cacheDir });
  await c.get(ds.train[0]);
  assert.deepEqual(c.stats, { decoded: 0, fromDisk: 1, fromMemory: 0, damaged: 0 });
});
