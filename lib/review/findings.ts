/**
 * The review's close: one sentence per finding, each chosen by a rule on numbers computed for the
 * run reviewed (and its data), never written for one data set. What a finding cannot be computed
 * for (no sweep, no external set) is said to be missing, not assumed.
 */
import * as path from "node:path";
import { percent } from "../format.ts";
import {
  type CalibrationRecord,
  compareOutcomes,
  comparisonSentence,
  type ExternalSummary,
  type FinishedRun,
  leakageFinding,
  type LeakageSummary,
  readingText,
  runOutcomes,
  type SweepResult,
} from "../runs/mod.ts";
import type { ComparedModel } from "./review.ts";

/** What the review computed for one run. */
export interface ReviewEvidence {
  run: FinishedRun;
  leakage?: LeakageSummary;
  /** The reviewed run, as the reference of the paired comparisons. */
  reviewed?: ComparedModel;
  borderOnly?: ComparedModel;
  lungOnly?: ComparedModel;
  metadata?: ComparedModel;
  majority?: ComparedModel;
  sweep?: SweepResult;
  external?: ExternalSummary;
  calibration?: CalibrationRecord;
}

const pct = (v: number) => percent(v);
const P = 0.05;

function compare(a: ComparedModel, b: ComparedModel) {
  return a.outcomes && b.outcomes
    ? compareOutcomes(a.outcomes, b.outcomes, [a.model, b.model])
    : undefined;
}

/** The test accuracy and what its size allows. */
function accuracyFinding(run: FinishedRun): string {
  const t = run.summary.test;
  return `On its ${t.total} test images the run is right on ${t.correct} (${pct(t.accuracy)}; ` +
    `95 % interval ${pct(t.accuracyInterval.lower)} – ${pct(t.accuracyInterval.upper)}): one ` +
    `image moves it by ${(100 / t.total).toFixed(1)} points.`;
}

/** Do non-medical cues (the files' look) predict the class better than the largest class? */
function metadataFinding(metadata: ComparedModel, majority: ComparedModel): string {
  const c = compare(metadata, majority);
  const facts = `A classifier that sees only ${metadata.sees} is right on ` +
    `${metadata.metrics.correct} of ${metadata.metrics.total} (${
      pct(metadata.metrics.accuracy)
    }); always answering the largest class, ${pct(majority.metrics.accuracy)}`;
  if (!c) return `${facts}.`;
  if (c.mcnemarP < P && c.difference > 0) {
    return `${facts} (McNemar p ${
      c.mcnemarP < 0.001 ? "< 0.001" : `= ${c.mcnemarP.toFixed(3)}`
    }): ` +
      "the classes differ in how their files look, so a score on them need not come from the " +
      "lungs.";
  }
  return `${facts}: not measurably better (McNemar p = ${c.mcnemarP.toFixed(3)}), so the files' ` +
    "look does not give the classes away here.";
}

/** Does a model that never sees (or only sees) the lung field do as well as the full one? */
function maskFinding(reviewed: ComparedModel, masked: ComparedModel, kind: "border" | "lung") {
  const c = compare(reviewed, masked);
  if (!c) {
    return `The ${kind}-only model is right on ${pct(masked.metrics.accuracy)}, the reviewed ` +
      `run on ${pct(reviewed.metrics.accuracy)} (no per-image predictions to pair them).`;
  }
  const base = comparisonSentence(c, ["the whole-image model", `the ${kind}-only model`]);
  if (kind === "border") {
    return c.mcnemarP < P && c.difference > 0
      ? `${base} Seeing the lung field adds something measurable.`
      : `${base} So the whole-image accuracy cannot be credited to the lung field: the border ` +
        "alone does not do measurably worse.";
  }
  return c.mcnemarP < P && c.difference > 0
    ? `${base} Seeing only the lung field costs accuracy: part of what the full model uses lies ` +
      "outside it."
    : `${base} Seeing only the lung field loses nothing measurable.`;
}

/** How far the seed alone moves the result, and whether the extremes differ beyond chance. */
function sweepFinding(sweep: SweepResult): string {
  const accs = sweep.runs.map((r) => r.test.accuracy);
  const best = sweep.runs[accs.indexOf(Math.max(...accs))];
  const worst = sweep.runs[accs.indexOf(Math.min(...accs))];
  const head = `Over ${sweep.runs.length} seeds the same recipe gives ${pct(Math.min(...accs))} ` +
    `to ${pct(Math.max(...accs))} (sd ${(100 * sweep.summary.accuracy.sd).toFixed(1)} points).`;
  if (best === worst) return head;
  try {
    const find = (s: typeof best) =>
      runOutcomes({
        runDir: path.join(sweep.sweepDir, `seed${s.config.seed}`),
        summary: s,
        history: s.history,
        bestDir: "",
      });
    const c = compareOutcomes(find(best), find(worst), ["best", "worst"]);
    return `${head} Best against worst seed on the same images: ${
      c.mcnemarP < P
        ? `McNemar p ${c.mcnemarP < 0.001 ? "< 0.001" : `= ${c.mcnemarP.toFixed(3)}`}, more ` +
          "than chance: the seed alone changes what the model learns."
        : `McNemar p = ${c.mcnemarP.toFixed(3)}, within chance on these images.`
    }`;
  } catch {
    return head;
  }
}

/** Does temperature scaling, fitted on validation, help on test and on the external set? */
function calibrationFinding(c: CalibrationRecord): string | undefined {
  if (c.notFitted) return `No temperature could be fitted (${c.notFitted}).`;
  const test = c.sets.find((s) => s.name === "test")?.summary;
  const ext = c.sets.find((s) => s.name === "external")?.summary;
  if (!test) return undefined;
  const move = (before: number, after: number) =>
    `${before.toFixed(3)} → ${after.toFixed(3)} (${after < before ? "better" : "worse"})`;
  let line = `Temperature scaling (T = ${c.temperature.toFixed(2)}, fitted on validation) moves ` +
    `the test set's expected calibration error ${move(test.eceBefore, test.eceAfter)}`;
  if (ext) {
    line += ` and the external set's ${move(ext.eceBefore, ext.eceAfter)}`;
    if (ext.eceAfter > ext.eceBefore && test.eceAfter <= test.eceBefore) {
      line += ": a calibration fitted on the training sources does not carry over";
    }
  }
  return `${line}.`;
}

/** The shortcut findings: the files' look against the largest class, the masked models. */
export function shortcutFindings(
  e: Pick<ReviewEvidence, "reviewed" | "borderOnly" | "lungOnly" | "metadata" | "majority">,
): string[] {
  const lines: string[] = [];
  if (e.metadata && e.majority) lines.push(metadataFinding(e.metadata, e.majority));
  if (e.reviewed && e.borderOnly) lines.push(maskFinding(e.reviewed, e.borderOnly, "border"));
  if (e.reviewed && e.lungOnly) lines.push(maskFinding(e.reviewed, e.lungOnly, "lung"));
  return lines;
}

/** The findings, one per line, each from a number computed for this run. */
export function reviewFindings(e: ReviewEvidence): string[] {
  const lines = [accuracyFinding(e.run)];
  if (e.leakage) lines.push(leakageFinding(e.run.summary.test, e.leakage));
  lines.push(...shortcutFindings(e));
  lines.push(
    e.sweep
      ? sweepFinding(e.sweep)
      : "No seed sweep with these settings: how far the seed alone moves the result is not " +
        "measured for this run.",
  );
  if (e.external) {
    const [stored] = e.external.passes;
    lines.push(
      `On ${stored.metrics.total} X-rays from elsewhere (${e.external.folder}) it is right on ` +
        `${stored.metrics.correct} (${pct(stored.metrics.accuracy)}).`,
    );
    for (const r of stored.readings ?? []) lines.push(readingText(r));
  } else {
    lines.push("No external set: how the model does on X-rays from elsewhere is not measured.");
  }
  const calibration = e.calibration && calibrationFinding(e.calibration);
  if (calibration) lines.push(calibration);
  return lines;
}
