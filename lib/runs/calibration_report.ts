/**
 * A run's "How sure is the model?" results: the temperature fitted on the validation split, and
 * ECE, Brier score and NLL before and after it on every set, as a report section and a figure.
 */
import * as path from "node:path";
import { writeJsonAtomic } from "../files.ts";
import { type Table, table } from "../tables.ts";
import type { CalibrationSummary, TemperatureFit } from "../evaluate/mod.ts";
import { plotCalibration } from "../figures/mod.ts";

/** What summary.json keeps of the calibration. */
export interface CalibrationRecord {
  /** The fitted temperature (1 when none could be fitted). */
  temperature: number;
  fittedOn: "validation";
  /** Why no temperature was fitted, when none was. */
  notFitted?: string;
  /** Validation, test and (when evaluated) external, before and after. */
  sets: { name: string; summary: CalibrationSummary }[];
}

/** The calibration record of a fit and the sets it was measured on. */
export function calibrationRecord(
  fit: TemperatureFit,
  sets: { name: string; summary: CalibrationSummary }[],
): CalibrationRecord {
  return {
    temperature: fit.temperature,
    fittedOn: "validation",
    ...(fit.notFitted ? { notFitted: fit.notFitted } : {}),
    sets,
  };
}

/** ECE, Brier score and NLL per set, before → after. */
export function calibrationTable(c: CalibrationRecord): Table {
  const arrow = (a: number, b: number) => `${a.toFixed(3)} → ${b.toFixed(3)}`;
  return table(c.sets.map(({ name, summary: s }) => ({
    set: name,
    images: s.n,
    "ECE": arrow(s.eceBefore, s.eceAfter),
    "Brier score": arrow(s.brierBefore, s.brierAfter),
    "NLL": arrow(s.nllBefore, s.nllAfter),
  })));
}

/** What the temperature says, in words. */
export function temperatureSentence(c: CalibrationRecord): string {
  const validation = c.sets.find((s) => s.name === "validation")?.summary;
  if (c.notFitted) {
    return `No temperature was fitted on the validation split: ${c.notFitted}. The ` +
      "probabilities below are the softmax as trained.";
  }
  const T = c.temperature.toFixed(2);
  const how = c.temperature > 1
    ? "the softmax as trained was surer than its validation accuracy warrants; T > 1 softens it"
    : "the softmax as trained was less sure than its validation accuracy warrants; T < 1 " +
      "sharpens it";
  const edge = c.temperature >= 99
    ? " T is at the edge of the range searched (0.01 – 100): on validation the model's outputs " +
      "were best replaced by equal probabilities, i.e. they carry no usable information."
    : c.temperature <= 0.0101
    ? " T is at the edge of the range searched (0.01 – 100)."
    : "";
  return `Temperature scaling (Guo et al. 2017) divides the logits by one number, fitted on the ` +
    `${validation?.n ?? "?"} validation images only: T = ${T}: ${how}.${edge}`;
}

/** The report section; `files` is the path from the report to the run folder. */
export function calibrationSection(c: CalibrationRecord, opts: { files?: string } = {}): string[] {
  const test = c.sets.find((s) => s.name === "test")?.summary;
  return [
    "## How sure is the model?",
    "",
    temperatureSentence(c),
    "",
    calibrationTable(c).toMarkdown(),
    "",
    `![Calibration diagrams](${opts.files ?? ""}calibration_diagram.svg)`,
    "",
    "- Expected calibration error (ECE): the gap between how sure the model says it is and how " +
    "often it is right, averaged over 10 confidence bins (0 is perfect). Brier score: mean " +
    "squared error of the probabilities (0 perfect; always answering ⅓ scores 0.667). NLL: the " +
    "cross-entropy.",
    "- Scaling never changes a prediction, so accuracy and the confusion matrix stay; it changes " +
    "the probabilities `deno task evaluate` and `deno task predict` report (they read T from " +
    "`best/metadata.json` and say they are calibrated).",
    ...(test
      ? [
        `- On ${test.n} test images one image moves the ECE by up to ${
          (100 / test.n).toFixed(1)
        } points: differences smaller than that are noise. A temperature fitted on ` +
        `${c.sets[0].summary.n} validation images is itself uncertain.`,
      ]
      : []),
    "",
  ];
}

/** Write calibration_diagram.svg|png and calibration.json into the run folder. */
export async function writeCalibration(runDir: string, c: CalibrationRecord): Promise<void> {
  await writeJsonAtomic(path.join(runDir, "calibration.json"), c);
  await plotCalibration(c.sets, c.temperature).save(path.join(runDir, "calibration_diagram"));
}
