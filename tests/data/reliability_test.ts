/**
 * Bad input at the data layer: every kind of file a real folder can hold, with the outcome each
 * must have (read, left out with a reason, or followed as torchvision's ImageFolder does).
 */
import assert from "node:assert/strict";
import * as fs from "node:fs";
import * as path from "node:path";
import zlib from "node:zlib";
import sharp from "sharp";
import {
  decodeResized,
  ImageCache,
  ImageError,
  initBackend,
  loadDataset,
  resolveDataDir,
  Rng,
  validateDataset,
  withEnv,
} from "../../lib/mod.ts";
import { classPattern, writeImage } from "../_synthetic.ts";
import { freshDir } from "../_temp.ts";

await initBackend();

const rng = Rng.stream(7, "zoo");
const image = (label: number, file: string, format: Parameters<typeof writeImage>[4] = "png-rgb") =>
  writeImage(file, classPattern(label, 40, 36, rng), 40, 36, format);

/** A valid PNG whose header claims `width`×`height` (its pixel data is for 8×8). */
async function fakeHugePng(file: string, width: number, height: number): Promise<void> {
  const png = new Uint8Array(
    await sharp(new Uint8Array(8 * 8 * 3), { raw: { width: 8, height: 8, channels: 3 } }).png()
      .toBuffer(),
  );
  const view = new DataView(png.buffer);
  view.setUint32(16, width); // IHDR: length(4) type(4) then width, height
  view.setUint32(20, height);
  view.setUint32(29, zlib.crc32(png.subarray(12, 29)));
  fs.writeFileSync(file, png);
}

/** The zoo: a data set whose files cover every case; returns the expected outcome per file. */
async function zoo(root: string) {
  const outside = path.join(path.dirname(root), `${path.basename(root)}-elsewhere`);
  const expect: Record<string, RegExp | "ok"> = {};
  for (const [label, c] of ["Covid", "Normal", "Viral Pneumonia"].entries()) {
    for (const split of ["train", "test"]) {
      await image(label, path.join(root, split, c, "plain.png"));
      expect[`${split}/${c}/plain.png`] = "ok";
    }
  }
  const t = (...p: string[]) => path.join(root, "train", ...p);
  // Stored in every way the real data has, and then some: all read.
  await image(0, t("Covid", "gray16.png"), "png-gray16");
  await image(0, t("Covid", "gray.jpeg"), "jpeg-gray");
  await image(0, t("Covid", "rgba.png"), "png-rgba");
  await writeImage(t("Covid", "rotated.jpeg"), classPattern(0, 40, 36, rng), 40, 36, "jpeg-rgb", {
    orientation: 6,
  });
  await sharp(classPattern(0, 40, 36, rng), { raw: { width: 40, height: 36, channels: 3 } })
    .toColourspace("cmyk").jpeg().toFile(t("Covid", "cmyk.jpeg"));
  await image(0, t("Covid", "nested", "deeper", "in-a-subfolder.png"));
  await image(0, path.join(outside, "linked-target.png"));
  fs.symlinkSync(path.join(outside, "linked-target.png"), t("Covid", "linked.png"));
  for (const f of ["gray16.png", "gray.jpeg", "rgba.png", "rotated.jpeg", "cmyk.jpeg"]) {
    expect[`train/Covid/${f}`] = "ok";
  }
  expect["train/Covid/nested/deeper/in-a-subfolder.png"] = "ok";
  expect["train/Covid/linked.png"] = "ok";
  // A class folder that is a link (test/Normal → elsewhere): still a class, its images read.
  fs.rmSync(path.join(root, "test", "Normal"), { recursive: true });
  await image(1, path.join(outside, "normals", "plain.png"));
  await image(1, path.join(outside, "normals", "second.png"));
  fs.symlinkSync(path.join(outside, "normals"), path.join(root, "test", "Normal"));
  expect["test/Normal/second.png"] = "ok";
  // Hidden files are not data (not even reported).
  fs.writeFileSync(t("Normal", ".DS_Store"), "junk");
  // Bad: each left out with its reason.
  const jpeg = await sharp(classPattern(1, 40, 36, rng), {
    raw: { width: 40, height: 36, channels: 3 },
  }).jpeg().toBuffer();
  fs.writeFileSync(t("Normal", "truncated.jpeg"), jpeg.subarray(0, jpeg.length / 2));
  fs.writeFileSync(t("Normal", "empty.png"), new Uint8Array());
  fs.writeFileSync(t("Normal", "text.png"), "I am not a picture");
  fs.writeFileSync(t("Normal", "old.bmp"), "BM....");
  fs.writeFileSync(t("Normal", "notes.txt"), "readme");
  await fakeHugePng(t("Normal", "huge.png"), 20_000, 15_000);
  fs.symlinkSync(path.join(outside, "gone.png"), t("Normal", "dangling.png"));
  Object.assign(expect, {
    "train/Normal/truncated.jpeg": /decode .* completely|truncated|corrupt/i,
    "train/Normal/empty.png": /not a readable image/,
    "train/Normal/text.png": /not a readable image/,
    "train/Normal/old.bmp": /BMP images cannot be decoded here \(libvips\); convert to PNG/,
    "train/Normal/notes.txt": /not an image file \(extension "\.txt"\)/,
    "train/Normal/huge.png":
      /20000×15000 = 300000000 pixels exceeds the limit of 50000000.*--max-pixels/,
    "train/Normal/dangling.png": /a symbolic link to nothing/,
  });
  return expect;
}

Deno.test("reliability: a bad-data zoo — every stored format read, links and nested folders followed as ImageFolder does, every bad file listed with its reason", async () => {
  const root = path.join(freshDir("zoo"), "data");
  const expect = await zoo(root);
  const ds = await loadDataset(root);
  assert.deepEqual(ds.classNames, ["Covid", "Normal", "Viral Pneumonia"]);
  const cache = new ImageCache({ imageSize: 32, dir: path.join(path.dirname(root), "cache") });
  // Without --skip-bad: stops, listing every bad file (and only those).
  await assert.rejects(() => validateDataset(ds, cache), (e: Error) => {
    const listed = e.message.split("\n").filter((l) => l.startsWith("  "));
    const bad = Object.entries(expect).filter(([, v]) => v !== "ok");
    assert.equal(listed.length, bad.length, e.message);
    for (const [file, reason] of bad) {
      const line = listed.find((l) => l.trim().startsWith(`${file}:`));
      assert.ok(line, `${file} is listed`);
      assert.match(line!, reason as RegExp, file);
    }
    assert.match(e.message, /--skip-bad/);
    return true;
  });
  // With --skip-bad: the good ones are kept, the bad ones recorded.
  const { dataset, report } = await validateDataset(ds, cache, { skipBad: true });
  const kept = [...dataset.train, ...dataset.test].map((i) => i.relPath).sort();
  const good = Object.entries(expect).filter(([, v]) => v === "ok").map(([f]) => f);
  assert.deepEqual(kept, good.sort());
  assert.equal(report.skipped.length, Object.values(expect).filter((v) => v !== "ok").length);
  // Paths are the links' own (what a SHA256SUMS file lists), not their targets.
  assert.ok(kept.includes("train/Covid/linked.png"));
});

Deno.test("reliability: SHA256SUMS is checked against linked files and nested folders by their paths in the data set", async () => {
  const root = path.join(freshDir("sums"), "data");
  const expect = await zoo(root);
  const ds = await loadDataset(root);
  const good = [...ds.train, ...ds.test].filter((i) => expect[i.relPath] === "ok");
  fs.writeFileSync(
    path.join(root, "SHA256SUMS"),
    good.map((i) => `${i.sha256}  ${i.relPath}`).join("\n") + "\n",
  );
  const cache = new ImageCache({ imageSize: 32, dir: path.join(path.dirname(root), "cache") });
  const { report } = await validateDataset(ds, cache, { skipBad: true });
  assert.equal(report.checksums!.verified, good.length);
  assert.deepEqual(report.checksums!.missing, []);
  assert.deepEqual(report.checksums!.mismatched, []);
});

Deno.test("reliability: a higher --max-pixels lets a genuine huge image through the guard; the header is read without libvips's own limit", async () => {
  const file = path.join(freshDir("huge"), "huge.png");
  await fakeHugePng(file, 20_000, 15_000); // 300 MP: over libvips's default 268 MP too
  await assert.rejects(() => decodeResized(file, 16), /exceeds the limit of 50000000/);
  // Raised: the guard lets it pass and decoding is attempted (this file's pixels are fake).
  await assert.rejects(
    () => decodeResized(file, 16, { maxPixels: 400_000_000 }),
    (e: Error) =>
      e instanceof ImageError && /completely/.test(e.message) && !/limit/.test(e.message),
  );
});

Deno.test("reliability: COVID_CXR_DATA set but empty is unset; a data path that is a file says so", () => {
  const dir = freshDir("env");
  withEnv({ COVID_CXR_DATA: "" }, () => {
    assert.throws(() => resolveDataDir(), /\(from the default\)/);
  });
  const file = path.join(dir, "data.zip");
  fs.writeFileSync(file, "zip");
  assert.throws(
    () => resolveDataDir(file),
    /No data set at .*data\.zip \(from --data\): it is a file/,
  );
});

Deno.test("reliability: a link that loops back or leads into another class folder is named, never followed into a relabel; a file reached twice counts once", async () => {
  const root = path.join(freshDir("links"), "data");
  for (const [label, c] of ["Covid", "Normal", "Viral Pneumonia"].entries()) {
    for (const split of ["train", "test"]) {
      await image(label, path.join(root, split, c, "plain.png"));
    }
  }
  const t = (...p: string[]) => path.join(root, "train", ...p);
  fs.symlinkSync("..", t("Covid", "loop")); // train/Covid/loop → train/ (every class again)
  fs.symlinkSync("../Normal", t("Covid", "normals")); // Normal's images under Covid
  fs.symlinkSync("../Normal/plain.png", t("Viral Pneumonia", "borrowed.png")); // one image
  fs.symlinkSync("plain.png", t("Normal", "again.png")); // the same file twice in one class
  const ds = await loadDataset(root);
  const counts = ds.classNames.map((_, k) => ds.train.filter((i) => i.label === k).length);
  assert.deepEqual(counts, [1, 1, 1], "no image read twice or under another class");
  const byPath = Object.fromEntries(
    ds.problems.map((p) => [path.relative(root, p.path), p.reason]),
  );
  assert.match(
    byPath["train/Covid/loop"],
    /link back to the split folder .*loop.* other classes' images as Covid/,
  );
  assert.match(
    byPath["train/Covid/normals"],
    /link into the class folder "Normal": its images would be labelled Covid/,
  );
  assert.match(
    byPath["train/Viral Pneumonia/borrowed.png"],
    /into the class folder "Normal": its image would be labelled Viral Pneumonia/,
  );
  assert.equal(
    byPath["train/Normal/again.png"],
    undefined,
    "a second path to one file is not a problem",
  );
  const cache = new ImageCache({ imageSize: 32, dir: path.join(path.dirname(root), "cache") });
  await assert.rejects(() => validateDataset(ds, cache), (e: Error) => {
    assert.match(e.message, /3 bad file\(s\)/);
    assert.match(e.message, /train\/Covid\/loop: a symbolic link back/);
    assert.match(e.message, /remove the link, or --skip-bad/);
    return true;
  });
  const { report } = await validateDataset(ds, cache, { skipBad: true });
  assert.equal(report.skipped.length, 3, "left out with --skip-bad, and reported");
});
