import assert from "node:assert/strict";
import * as path from "node:path";
import {
  applyAugmentation,
  type AugmentationParams,
  type BatchAugmenter,
  ImageCache,
  initBackend,
  type InputMask,
  iterateBatches,
  loadDataset,
  PAPER_CONFIG,
  Rng,
  sampleAugmentation,
  tf,
} from "../../lib/mod.ts";
import { makeSyntheticDataset } from "../_synthetic.ts";
import { freshDir } from "../_temp.ts";

await initBackend();

Deno.test("batches: iterateBatches() yields [B,S,S,3] float32 + labels, every item once, and leaks no tensor", async () => {
  const dir = freshDir("preprocess");
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

Deno.test("batches: a batch augmenter given is used for every batch, with the parameters the seed draws, and gives the same batches", async () => {
  const dir = freshDir("augmenter");
  const root = await makeSyntheticDataset(path.join(dir, "data"), { train: 3, test: 1 });
  const ds = await loadDataset(root);
  const cache = new ImageCache({ imageSize: 16, dir: path.join(dir, "cache") });
  const options = {
    flipProbability: 0.5,
    brightness: 0.5,
    contrast: 0.5,
    saturation: 0.5,
    hue: 0.1,
  };
  const collect = async (apply?: BatchAugmenter, mask: InputMask = "none") => {
    const out: number[][] = [];
    for await (
      const batch of iterateBatches(ds.train, {
        batchSize: 4,
        cache,
        shuffle: Rng.stream(1, "shuffle"),
        augment: { rng: Rng.stream(1, "augment"), options, apply },
        mask,
      })
    ) {
      out.push([...await batch.x.data()]);
      tf.dispose([batch.x, batch.labels]);
    }
    return out;
  };
  // JavaScript's augmentation, called a batch at once, recording what it was given.
  const drawn: AugmentationParams[] = [];
  let calls = 0;
  const js: BatchAugmenter = (pixels, size, params) => {
    calls++;
    drawn.push(...params);
    const n = size * size * 3;
    const out = new Float32Array(pixels.length * n);
    pixels.forEach((p, k) => out.set(applyAugmentation(p, size, params[k]), k * n));
    return out;
  };
  const viaAugmenter = await collect(js);
  assert.equal(calls, Math.ceil(ds.train.length / 4), "one call per batch");
  const replay = Rng.stream(1, "augment");
  assert.deepEqual(drawn, drawn.map(() => sampleAugmentation(replay, options)));
  assert.deepEqual(viaAugmenter, await collect());
  // A mask applies to what an augmenter returns as to the images augmented one by one.
  const masked = await collect(js, "border-only");
  assert.deepEqual(masked, await collect(undefined, "border-only"));
  assert.notDeepEqual(masked, viaAugmenter, "the mask blanked something");
});
