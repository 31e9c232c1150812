/**
 * Two models on the same test images: which images each got right, read back from the runs'
 * predictions.csv, and whether their accuracies differ beyond chance (McNemar's exact test and
 * the difference with Newcombe's interval, lib/evaluate/paired.ts). `deno task compare` and
 * notebook 06 use it.
 */
import * as fs from "node:fs";
import * as path from "node:path";
import { parse } from "csv-parse/sync";
import { percent } from "../format.ts";
import { csvUnsafe, type Table, table } from "../tables.ts";
import { comparePaired, type PairedComparison, pairedCounts } from "../evaluate/mod.ts";
import { type FinishedRun, RunError } from "./runs.ts";

/** Right or wrong per test image, keyed by the image's path in the data set. */
export type Outcomes = Map<string, boolean>;

/** A finished run's right/wrong per test image, from its predictions.csv. */
export function runOutcomes(run: FinishedRun): Outcomes {
  const file = path.join(run.runDir, "predictions.csv");
  let rows: Record<string, string>[];
  try {
    rows = parse(fs.readFileSync(file, "utf8"), { columns: true, skip_empty_lines: true });
  } catch (error) {
    throw new RunError(
      `Cannot read the predictions of ${run.runDir}: ${(error as Error).message}. Evaluate the ` +
        "run again (its predictions.csv is missing or damaged).",
    );
  }
  const outcomes: Outcomes = new Map();
  for (const r of rows) {
    const file = r.file === undefined ? undefined : csvUnsafe(r.file);
    if (!file || (r.correct !== "true" && r.correct !== "false")) {
      throw new RunError(`${path.join(run.runDir, "predictions.csv")} has a malformed row.`);
    }
    outcomes.set(file, r.correct === "true");
  }
  return outcomes;
}

/** The paired comparison of two sets of outcomes on exactly the same images. */
export function compareOutcomes(
  a: Outcomes,
  b: Outcomes,
  names: [string, string] = ["A", "B"],
): PairedComparison {
  const onlyInA = [...a.keys()].filter((k) => !b.has(k));
  const onlyInB = [...b.keys()].filter((k) => !a.has(k));
  if (onlyInA.length || onlyInB.length) {
    const list = (xs: string[]) => `${xs.slice(0, 3).join(", ")}${xs.length > 3 ? ", …" : ""}`;
    throw new RunError(
      `Cannot compare ${names[0]} and ${names[1]}: they were not scored on the same images ` +
        `(${a.size} and ${b.size}; ${onlyInA.length} only in ${names[0]}${
          onlyInA.length ? ` (${list(onlyInA)})` : ""
        }, ${onlyInB.length} only in ${names[1]}${
          onlyInB.length ? ` (${list(onlyInB)})` : ""
        }). A paired test needs the same test images.`,
    );
  }
  const keys = [...a.keys()].sort();
  return comparePaired(pairedCounts(keys.map((k) => a.get(k)!), keys.map((k) => b.get(k)!)));
}

const pct = (v: number) => percent(v);

/** "+12.1 points (95 % interval −0.5 to +24.3)". */
export function differenceText(c: PairedComparison): string {
  const signed = (v: number) => `${v >= 0 ? "+" : "−"}${(100 * Math.abs(v)).toFixed(1)}`;
  return `${signed(c.difference)} points (95 % interval ${signed(c.differenceInterval.lower)} to ${
    signed(c.differenceInterval.upper)
  })`;
}

function pText(p: number): string {
  return p < 0.001 ? "p < 0.001" : `p = ${p.toFixed(3)}`;
}

/**
 * What the comparison says, by rule: a difference beyond chance only when McNemar's p is under
 * 0.05; otherwise that these images do not show one (never that the models are the same).
 */
export function comparisonSentence(c: PairedComparison, names: [string, string]): string {
  const first = names[0].charAt(0).toUpperCase() + names[0].slice(1);
  const facts = `${first} is right on ${c.bothRight + c.onlyA} of ${c.n} ` +
    `(${pct(c.accuracyA)}), ${names[1]} on ${c.bothRight + c.onlyB} (${pct(c.accuracyB)}); they ` +
    `disagree on ${c.onlyA + c.onlyB} images (${c.onlyA} right only by ${names[0]}, ${c.onlyB} ` +
    `only by ${names[1]}). Difference ${differenceText(c)}; McNemar's exact test ${
      pText(c.mcnemarP)
    }.`;
  if (c.mcnemarP < 0.05) {
    return `${facts} On these ${c.n} images the difference is more than chance would give.`;
  }
  return `${facts} That is no evidence of a difference: chance alone gives a split like this on ` +
    `${c.onlyA + c.onlyB} disagreements${
      c.differenceInterval.lower < 0 && c.differenceInterval.upper > 0
        ? ", and the interval includes no difference at all"
        : ""
    }.`;
}

/** Several models against one reference, a row each: accuracies, disagreements, p, difference. */
export function pairedTable(
  reference: { name: string; outcomes: Outcomes },
  others: readonly { name: string; outcomes: Outcomes }[],
): Table {
  return table(others.map((o) => {
    const c = compareOutcomes(reference.outcomes, o.outcomes, [reference.name, o.name]);
    return {
      model: o.name,
      [`right (of ${c.n})`]: c.bothRight + c.onlyB,
      [`only ${reference.name} right`]: c.onlyA,
      "only this one right": c.onlyB,
      [`${reference.name} − this`]: differenceText(c),
      "McNemar p (exact)": c.mcnemarP < 0.001 ? "< 0.001" : c.mcnemarP.toFixed(3),
    };
  }));
}
