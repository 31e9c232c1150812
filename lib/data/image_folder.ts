/**
 * The data set as plain data (no tensors): find it and scan its ImageFolder layout (one folder per
 * class, classes sorted by name, as torchvision's ImageFolder numbers them).
 */
import * as fs from "node:fs";
import * as path from "node:path";
import { UserError } from "../errors.ts";
import { hashFile } from "../files.ts";
import { projectPath } from "../paths.ts";

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

/** A problem with the data set (missing, malformed, bad files), with the fix in the message. */
export class DatasetError extends UserError {
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

function sortedDirs(dir: string): string[] {
  return fs.readdirSync(dir, { withFileTypes: true })
    .filter((e) => e.isDirectory() && !e.name.startsWith("."))
    .map((e) => e.name)
    .sort();
}

/**
 * The class names of an ImageFolder (its sorted sub-folders), or of a data set root's `train/`:
 * what a model trained on it predicts, in output order. Empty when `dir` is not a folder.
 */
export function imageFolderClasses(dir: string): string[] {
  if (!fs.existsSync(dir) || !fs.statSync(dir).isDirectory()) return [];
  const train = path.join(dir, "train");
  return fs.existsSync(path.join(dir, "test")) && fs.existsSync(train)
    ? sortedDirs(train)
    : sortedDirs(dir);
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
        sha256: await hashFile(file),
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
