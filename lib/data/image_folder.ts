/**
 * The data set as plain data (no tensors): find it and scan its ImageFolder layout (one folder per
 * class, classes sorted by name, as torchvision's ImageFolder numbers them).
 */
import * as fs from "node:fs";
import * as path from "node:path";
import { UserError } from "../errors.ts";
import { hashFile } from "../files.ts";
import { envValue } from "../env.ts";
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

/** Extensions of images the decoder (sharp, i.e. libvips) reads; torchvision's ImageFolder takes these too. */
export const IMAGE_EXTENSIONS = [".jpg", ".jpeg", ".png", ".webp", ".tif", ".tiff", ".gif"];

/** Image formats torchvision's ImageFolder takes but this decoder cannot read: reported, not read. */
const UNSUPPORTED_IMAGES: Record<string, string> = {
  ".bmp": "BMP",
  ".ppm": "PPM",
  ".pgm": "PGM",
};

/** The default location, relative to the project root. */
export const DEFAULT_DATA_DIR = "data/Covid19-dataset";

/**
 * Where the data set is: the `--data` flag, else `COVID_CXR_DATA`, else `data/Covid19-dataset`.
 * Fails with where to put the data and how to point at it.
 */
export function resolveDataDir(flag?: string): string {
  const env = envValue("COVID_CXR_DATA");
  const candidate = flag ?? env ?? projectPath(DEFAULT_DATA_DIR);
  const source = flag ? "--data" : env ? "COVID_CXR_DATA" : "the default";
  const dir = path.resolve(candidate);
  const help =
    `Download the Kaggle "Covid-19 Image Dataset" (Pranav Raikote) and put its folder, ` +
    `the one holding train/ and test/, at ${projectPath(DEFAULT_DATA_DIR)}, or point at it with ` +
    "--data DIR or the environment variable COVID_CXR_DATA=DIR.";
  if (fs.existsSync(dir) && !fs.statSync(dir).isDirectory()) {
    throw new DatasetError(`No data set at ${dir} (from ${source}): it is a file.\n${help}`);
  }
  const missing = ["train", "test"].filter((s) => !isDirectory(path.join(dir, s)));
  if (missing.length > 0) {
    throw new DatasetError(
      `No data set at ${dir} (from ${source}): ${missing.join(" and ")} missing.\n${help}`,
    );
  }
  return dir;
}

/**
 * The external set to evaluate on after the test set: the `--external` flag, else
 * `COVID_CXR_EXTERNAL`, else none. A folder that is not there is an error naming where it came
 * from (a typo must not silently skip the external evaluation).
 */
export function resolveExternalDir(flag?: string): string | undefined {
  const env = envValue("COVID_CXR_EXTERNAL");
  const candidate = flag ?? env;
  if (candidate === undefined) return undefined;
  const dir = path.resolve(candidate);
  if (!isDirectory(dir)) {
    throw new DatasetError(
      `No external set at ${dir} (from ${flag ? "--external" : "COVID_CXR_EXTERNAL"}): ${
        fs.existsSync(dir) ? "it is a file" : "no such folder"
      }. Give an ImageFolder (one sub-folder per class, e.g. the external-cxr-probe set) or unset it.`,
    );
  }
  return dir;
}

/** True for a folder, or a symbolic link to one (links are followed, as torchvision does). */
function isDirectory(p: string): boolean {
  try {
    return fs.statSync(p).isDirectory();
  } catch {
    return false;
  }
}

/** Sub-folders (links to folders included), hidden ones left out, sorted: the class names. */
function sortedDirs(dir: string): string[] {
  return fs.readdirSync(dir)
    .filter((name) => !name.startsWith(".") && isDirectory(path.join(dir, name)))
    .sort();
}

/**
 * The class names of an ImageFolder (its sorted sub-folders), or of a data set root's `train/`:
 * what a model trained on it predicts, in output order. Empty when `dir` is not a folder.
 */
export function imageFolderClasses(dir: string): string[] {
  if (!isDirectory(dir)) return [];
  const train = path.join(dir, "train");
  return isDirectory(path.join(dir, "test")) && isDirectory(train)
    ? sortedDirs(train)
    : sortedDirs(dir);
}

/** True when `inner` is `outer` or lies inside it (both real paths). */
function within(inner: string, outer: string): boolean {
  const rel = path.relative(outer, inner);
  return rel === "" || (!rel.startsWith("..") && !path.isAbsolute(rel));
}

/**
 * Every file under a class folder, walking sub-folders and following symbolic links as
 * torchvision's ImageFolder does (`os.walk(..., followlinks=True)`, each folder's files sorted,
 * folders in sorted order). Unlike ImageFolder, a link is not followed where it would relabel
 * images: one that loops back to the class folder or above it, or that leads into another class
 * folder of the split (`splitDir`) — those come back as `badLinks`, named, for validation to stop
 * on (or, with --skip-bad, to leave out and report). A folder or file reached twice through links
 * counts once. Hidden entries (.DS_Store, .ipynb_checkpoints) are not data.
 */
function classFiles(
  dir: string,
  splitDir: string,
): { files: string[]; broken: string[]; badLinks: ScanProblem[] } {
  const files: string[] = [];
  const broken: string[] = [];
  const badLinks: ScanProblem[] = [];
  const seenFolders = new Set<string>();
  const seenFiles = new Set<string>();
  const classReal = fs.realpathSync(dir);
  const splitReal = fs.realpathSync(splitDir);
  /** Why following a link to `real` would read images under the wrong class, if it would. */
  const misleads = (real: string, isFolder: boolean): string | undefined => {
    if (isFolder && within(classReal, real)) {
      return `a symbolic link back to ${
        path.relative(splitDir, real) || "the split folder"
      } (a loop through the class folder): following it would read ${
        real === classReal ? "the same images again" : "other classes' images"
      } as ${path.basename(dir)}`;
    }
    if (within(real, splitReal) && !within(real, classReal)) {
      const other = path.relative(splitReal, real).split(path.sep)[0];
      return `a symbolic link into the class folder "${other}": its ${
        isFolder ? "images" : "image"
      } would be labelled ${path.basename(dir)}`;
    }
    return undefined;
  };
  const walk = (folder: string) => {
    const real = fs.realpathSync(folder);
    if (seenFolders.has(real)) return;
    seenFolders.add(real);
    const names = fs.readdirSync(folder).filter((n) => !n.startsWith(".")).sort();
    const subfolders: string[] = [];
    for (const name of names) {
      const p = path.join(folder, name);
      let stat: fs.Stats;
      try {
        stat = fs.statSync(p);
      } catch {
        broken.push(p); // a link to nothing
        continue;
      }
      if (fs.lstatSync(p).isSymbolicLink()) {
        const target = fs.realpathSync(p);
        const reason = misleads(target, stat.isDirectory());
        if (reason) {
          badLinks.push({ path: p, reason: `${reason}; remove the link, or --skip-bad` });
          continue;
        }
      }
      if (stat.isDirectory()) subfolders.push(p);
      else {
        const realFile = fs.realpathSync(p);
        if (seenFiles.has(realFile)) continue; // the same file through another path
        seenFiles.add(realFile);
        files.push(p);
      }
    }
    for (const sub of subfolders) walk(sub);
  };
  walk(dir);
  return { files, broken, badLinks };
}

/** Structural problems found while scanning (each stops loading unless marked skippable). */
export interface ScanProblem {
  path: string;
  reason: string;
}

/**
 * Scan one ImageFolder (one sub-folder per class, classes sorted by name; images in nested
 * sub-folders and behind symbolic links count) and hash every image. Files that are not images
 * come back as problems; empty class folders are listed.
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
    const { files, broken, badLinks } = classFiles(classDir, dir);
    for (const b of broken) problems.push({ path: b, reason: "a symbolic link to nothing" });
    problems.push(...badLinks);
    const images: string[] = [];
    for (const file of files) {
      const ext = path.extname(file).toLowerCase();
      if (IMAGE_EXTENSIONS.includes(ext)) images.push(file);
      else if (UNSUPPORTED_IMAGES[ext]) {
        problems.push({
          path: file,
          reason: `${
            UNSUPPORTED_IMAGES[ext]
          } images cannot be decoded here (libvips); convert to PNG`,
        });
      } else {
        problems.push({
          path: file,
          reason: `not an image file (extension "${path.extname(file)}")`,
        });
      }
    }
    if (images.length === 0) empty.push(path.relative(root, classDir));
    for (const file of images) {
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

/**
 * What the class counts mean for accuracy, in one sentence: the share always answering the
 * largest class gets right, and what one test image is worth.
 */
export function classBalanceSentence(ds: Dataset): string {
  const counts = countByClass(ds);
  const largest = counts.reduce((a, b) => (b.train > a.train ? b : a), counts[0]);
  const share = (k: number, n: number) => `${(n ? (100 * k) / n : 0).toFixed(0)} %`;
  const testLargest = largest.test;
  return `${largest.className} is the largest class (${largest.train} of ${ds.train.length} ` +
    `training images, ${share(largest.train, ds.train.length)}): always answering it would be ` +
    `right on ${testLargest} of ${ds.test.length} test images (${
      share(testLargest, ds.test.length)
    }). One test image is ${(ds.test.length ? 100 / ds.test.length : 0).toFixed(2)} percentage ` +
    "points of accuracy.";
}
