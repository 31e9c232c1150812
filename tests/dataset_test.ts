import assert from "node:assert/strict";
import * as fs from "node:fs";
import * as path from "node:path";
import {
  countByClass,
  DatasetError,
  findDuplicates,
  leakedTestItems,
  loadDataset,
  resolveDataDir,
  sha256File,
  splitTrainValidation,
  validateDataset,
} from "../lib/dataset.ts";
import { ImageCache } from "../lib/image_cache.ts";
import { withTemp } from "./_temp.ts";
import { projectPath } from "../lib/paths.ts";
import { makeSyntheticDataset, SYNTHETIC_CLASSES } from "./_synthetic.ts";

const REAL = Deno.env.get("COVID_CXR_DATA");

const tempCache = (dir: string, imageSize = 32) =>
  new ImageCache({ imageSize, dir: path.join(dir, "cache") });

Deno.test("dataset: loadDataset() scans train/ and test/, classes sorted, every item labelled and hashed", async () => {
  await withTemp("dataset-", async (dir) => {
    const root = await makeSyntheticDataset(path.join(dir, "data"), { train: 5, test: 2 });
    const ds = await loadDataset(root);
    assert.deepEqual(ds.classNames, SYNTHETIC_CLASSES);
    assert.deepEqual(countByClass(ds).map((c) => [c.train, c.test]), [[5, 2], [5, 2], [5, 2]]);
    for (const item of [...ds.train, ...ds.test]) {
      assert.equal(item.className, ds.classNames[item.label]);
      assert.equal(item.relPath, path.relative(root, item.path));
      assert.equal(item.sha256, await sha256File(item.path));
    }
    assert.deepEqual(ds.problems, []);
  });
});

Deno.test("dataset: resolveDataDir() takes the flag over COVID_CXR_DATA and explains a missing data set", async () => {
  await withTemp("dataset-", async (dir) => {
    const root = await makeSyntheticDataset(path.join(dir, "data"), { train: 1, test: 1 });
    const saved = Deno.env.get("COVID_CXR_DATA");
    try {
      Deno.env.set("COVID_CXR_DATA", path.join(dir, "elsewhere"));
      assert.equal(resolveDataDir(root), root);
      assert.throws(() => resolveDataDir(), (e: Error) => {
        assert.ok(e instanceof DatasetError);
        assert.match(e.message, /No data set at .*elsewhere \(from COVID_CXR_DATA\)/);
        assert.match(e.message, /Covid-19 Image Dataset/);
        assert.ok(e.message.includes(projectPath("data", "Covid19-dataset")));
        assert.match(e.message, /--data DIR/);
        return true;
      });
      Deno.env.set("COVID_CXR_DATA", root);
      assert.equal(resolveDataDir(), root);
    } finally {
      if (saved === undefined) Deno.env.delete("COVID_CXR_DATA");
      else Deno.env.set("COVID_CXR_DATA", saved);
    }
  });
});

Deno.test("dataset: validation lists every bad file with its reason and stops; --skip-bad records and continues", async () => {
  await withTemp("dataset-", async (dir) => {
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
});

Deno.test("dataset: an empty class folder or different train/test classes stop with a clear message", async () => {
  await withTemp("dataset-", async (dir) => {
    const root = await makeSyntheticDataset(path.join(dir, "data"), { train: 2, test: 1 });
    for (const f of fs.readdirSync(path.join(root, "test", "Normal"))) {
      fs.rmSync(path.join(root, "test", "Normal", f));
    }
    await assert.rejects(() => loadDataset(root), /Empty class folder\(s\) in .*: test\/Normal/);
    fs.rmSync(path.join(root, "test", "Normal"), { recursive: true });
    fs.mkdirSync(path.join(root, "test", "Bacterial"));
    await assert.rejects(
      () => loadDataset(root),
      /Train and test classes differ .*only in train\/: Normal; only in test\/: Bacterial/,
    );
  });
});

Deno.test("dataset: SHA256SUMS is checked; a changed file is reported as bad", async () => {
  await withTemp("dataset-", async (dir) => {
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
});

Deno.test("dataset: findDuplicates() finds planted copies across and within splits", async () => {
  await withTemp("dataset-", async (dir) => {
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
});

Deno.test("dataset: splitTrainValidation() holds out floor(f·n), seeded, disjoint; stratified per class", async () => {
  await withTemp("dataset-", async (dir) => {
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
});

Deno.test({
  name: "dataset: the paper's data has 251/66 images, sorted classes, and the 6 leaked test images",
  ignore: !REAL, // CI sets COVID_CXR_DATA, so this runs there
  fn: async () => {
    const ds = await loadDataset(resolveDataDir(REAL));
    assert.deepEqual(ds.classNames, ["Covid", "Normal", "Viral Pneumonia"]);
    assert.deepEqual(countByClass(ds), [
      { className: "Covid", train: 111, test: 26 },
      { className: "Normal", train: 70, test: 20 },
      { className: "Viral Pneumonia", train: 70, test: 20 },
    ]);
    assert.deepEqual(leakedTestItems(ds).map((i) => i.relPath).sort(), [
      "test/Covid/COVID-00003b.jpg",
      "test/Covid/COVID-00012.jpg",
      "test/Covid/COVID-00022.jpg",
      "test/Covid/COVID-00033.jpg",
      "test/Covid/COVID-00037.jpg",
      "test/Covid/radiopaedia-2019-novel-coronavirus-infected-pneumonia.jpg",
    ]);
    const within = findDuplicates([...ds.train, ...ds.test]).filter((g) => g.kind !== "train-test");
    assert.deepEqual(within.map((g) => g.items.map((i) => i.relPath)), [
      [
        "test/Covid/0112.jpg",
        "test/Covid/auntminnie-2020_01_31_20_24_2322_2020_01_31_x-ray_coronavirus_US.jpg",
      ],
      ["train/Normal/019.jpeg", "train/Normal/020.jpeg"],
      ["train/Normal/093.jpeg", "train/Normal/094.jpeg"],
      ["train/Viral Pneumonia/019.jpeg", "train/Viral Pneumonia/020.jpeg"],
    ]);
    const split = splitTrainValidation(ds.train, { validationFraction: 0.14, seed: 42 });
    assert.deepEqual([split.train.length, split.validation.length], [216, 35]);
  },
});

Deno.test({
  name: "dataset: every image of the paper's data decodes and matches SHA256SUMS",
  ignore: !REAL,
  fn: async () => {
    const ds = await loadDataset(resolveDataDir(REAL));
    const { report } = await validateDataset(ds, new ImageCache({ imageSize: 128 }));
    assert.deepEqual(report.bad, []);
    assert.equal(report.checked, 317);
    assert.equal(report.checksums?.verified, 317);
  },
});
