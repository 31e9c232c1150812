import assert from "node:assert/strict";
import * as fs from "node:fs";
import * as path from "node:path";
import { ImageCache, initBackend, loadDataset } from "../../lib/mod.ts";
import { makeSyntheticDataset } from "../_synthetic.ts";
import { withTemp } from "../_temp.ts";

await initBackend();

Deno.test("image_cache: ImageCache decodes each image once, then serves it from memory and from disk", async () => {
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
