/**
 * What an external set can say about why a model calls other classes "Covid": computed from the
 * set's own manifest, never from what we believe about one particular set.
 *
 * For every class but the target, the share of its images called the target is compared across
 * the manifest's age groups and across its sources, each comparison by Fisher's exact test
 * (Bonferroni-adjusted over the pairs of groups compared), and only between groups a confounder
 * does not split: an age difference counts only inside one source, a source difference only
 * inside one age group. The verdicts:
 * - `age`: inside one source, one age group is called the target more often than another;
 * - `source`: inside one age group (or where the set has no ages), one source more than another;
 * - `age-or-source`: groups differ, but age groups and sources coincide, so the set cannot say
 *   which (e.g. all children from one hospital, all adults from another);
 * - `not-carried-over`: mostly called the target here, in every group this set has, while the
 *   test set's images of the class were mostly told apart: what differs between the two sets
 *   (age, source, equipment) this set cannot separate;
 * - `not-learnt`: mostly called the target in every age group and source here (and on the test
 *   set too, when it is given);
 * - `told-apart`: the class is mostly not called the target;
 * - `cannot-tell`: too few images, or one group only and nothing to compare it with.
 */
import * as path from "node:path";
import { clopperPearson, fisherExact, type Interval } from "./metrics.ts";
import type { Prediction } from "./evaluate.ts";
import type { Manifest, RelPath, ShortcutRate } from "./manifest.ts";

/** Groups smaller than this are not compared (a rate on 3 images says little). */
export const MIN_GROUP = 5;
/** Differences must reach this (after the Bonferroni adjustment). */
export const SIGNIFICANCE = 0.05;
/** "Mostly called the target" above this share. */
export const MOSTLY = 0.5;

export interface GroupRate {
  group: string;
  called: number;
  total: number;
  rate: number;
  interval: Interval;
}

/** Two groups compared, and inside what (a source for ages, an age group for sources). */
export interface GroupDifference {
  high: GroupRate;
  low: GroupRate;
  /** Bonferroni-adjusted two-sided Fisher exact p-value. */
  p: number;
  within?: string;
}

export type ReadingVerdict =
  | "age"
  | "source"
  | "age-or-source"
  | "not-carried-over"
  | "not-learnt"
  | "told-apart"
  | "cannot-tell";

export interface ClassReading {
  className: string;
  target: string;
  overall: GroupRate;
  /** Images of the class whose manifest row gives an age. */
  withAge: number;
  byAge: GroupRate[];
  bySource: GroupRate[];
  ageDifference?: GroupDifference;
  sourceDifference?: GroupDifference;
  /** Each source holds a single age group (of those large enough to compare). */
  ageAndSourceCoincide: boolean;
  /** The same class on the test set, when its rates were given. */
  test?: GroupRate;
  verdict: ReadingVerdict;
}

/** A manifest column by name, case-insensitively, the first name given preferred. */
function column(manifest: Manifest, ...names: string[]): string | undefined {
  for (const name of names) {
    const found = manifest.columns.find((c) => c.toLowerCase() === name);
    if (found) return found;
  }
  return undefined;
}

/** An age in years, or NaN when the cell is empty or not a number. */
function ageOf(cell: string | undefined): number {
  return cell === undefined || cell.trim() === "" ? NaN : Number(cell);
}

/** Children (under 18) and adults when the set has both; else the age bands; "" when unknown. */
export function ageGroupOf(age: string | undefined, childrenAndAdults: boolean): string {
  const a = ageOf(age);
  if (!Number.isFinite(a)) return "";
  if (childrenAndAdults) return a < 18 ? "children (under 18)" : "adults (18 and over)";
  if (a < 18) return "under 18";
  return a < 30 ? "18–29" : a < 45 ? "30–44" : a < 60 ? "45–59" : a < 75 ? "60–74" : "75+";
}

function rate(group: string, called: number, total: number): GroupRate {
  return {
    group,
    called,
    total,
    rate: total ? called / total : 0,
    interval: clopperPearson(called, total),
  };
}

/** Rates per group (groups of at least MIN_GROUP images, unknown values left out). */
function ratesBy(
  rows: readonly { group: string; called: boolean }[],
): GroupRate[] {
  const by = new Map<string, { called: number; total: number }>();
  for (const r of rows) {
    if (!r.group) continue;
    const g = by.get(r.group) ?? { called: 0, total: 0 };
    g.total++;
    if (r.called) g.called++;
    by.set(r.group, g);
  }
  return [...by].filter(([, g]) => g.total >= MIN_GROUP)
    .map(([group, g]) => rate(group, g.called, g.total))
    .sort((a, b) => a.group.localeCompare(b.group));
}

/** The most different pair of groups, Fisher-tested, Bonferroni-adjusted over all pairs. */
function largestDifference(
  groups: readonly GroupRate[],
  within?: string,
): GroupDifference | undefined {
  if (groups.length < 2) return undefined;
  const sorted = [...groups].sort((a, b) => b.rate - a.rate);
  const high = sorted[0], low = sorted.at(-1)!;
  const pairs = (groups.length * (groups.length - 1)) / 2;
  const p = Math.min(
    1,
    pairs *
      fisherExact(high.called, high.total - high.called, low.called, low.total - low.called),
  );
  return { high, low, p, ...(within ? { within } : {}) };
}

/** The significant difference with the smallest p-value among strata, if any. */
function bestWithin(differences: (GroupDifference | undefined)[]): GroupDifference | undefined {
  return differences.filter((d): d is GroupDifference => d !== undefined && d.p < SIGNIFICANCE)
    .sort((a, b) => a.p - b.p)[0];
}

/**
 * The reading of every non-target class of an external set from its predictions and manifest.
 * `rel` maps a prediction to its path in the manifest.
 */
export function readExternalSet(
  predictions: readonly Prediction[],
  classNames: readonly string[],
  opts: {
    manifest?: Manifest;
    rel?: RelPath;
    target?: string;
    testProbe?: readonly ShortcutRate[];
  } = {},
): ClassReading[] {
  const targetIndex = classNames.indexOf(opts.target ?? classNames[0]);
  const target = classNames[targetIndex];
  const manifest = opts.manifest;
  const rel: RelPath = opts.rel ?? ((p) => p.item.relPath);
  const ageColumn = manifest && column(manifest, "age", "age_years", "patient_age");
  const sourceColumn = manifest && column(manifest, "source", "source_repo", "site", "hospital");
  const rowOf = (p: Prediction) => manifest?.rows.get(path.normalize(rel(p)));
  const ages = predictions.map((p) => ageOf(ageColumn ? rowOf(p)?.[ageColumn] : undefined));
  const childrenAndAdults = ages.some((a) => a < 18) && ages.some((a) => a >= 18);
  const readings: ClassReading[] = [];
  for (const [k, className] of classNames.entries()) {
    if (k === targetIndex) continue;
    const ofClass = predictions.filter((p) => p.item.label === k);
    if (ofClass.length === 0) continue;
    const rows = ofClass.map((p) => ({
      age: ageColumn ? ageGroupOf(rowOf(p)?.[ageColumn], childrenAndAdults) : "",
      source: sourceColumn ? (rowOf(p)?.[sourceColumn] ?? "") : "",
      called: p.predicted === targetIndex,
    }));
    const called = rows.filter((r) => r.called).length;
    const overall = rate("all", called, rows.length);
    const byAge = ratesBy(rows.map((r) => ({ group: r.age, called: r.called })));
    const bySource = ratesBy(rows.map((r) => ({ group: r.source, called: r.called })));
    const sources = bySource.map((s) => s.group);
    const ageGroups = byAge.map((a) => a.group);
    // Age compared inside each source (or overall when the set names no sources).
    const ageDifference = sources.length
      ? bestWithin(sources.map((s) =>
        largestDifference(
          ratesBy(
            rows.filter((r) => r.source === s).map((r) => ({ group: r.age, called: r.called })),
          ),
          s,
        )
      ))
      : bestWithin([largestDifference(byAge)]);
    // Source compared inside each age group (or overall when the set has no ages).
    const sourceDifference = ageGroups.length
      ? bestWithin(ageGroups.map((a) =>
        largestDifference(
          ratesBy(
            rows.filter((r) => r.age === a).map((r) => ({ group: r.source, called: r.called })),
          ),
          a,
        )
      ))
      : bestWithin([largestDifference(bySource)]);
    const coincide = sources.length > 1 && ageGroups.length > 1 &&
      sources.every((s) =>
        ratesBy(rows.filter((r) => r.source === s).map((r) => ({ group: r.age, called: r.called })))
          .length <= 1
      );
    const anyDifference = bestWithin([largestDifference(byAge), largestDifference(bySource)]);
    const onTest = opts.testProbe?.find((r) => r.className === className && r.level === "image");
    const test = onTest ? rate("test set", onTest.called, onTest.total) : undefined;
    let verdict: ReadingVerdict;
    if (ageDifference) verdict = "age";
    else if (sourceDifference) verdict = "source";
    else if (coincide && anyDifference) verdict = "age-or-source";
    else if (rows.length < MIN_GROUP) verdict = "cannot-tell";
    else if (overall.rate <= MOSTLY) verdict = "told-apart";
    else if (test && test.rate <= MOSTLY) verdict = "not-carried-over";
    // "Not learnt" needs variation to have been looked at: several age groups or sources.
    else verdict = byAge.length > 1 || bySource.length > 1 ? "not-learnt" : "cannot-tell";
    readings.push({
      className,
      target,
      overall,
      withAge: rows.filter((r) => r.age !== "").length,
      byAge,
      bySource,
      ...(ageDifference ? { ageDifference } : {}),
      ...(sourceDifference ? { sourceDifference } : {}),
      ageAndSourceCoincide: coincide,
      ...(test ? { test } : {}),
      verdict,
    });
  }
  return readings;
}
