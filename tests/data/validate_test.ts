import assert from "node:assert/strict";
import * as fs from "node:fs";
import * as path from "node:path";
import {
  DatasetError,
  ImageCache,
  loadDataset,
  resolveDataDir,
  validateDataset,
} from "../../lib/mod.ts";
import { makeSyntheticDataset } from "../_synthetic.ts";
import { freshDir } from "../_temp.ts";

const REAL = Deno.env.get("COVID_CXR_DATA");

const tempCache = (dir: string, imageSize = 32) =>
  new ImageCache({ imageSize, dir: path.join(dir, "cache") });

Deno.test("validate: validation lists every bad file with its reason and stops; --skip-bad records and continues", async () => {
  const dir = freshDir("dataset");
  const root = await makeSyntheticDataset(path.join(dir, "data"), { train: 4, test: 2 });
  const good = fs.readFileSync(path.join(root, "train", "Covid", "train-0.jpeg"));
  fs.writeFileSync(
    path.join(root, "train", "Covid", "truncated.jpeg"),
    good.slice(0, good.length / 2),
  );
  fs.writeFileSync(path.join(root, "train", "Normal", "text.png"), "this is not a PNG");
  fs.writeFileSync(path.join(root, "test", "Normal", "notes.txt"), "a note");
  const ds = await loadDataset(root);
  await assert.rejects(() => validateDataset(ds, tempCache(dir)), (e: Error) => {
    assert.ok(e instanceof DatasetError);
    assert.match(e.message, /3 bad file\(s\)/);
    assert.match(e.message, /train\/Covid\/truncated\.jpeg: Cannot decode .* completely/);
    assert.match(e.message, /train\/Normal\/text\.png: Cannot decode .*not a readable image/);
    assert.match(e.message, /test\/Normal\/notes\.txt: not an image file \(extension "\.txt"\)/);
    assert.match(e.message, /--skip-bad/);
    return true;
  });
  const { dataset, report } = await validateDataset(ds, tempCache(dir), { skipBad: true });
  assert.equal(report.skipped.length, 3);
  assert.equal(dataset.train.length, 12);
  assert.ok(!dataset.train.some((i) => i.relPath.endsWith("truncated.jpeg")));
  assert.equal(report.checked, 12 + 6);
});

Deno.test("validate: SHA256SUMS is checked; a changed file is reported as bad", async () => {
  const dir = freshDir("dataset");
  const root = await makeSyntheticDataset(path.join(dir, "data"), { train: 2, test: 1 });
  const ds = await loadDataset(root);
  const lines = [...ds.train, ...ds.test].map((i) => `${i.sha256}  ${i.relPath}`);
  fs.writeFileSync(path.join(root, "SHA256SUMS"), lines.join("\n") + "\n");
  const ok = await validateDataset(ds, tempCache(dir));
  assert.deepEqual(ok.report.checksums, {
    verified: 9,
    mismatched: [],
    missing: [],
    unlisted: [],
  });
  // Change one file's bytes: its hash no longer matches.
  const victim = ds.train[0];
  fs.appendFileSync(victim.path, new Uint8Array([0]));
  await assert.rejects(
    async () => validateDataset(await loadDataset(root), tempCache(dir)),
    new RegExp(`${victim.relPath.replaceAll("/", "\\/")}: SHA-256 differs from SHA256SUMS`),
  );
});

Deno.test({
  name: "validate: every image of the paper's data decodes and matches SHA256SUMS",
  ignore: !REAL,
  fn: async () => {
    const ds = await loadDataset(resolveDataDir(REAL));
    const { report } = await validateDataset(ds, new ImageCache({ imageSize: 128 }));
    assert.deepEqual(report.bad, []);
    assert.equal(report.checked, 317);
    assert.equal(report.checksums?.verified, 317);
  },
});
