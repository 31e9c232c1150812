import assert from "node:assert/strict";
import * as fs from "node:fs";
import * as path from "node:path";
import { findDuplicates, leakedTestItems, loadDataset } from "../../lib/mod.ts";
import { makeSyntheticDataset } from "../_synthetic.ts";
import { freshDir } from "../_temp.ts";

Deno.test("duplicates: findDuplicates() finds planted copies across and within splits", async () => {
  const dir = freshDir("dataset");
  const root = await makeSyntheticDataset(path.join(dir, "data"), { train: 3, test: 2 });
  const first = (dir: string) => fs.readdirSync(path.join(root, dir)).sort()[0];
  const covid = first("train/Covid"), normal = first("train/Normal");
  fs.copyFileSync(path.join(root, "train/Covid", covid), path.join(root, "test/Covid/leak.png"));
  fs.copyFileSync(
    path.join(root, "train/Normal", normal),
    path.join(root, "train/Normal/copy.png"),
  );
  const ds = await loadDataset(root);
  const groups = findDuplicates([...ds.train, ...ds.test]);
  assert.deepEqual(groups.map((g) => [g.kind, g.items.map((i) => i.relPath)]), [
    ["train-test", ["test/Covid/leak.png", `train/Covid/${covid}`]],
    ["within-train", ["train/Normal/copy.png", `train/Normal/${normal}`]],
  ]);
  assert.deepEqual(leakedTestItems(ds).map((i) => i.relPath), ["test/Covid/leak.png"]);
});
