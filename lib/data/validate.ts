/**
 * Every file checked before a run: it must decode completely, and match `SHA256SUMS` when the data
 * set has one. Decoding goes through the image cache, so validation also fills it.
 */
import * as fs from "node:fs";
import * as path from "node:path";
import { type Dataset, DatasetError, type ImageItem, type ScanProblem } from "./image_folder.ts";
import { type DuplicateGroup, findDuplicates } from "./duplicates.ts";
import type { ImageCache } from "./image_cache.ts";

/** Lines of a `sha256sum`-style file: "<hash>  <relative path>". */
export function parseChecksums(text: string): Map<string, string> {
  const sums = new Map<string, string>();
  for (const line of text.split("\n")) {
    const m = /^([0-9a-f]{64})\s+\*?(.+)$/.exec(line.trim());
    if (m) sums.set(m[2].replace(/^\.\//, ""), m[1]);
  }
  return sums;
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
  opts: {
    skipBad?: boolean;
    onProgress?: (done: number, total: number) => void;
    /**
     * The folder that was scanned, relative to the root (e.g. "test" when only a data set's
     * test/ is evaluated): SHA256SUMS entries outside it are not expected. Default: all of it.
     */
    scope?: string;
  } = {},
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
    const inScope = (p: string) => !opts.scope || p.startsWith(`${opts.scope}/`);
    const missing = [...sums.keys()].filter((p) => inScope(p) && !present.has(p));
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
