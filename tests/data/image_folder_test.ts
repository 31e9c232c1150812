import assert from "node:assert/strict";
import * as fs from "node:fs";
import * as path from "node:path";
import {
  countByClass,
  DatasetError,
  findDuplicates,
  hashFile,
  leakedTestItems,
  loadDataset,
  projectPath,
  resolveDataDir,
  splitTrainValidation,
  withEnv,
} from "../../lib/mod.ts";
import { makeSyntheticDataset, SYNTHETIC_CLASSES } from "../_synthetic.ts";
import { freshDir } from "../_temp.ts";

const REAL = Deno.env.get("COVID_CXR_DATA");

Deno.test("image_folder: loadDataset() scans train/ and test/, classes sorted, every item labelled and hashed", async () => {
  const dir = freshDir("dataset");
  const root = await makeSyntheticDataset(path.join(dir, "data"), { train: 5, test: 2 });
  const ds = await loadDataset(root);
  assert.deepEqual(ds.classNames, SYNTHETIC_CLASSES);
  assert.deepEqual(countByClass(ds).map((c) => [c.train, c.test]), [[5, 2], [5, 2], [5, 2]]);
  for (const item of [...ds.train, ...ds.test]) {
    assert.equal(item.className, ds.classNames[item.label]);
    assert.equal(item.relPath, path.relative(root, item.path));
    assert.equal(item.sha256, await hashFile(item.path));
  }
  assert.deepEqual(ds.problems, []);
});

Deno.test("image_folder: resolveDataDir() takes the flag over COVID_CXR_DATA and explains a missing data set", async () => {
  const dir = freshDir("dataset");
  const root = await makeSyntheticDataset(path.join(dir, "data"), { train: 1, test: 1 });
  withEnv({ COVID_CXR_DATA: path.join(dir, "elsewhere") }, () => {
    assert.equal(resolveDataDir(root), root);
    assert.throws(() => resolveDataDir(), (e: Error) => {
      assert.ok(e instanceof DatasetError);
      assert.match(e.message, /No data set at .*elsewhere \(from COVID_CXR_DATA\)/);
      assert.match(e.message, /Covid-19 Image Dataset/);
      assert.ok(e.message.includes(projectPath("data", "Covid19-dataset")));
      assert.match(e.message, /--data DIR/);
      return true;
    });
  });
  withEnv({ COVID_CXR_DATA: root }, () => assert.equal(resolveDataDir(), root));
});

Deno.test("image_folder: an empty class folder or different train/test classes stop with a clear message", async () => {
  const dir = freshDir("dataset");
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

Deno.test({
  name:
    "image_folder: the paper's data has 251/66 images, sorted classes, and the 6 leaked test images",
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
