/** Byte-identical files within and across splits (leakage of test images into training). */
import type { Dataset, ImageItem } from "./image_folder.ts";
import { type Table, table } from "../tables.ts";

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
