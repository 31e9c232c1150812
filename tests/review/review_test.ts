import assert from "node:assert/strict";
import * as path from "node:path";
import {
  describeImages,
  ImageCache,
  initBackend,
  loadDataset,
  metadataBaseline,
  Rng,
} from "../../lib/mod.ts";
import { classPattern, SYNTHETIC_CLASSES, writeImage } from "../_synthetic.ts";
import { freshDir } from "../_temp.ts";

await initBackend();

Deno.test("review: a classifier on image metadata finds a planted size shortcut", async () => {
  const WORK = freshDir("test");
  // Classes differ only in image width (and the content is pure noise): metadata suffices.
  const root = path.join(WORK, "shortcut");
  const rng = Rng.stream(2, "shortcut");
  for (const [split, n] of [["train", 10], ["test", 5]] as const) {
    for (const [label, c] of SYNTHETIC_CLASSES.entries()) {
      for (let i = 0; i < n; i++) {
        const w = 40 + 30 * label + rng.int(8), h = 48;
        const noise = classPattern(rng.int(3), w, h, rng); // pattern unrelated to the class
        await writeImage(path.join(root, split, c, `${i}.png`), noise, w, h, "png-rgb");
      }
    }
  }
  const ds = await loadDataset(root);
  const cache = new ImageCache({ imageSize: 32, dir: path.join(WORK, "shortcut-cache") });
  const stats = await describeImages([...ds.train, ...ds.test], cache);
  const baseline = await metadataBaseline(ds.train, ds.test, stats, 3);
  assert.equal(baseline.all.accuracy, 1, `metadata classifier: ${baseline.all.accuracy}`);
  const best = baseline.single.reduce((a, b) => (b.metrics.accuracy > a.metrics.accuracy ? b : a));
  assert.ok(["width", "aspect ratio"].includes(best.feature), best.feature);
});
