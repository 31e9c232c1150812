import assert from "node:assert/strict";
import * as path from "node:path";
import { loadDataset, splitTrainValidation } from "../../lib/mod.ts";
import { makeSyntheticDataset } from "../_synthetic.ts";
import { freshDir } from "../_temp.ts";

Deno.test("split: splitTrainValidation() holds out floor(f·n), seeded, disjoint; stratified per class", async () => {
  const dir = freshDir("dataset");
  const root = await makeSyntheticDataset(path.join(dir, "data"), { train: 10, test: 1 });
  const ds = await loadDataset(root);
  const a = splitTrainValidation(ds.train, { validationFraction: 0.14, seed: 3 });
  assert.equal(a.validation.length, Math.floor(0.14 * 30));
  assert.equal(a.train.length + a.validation.length, 30);
  const ids = new Set([...a.train, ...a.validation].map((i) => i.path));
  assert.equal(ids.size, 30, "disjoint and complete");
  const b = splitTrainValidation(ds.train, { validationFraction: 0.14, seed: 3 });
  assert.deepEqual(b.validation.map((i) => i.path), a.validation.map((i) => i.path));
  const c = splitTrainValidation(ds.train, { validationFraction: 0.14, seed: 4 });
  assert.notDeepEqual(c.validation.map((i) => i.path), a.validation.map((i) => i.path));
  const s = splitTrainValidation(ds.train, { validationFraction: 0.3, seed: 3, stratify: true });
  assert.deepEqual([0, 1, 2].map((l) => s.validation.filter((i) => i.label === l).length), [
    3,
    3,
    3,
  ]);
  assert.throws(
    () => splitTrainValidation(ds.train, { validationFraction: 1.2, seed: 1 }),
    /validationFraction/,
  );
});
