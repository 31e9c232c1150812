/** The paper's random split of the training folder into training and validation. */
import { Rng } from "../rng.ts";
import { type Cell, type Table, table } from "../tables.ts";
import { DatasetError, type ImageItem } from "./image_folder.ts";

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
