/**
 * A set's results in the words and files every run, task and notebook uses: the accuracy
 * sentence, the per-class table, the interval table, and the evaluation files (metrics,
 * classification report, predictions, confusion matrix).
 */
import * as path from "node:path";
import { writeFileAtomic, writeJsonAtomic } from "../files.ts";
import { percent } from "../format.ts";
import { softmax } from "../maths.ts";
import { csvText, type Table, table } from "../tables.ts";
import {
  classificationReport,
  clopperPearson,
  type Evaluation,
  type Metrics,
  wilson,
} from "../evaluate/mod.ts";
import { plotConfusionMatrix } from "../figures/mod.ts";

const pct = (v: number, digits = 2) => percent(v, digits);

/** Per-class precision, recall, F1 and support as a table. */
export function metricsTable(m: Metrics, classNames: readonly string[]): Table {
  const row = (name: string, c: Metrics["macro"]) => ({
    class: name,
    precision: c.precision,
    recall: c.recall,
    "F1": c.f1,
    support: c.support,
  });
  return table([
    ...classNames.map((n, k) => row(n, m.perClass[k])),
    row("macro avg", m.macro),
    row("weighted avg", m.weighted),
  ]);
}

/** The accuracy sentence every report and notebook uses. */
export function accuracySentence(m: Metrics): string {
  const ci = m.accuracyInterval;
  return `${pct(m.accuracy)} (${m.correct} of ${m.total} images; 95 % Clopper–Pearson interval ` +
    `${pct(ci.lower, 1)} – ${pct(ci.upper, 1)}). One test image is ${(100 / m.total).toFixed(2)} ` +
    "percentage points.";
}

/** The accuracy with both 95 % intervals, and what one or two images more or fewer would give. */
export function intervalTable(m: Metrics): Table {
  const rows = [-2, -1, 0, 1, 2]
    .map((d) => m.correct + d)
    .filter((k) => k >= 0 && k <= m.total)
    .map((k) => {
      const cp = clopperPearson(k, m.total);
      const w = wilson(k, m.total);
      return {
        correct: `${k} of ${m.total}${k === m.correct ? " ← this run" : ""}`,
        accuracy: pct(k / m.total),
        "95 % Clopper–Pearson": `${pct(cp.lower, 1)} – ${pct(cp.upper, 1)}`,
        "95 % Wilson": `${pct(w.lower, 1)} – ${pct(w.upper, 1)}`,
      };
    });
  return table(rows);
}

/**
 * Write the evaluation files of a set: metrics, report text, predictions, confusion matrix.
 * predictions.csv holds the softmax as trained, `p(class)`, and when the evaluation was
 * temperature-scaled also `calibrated p(class)`, so neither is mistaken for the other.
 */
export async function writeEvaluation(
  dir: string,
  evaluation: Evaluation,
  classNames: readonly string[],
  opts: { prefix?: string; title?: string } = {},
): Promise<void> {
  const p = opts.prefix ?? "";
  await writeJsonAtomic(path.join(dir, `${p}metrics.json`), { classNames, ...evaluation.metrics });
  await writeFileAtomic(
    path.join(dir, `${p}classification_report.txt`),
    classificationReport(evaluation.metrics, classNames),
  );
  const calibrated = evaluation.temperature !== undefined;
  const csv = csvText([
    [
      "file",
      "true",
      "predicted",
      "correct",
      ...classNames.map((c) => `p(${c})`),
      ...(calibrated ? classNames.map((c) => `calibrated p(${c})`) : []),
    ],
    ...evaluation.predictions.map((x) => [
      x.item.relPath,
      classNames[x.item.label],
      classNames[x.predicted],
      x.correct,
      ...softmax(x.logits).map((v) => v.toFixed(6)),
      ...(calibrated ? x.probabilities.map((v) => v.toFixed(6)) : []),
    ]),
  ]);
  await writeFileAtomic(path.join(dir, `${p}predictions.csv`), csv);
  const m = evaluation.metrics;
  await plotConfusionMatrix(m.confusion, classNames, {
    title: opts.title ?? "Confusion matrix (test set)",
    subtitle: `${m.correct} of ${m.total} correct, accuracy ${pct(m.accuracy)}`,
  }).save(path.join(dir, `${p}confusion_matrix`));
}
