/**
 * The data set as plain data (no tensors): find it, scan its ImageFolder layout, validate it,
 * find duplicate files, and split training from validation as the paper did.
 */
import * as fs from "node:fs";
import * as path from "node:path";
import { createHash } from "node:crypto";
import { projectPath } from "./paths.ts";
import { Rng } from "./rng.ts";
import type { ImageCache } from "./image_cache.ts";
import { type ImageInfo, readImageInfo } from "./images.ts";
import { type Cell, type Table, table } from "./tables.ts";

/** One image of the data set. */
export interface ImageItem {
  /** Absolute path. */
  path: string;
  /** Path relative to the data set root, e.g. "train/Covid/01.jpeg". */
  relPath: string;
  split: "train" | "test";
  /** Class index (classes sorted by name, as torchvision's ImageFolder does). */
  label: number;
  className: string;
  /** SHA-256 of the file's bytes (identity for caches and duplicate detection). */
  sha256: string;
}

export interface Dataset {
  root: string;
  /** Class names in index order. */
  classNames: string[];
  train: ImageItem[];
  test: ImageItem[];
}

export class DatasetError extends Error {
  override name = "DatasetError";
}

/** Extensions torchvision's ImageFolder accepts that sharp can decode. */
export const IMAGE_EXTENSIONS = [".jpg", ".jpeg", ".png", ".webp", ".tif", ".tiff", ".gif", ".bmp"];

/** The default location, relative to the project root. */
export const DEFAULT_DATA_DIR = "data/Covid19-dataset";

/**
 * Where the data set is: the `--data` flag, else `COVID_CXR_DATA`, else `data/Covid19-dataset`.
 * Fails with where to put the data and how to point at it.
 */
export function resolveDataDir(flag?: string): string {
  const candidate = flag ?? Deno.env.get("COVID_CXR_DATA") ?? projectPath(DEFAULT_DATA_DIR);
  const source = flag
    ? "--data"
    : Deno.env.get("COVID_CXR_DATA")
    ? "COVID_CXR_DATA"
    : "the default";
  const dir = path.resolve(candidate);
  const missing = ["train", "test"].filter((s) => !fs.existsSync(path.join(dir, s)));
  if (missing.length > 0) {
    throw new DatasetError(
      `No data set at ${dir} (from ${source}): ${missing.join(" and ")} missing.\n` +
        `Download the Kaggle "Covid-19 Image Dataset" (Pranav Raikote) and put its folder, the one ` +
        `holding train/ and test/, at ${projectPath(DEFAULT_DATA_DIR)}, or point at it with ` +
        "--data DIR or the environment variable COVID_CXR_DATA=DIR.",
    );
  }
  return dir;
}

/** SHA-256 of a file, streamed. */
export async function sha256File(file: string): Promise<string> {
  const hash = createHash("sha256");
  for await (const chunk of fs.createReadStream(file)) hash.update(chunk as Uint8Array);
  return hash.digest("hex");
}

function sortedDirs(dir: string): string[] {
  return fs.readdirSync(dir, { withFileTypes: true })
    .filter((e) => e.isDirectory() && !e.name.startsWith("."))
    .map((e) => e.name)
    .sort();
}

/** Files of a class folder (hidden files such as .DS_Store are not data). */
function classFiles(dir: string): string[] {
  return fs.readdirSync(dir, { withFileTypes: true })
    .filter((e) => e.isFile() && !e.name.startsWith("."))
    .map((e) => e.name)
    .sort();
}

/** Structural problems found while scanning (each stops loading unless marked skippable). */
export interface ScanProblem {
  path: string;
  reason: string;
}

/**
 * Scan one ImageFolder (one sub-folder per class, classes sorted by name) and hash every image.
 * Files whose extension is not an image's come back as problems; empty class folders are listed.
 */
export async function scanImageFolder(
  dir: string,
  split: "train" | "test",
  opts: { root?: string; classNames?: readonly string[] } = {},
): Promise<{ classNames: string[]; items: ImageItem[]; problems: ScanProblem[]; empty: string[] }> {
  const root = opts.root ?? dir;
  const classNames = opts.classNames ? [...opts.classNames] : sortedDirs(dir);
  const items: ImageItem[] = [];
  const problems: ScanProblem[] = [];
  const empty: string[] = [];
  for (const [label, className] of classNames.entries()) {
    const classDir = path.join(dir, className);
    const files = classFiles(classDir);
    const images = files.filter((f) => IMAGE_EXTENSIONS.includes(path.extname(f).toLowerCase()));
    for (const f of files.filter((f) => !images.includes(f))) {
      problems.push({
        path: path.join(classDir, f),
        reason: `not an image file (extension "${path.extname(f)}")`,
      });
    }
    if (images.length === 0) empty.push(path.relative(root, classDir));
    for (const f of images) {
      const file = path.join(classDir, f);
      items.push({
        path: file,
        relPath: path.relative(root, file),
        split,
        label,
        className,
        sha256: await sha256File(file),
      });
    }
  }
  return { classNames, items, problems, empty };
}

/**
 * Scan `root/train` and `root/test` (class = sub-folder name, classes sorted) and hash every file.
 * Stops on empty class folders and on train/test class sets that differ; files with extensions
 * that are not images are returned as problems for validation to report.
 */
export async function loadDataset(
  root: string,
): Promise<Dataset & { problems: ScanProblem[] }> {
  const splits = {
    train: sortedDirs(path.join(root, "train")),
    test: sortedDirs(path.join(root, "test")),
  };
  const onlyTrain = splits.train.filter((c) => !splits.test.includes(c));
  const onlyTest = splits.test.filter((c) => !splits.train.includes(c));
  if (onlyTrain.length > 0 || onlyTest.length > 0) {
    throw new DatasetError(
      `Train and test classes differ in ${root}: ` +
        [
          onlyTrain.length ? `only in train/: ${onlyTrain.join(", ")}` : "",
          onlyTest.length ? `only in test/: ${onlyTest.join(", ")}` : "",
        ].filter(Boolean).join("; ") +
        ". Each split needs one folder per class, with the same names.",
    );
  }
  const classNames = splits.train;
  if (classNames.length < 2) {
    throw new DatasetError(
      `${root}/train has ${classNames.length} class folder(s); 2 or more needed`,
    );
  }
  const train = await scanImageFolder(path.join(root, "train"), "train", { root, classNames });
  const test = await scanImageFolder(path.join(root, "test"), "test", { root, classNames });
  const empty = [...train.empty, ...test.empty];
  if (empty.length > 0) {
    throw new DatasetError(
      `Empty class folder(s) in ${root}: ${
        empty.join(", ")
      }. Every class needs images in both splits.`,
    );
  }
  return {
    root,
    classNames,
    train: train.items,
    test: test.items,
    problems: [...train.problems, ...test.problems],
  };
}

/** Images per class, per split. */
export function countByClass(ds: Dataset): { className: string; train: number; test: number }[] {
  return ds.classNames.map((className, label) => ({
    className,
    train: ds.train.filter((i) => i.label === label).length,
    test: ds.test.filter((i) => i.label === label).length,
  }));
}

/** A set of byte-identical files. */
export interface DuplicateGroup {
  sha256: string;
  items: ImageItem[];
  /** "train-test" when the group spans both splits (test images seen in training: leakage). */
  kind: "train-test" | "within-train" | "within-test";
}

/** Byte-identical files, within and across splits. Reports; removes nothing. */
export function findDuplicates(items: readonly ImageItem[]): DuplicateGroup[] {
  const byHash = new Map<string, ImageItem[]>();
  for (const item of items) byHash.set(item.sha256, [...(byHash.get(item.sha256) ?? []), item]);
  const groups: DuplicateGroup[] = [];
  for (const [sha256, group] of byHash) {
    if (group.length < 2) continue;
    const splits = new Set(group.map((i) => i.split));
    const kind = splits.size === 2
      ? "train-test"
      : splits.has("train")
      ? "within-train"
      : "within-test";
    groups.push({
      sha256,
      items: [...group].sort((a, b) => a.relPath.localeCompare(b.relPath)),
      kind,
    });
  }
  return groups.sort((a, b) =>
    a.kind.localeCompare(b.kind) || a.items[0].relPath.localeCompare(b.items[0].relPath)
  );
}

/** Test images byte-identical to a training image. */
export function leakedTestItems(ds: Dataset): ImageItem[] {
  const trainHashes = new Set(ds.train.map((i) => i.sha256));
  return ds.test.filter((i) => trainHashes.has(i.sha256));
}

/** Lines of a `sha256sum`-style file: "<hash>  <relative path>". */
export function parseChecksums(text: string): Map<string, string> {
  const sums = new Map<string, string>();
  for (const line of text.split("\n")) {
    const m = /^([0-9a-f]{64})\s+\*?(.+)$/.exec(line.trim());
    if (m) sums.set(m[2].replace(/^\.\//, ""), m[1]);
  }
  return sums;
}

export interface SplitOptions {
  /** Fraction of the training folder held out for validation (rounded down, as the paper's code). */
  validationFraction: number;
  seed: number;
  /** Hold out the same fraction of every class (the paper's SubsetRandomSampler did not). */
  stratify?: boolean;
}

/**
 * Split the training folder into training and validation the way the paper's PyTorch code did with
 * SubsetRandomSampler: shuffle the indices with the seed, hold out the first
 * floor(fraction · n). With fraction 0.14 that is 35 of 251, leaving the paper's 216.
 */
export function splitTrainValidation(
  items: readonly ImageItem[],
  opts: SplitOptions,
): { train: ImageItem[]; validation: ImageItem[] } {
  if (!(opts.validationFraction >= 0 && opts.validationFraction < 1)) {
    throw new DatasetError(`validationFraction must be in [0, 1), got ${opts.validationFraction}`);
  }
  const rng = Rng.stream(opts.seed, "split");
  if (!opts.stratify) {
    const order = rng.permutation(items.length);
    const held = Math.floor(opts.validationFraction * items.length);
    return {
      validation: order.slice(0, held).map((i) => items[i]),
      train: order.slice(held).map((i) => items[i]),
    };
  }
  const train: ImageItem[] = [];
  const validation: ImageItem[] = [];
  const labels = [...new Set(items.map((i) => i.label))].sort((a, b) => a - b);
  for (const label of labels) {
    const ofClass = items.filter((i) => i.label === label);
    const order = rng.permutation(ofClass.length);
    const held = Math.floor(opts.validationFraction * ofClass.length);
    validation.push(...order.slice(0, held).map((i) => ofClass[i]));
    train.push(...order.slice(held).map((i) => ofClass[i]));
  }
  return { train, validation };
}

/** What validation found. */
export interface ValidationReport {
  /** Images decoded (or found decoded in the cache) successfully. */
  checked: number;
  /** Every problem file with its reason. */
  bad: ScanProblem[];
  /** With `skipBad`: the files left out of this run (same as `bad`). */
  skipped: ScanProblem[];
  /** The SHA256SUMS check, when the data set has that file. */
  checksums?: { verified: number; mismatched: string[]; missing: string[]; unlisted: string[] };
  /** Byte-identical files (reported, never removed). */
  duplicates: DuplicateGroup[];
}

/**
 * Validate every file: it must decode completely (truncated or corrupt files and non-images are
 * bad), and match `SHA256SUMS` when the data set has one. By default any bad file stops with the
 * full list; `skipBad` continues without them and records them in the report.
 *
 * Decoding goes through `cache`, so validation also fills the cache the run will read from.
 */
export async function validateDataset(
  ds: Dataset & { problems?: ScanProblem[] },
  cache: ImageCache,
  opts: { skipBad?: boolean; onProgress?: (done: number, total: number) => void } = {},
): Promise<{ dataset: Dataset; report: ValidationReport }> {
  const all = [...ds.train, ...ds.test];
  const bad: ScanProblem[] = [...(ds.problems ?? [])];
  const failures = await cache.warm(all, { onProgress: opts.onProgress });
  for (const f of failures) bad.push({ path: f.item.path, reason: f.reason });

  let checksums: ValidationReport["checksums"];
  const sumsFile = path.join(ds.root, "SHA256SUMS");
  if (fs.existsSync(sumsFile)) {
    const sums = parseChecksums(fs.readFileSync(sumsFile, "utf8"));
    const mismatched: string[] = [];
    let verified = 0;
    for (const item of all) {
      const expected = sums.get(item.relPath);
      if (expected === undefined) continue;
      if (expected === item.sha256) verified++;
      else {
        mismatched.push(item.relPath);
        bad.push({
          path: item.path,
          reason: `SHA-256 differs from SHA256SUMS (file changed or damaged)`,
        });
      }
    }
    const present = new Set(all.map((i) => i.relPath));
    const missing = [...sums.keys()].filter((p) => !present.has(p));
    for (const p of missing) {
      bad.push({ path: path.join(ds.root, p), reason: "listed in SHA256SUMS but missing" });
    }
    const unlisted = all.filter((i) => !sums.has(i.relPath)).map((i) => i.relPath);
    checksums = { verified, mismatched, missing, unlisted };
  }

  const duplicates = findDuplicates(all);
  if (bad.length > 0 && !opts.skipBad) {
    throw new DatasetError(
      `${bad.length} bad file(s) in ${ds.root}:\n` +
        bad.map((b) => `  ${path.relative(ds.root, b.path)}: ${b.reason}`).join("\n") +
        "\nFix or remove them, or run with --skip-bad to continue without them " +
        "(they are then listed in the run's data report).",
    );
  }
  const badPaths = new Set(bad.map((b) => b.path));
  const keep = (items: ImageItem[]) => items.filter((i) => !badPaths.has(i.path));
  return {
    dataset: {
      root: ds.root,
      classNames: ds.classNames,
      train: keep(ds.train),
      test: keep(ds.test),
    },
    report: {
      checked: all.length - failures.length,
      bad,
      skipped: opts.skipBad ? bad : [],
      ...(checksums ? { checksums } : {}),
      duplicates,
    },
  };
}

/** Per-image facts for the data-set statistics (header + decoded pixels). */
export interface ImageStats {
  relPath: string;
  split: "train" | "test";
  className: string;
  label: number;
  /** File format ("jpeg", "png", …). */
  format: string;
  width: number;
  height: number;
  /** width / height. */
  aspect: number;
  /** Bands as stored: 1 gray, 2 gray+alpha, 3 RGB, 4 RGBA. */
  channels: number;
  /** "JPEG RGB", "JPEG gray", "PNG RGBA", "PNG gray 16-bit", … */
  mode: string;
  /** True when the decoded image has no colour (R = G = B within 2 levels everywhere). */
  grayContent: boolean;
  /** Mean pixel value (0..255) of the resized image. */
  meanIntensity: number;
  fileBytes: number;
}

/** How an image is stored, in words. */
export function storageMode(info: ImageInfo): string {
  const kind = info.channels === 1
    ? "gray"
    : info.channels === 2
    ? "gray+alpha"
    : info.channels === 4
    ? "RGBA"
    : "RGB";
  return `${info.format.toUpperCase()} ${kind}${info.depth === "ushort" ? " 16-bit" : ""}`;
}

/** True when every pixel has R, G and B within `tolerance` levels of each other. */
export function isGrayContent(pixels: Uint8Array, tolerance = 2): boolean {
  for (let i = 0; i < pixels.length; i += 3) {
    const r = pixels[i], g = pixels[i + 1], b = pixels[i + 2];
    if (Math.abs(r - g) > tolerance || Math.abs(g - b) > tolerance) return false;
  }
  return true;
}

/** Header facts and a few pixel statistics of every image (pixels come from the cache). */
export async function describeImages(
  items: readonly ImageItem[],
  cache: ImageCache,
): Promise<ImageStats[]> {
  const rows: ImageStats[] = [];
  for (const item of items) {
    const info = await readImageInfo(item.path);
    const pixels = await cache.get(item);
    let sum = 0;
    for (let i = 0; i < pixels.length; i++) sum += pixels[i];
    rows.push({
      relPath: item.relPath,
      split: item.split,
      className: item.className,
      label: item.label,
      format: info.format,
      width: info.width,
      height: info.height,
      aspect: info.width / info.height,
      channels: info.channels,
      mode: storageMode(info),
      grayContent: isGrayContent(pixels),
      meanIntensity: sum / pixels.length,
      fileBytes: fs.statSync(item.path).size,
    });
  }
  return rows;
}

/** Storage modes per class with how many images are gray in content, as a table. */
export function summarizeStorage(stats: readonly ImageStats[]): Table {
  const classes = [...new Set(stats.map((s) => s.className))];
  const modes = [...new Set(stats.map((s) => s.mode))].sort();
  const rows: Record<string, Cell>[] = modes.map((mode) => ({
    "stored as": mode,
    ...Object.fromEntries(
      classes.map((c) => [c, stats.filter((s) => s.mode === mode && s.className === c).length]),
    ),
    total: stats.filter((s) => s.mode === mode).length,
  }));
  rows.push({
    "stored as": "gray content (R = G = B)",
    ...Object.fromEntries(
      classes.map((c) => [c, stats.filter((s) => s.grayContent && s.className === c).length]),
    ),
    total: stats.filter((s) => s.grayContent).length,
  });
  return table(rows, { title: `${stats.length} images` });
}

/** Duplicate groups as a table (one row per group). */
export function duplicatesTable(groups: readonly DuplicateGroup[]): Table {
  return table(
    groups.map((g) => ({
      kind: g.kind,
      files: g.items.map((i) => i.relPath).join("  =  "),
      sha256: g.sha256.slice(0, 12),
    })),
    { title: `${groups.length} groups of byte-identical files` },
  );
}

/** Images per class in each part of the split (training / validation / test). */
export function splitSummary(
  classNames: readonly string[],
  splits: Record<string, readonly ImageItem[]>,
): Table {
  const rows: Record<string, Cell>[] = classNames.map((className, label) => ({
    class: className,
    ...Object.fromEntries(
      Object.entries(splits).map((
        [k, items],
      ) => [k, items.filter((i) => i.label === label).length]),
    ),
  }));
  rows.push({
    class: "total",
    ...Object.fromEntries(Object.entries(splits).map(([k, items]) => [k, items.length])),
  });
  return table(rows);
}
