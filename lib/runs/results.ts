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
  type DiagnosticSummary,
  diagnosticSummary,
  type Evaluation,
  type Metrics,
  type Proportion,
  wilson,
} from "../evaluate/mod.ts";
import { plotConfusionMatrix, plotRoc } from "../figures/mod.ts";

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
    `${pct(ci.lower, 1)} – ${pct(ci.upper, 1)}). One image is ${(100 / m.total).toFixed(2)} ` +
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
 * Write the evaluation files of a set: metrics (with ROC/AUC and sensitivity, specificity, PPV
 * and NPV per class), report text, predictions, confusion matrix, ROC curves. predictions.csv
 * holds the softmax as trained, `p(class)`, and when the evaluation was temperature-scaled also
 * `calibrated p(class)`, so neither is mistaken for the other.
 *
 * @returns the diagnostic summary written into metrics.json.
 */
export async function writeEvaluation(
  dir: string,
  evaluation: Evaluation,
  classNames: readonly string[],
  opts: { prefix?: string; title?: string; prevalence?: number } = {},
): Promise<DiagnosticSummary> {
  const p = opts.prefix ?? "";
  const { summary: diagnostics, roc } = diagnosticSummary(
    evaluation.predictions,
    evaluation.metrics.confusion,
    classNames,
    { prevalence: opts.prevalence },
  );
  await writeJsonAtomic(path.join(dir, `${p}metrics.json`), {
    classNames,
    ...evaluation.metrics,
    diagnostics,
    rocCurves: roc.perClass.map((c) => ({
      className: c.className,
      // JSON has no infinity: the curve's first point has no threshold.
      points: c.curve.map((pt) => ({
        threshold: Number.isFinite(pt.threshold) ? pt.threshold : null,
        fpr: pt.falsePositiveRate,
        tpr: pt.truePositiveRate,
      })),
    })),
  });
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
  if (roc.perClass.length > 0) {
    await plotRoc(roc, {
      title: (opts.title ?? "Confusion matrix (test set)").replace(
        "Confusion matrix",
        "ROC curves",
      ),
    }).save(path.join(dir, `${p}roc`));
  }
  return diagnostics;
}

/** "0.912 (0.850–0.974)". */
function withInterval(value: number, lower: number, upper: number, digits = 3): string {
  return `${value.toFixed(digits)} (${lower.toFixed(digits)}–${upper.toFixed(digits)})`;
}

/** "92.3 % (74.9 %–99.1 %)". */
function percentWithInterval(value: number, i: { lower: number; upper: number }): string {
  return `${pct(value, 1)} (${pct(i.lower, 1)}–${pct(i.upper, 1)})`;
}

/** "92.3 % (24/26; 74.9–99.1)". */
function proportionText(p: Proportion): string {
  return `${pct(p.value, 1)} (${p.k}/${p.n}; ${pct(p.interval.lower, 1)}–${
    pct(p.interval.upper, 1)
  })`;
}

/**
 * One row per class, one against the rest: AUC with its DeLong interval; sensitivity,
 * specificity, PPV and NPV with exact intervals (PPV and NPV at the set's own prevalence, and at
 * the stated one when the summary has it); then the macro AUC.
 */
export function diagnosticsTable(d: DiagnosticSummary): Table {
  const at = d.prevalence;
  const rows: Record<string, string>[] = d.classes.map((c) => {
    const auc = d.auc.find((a) => a.className === c.className);
    return {
      class: c.className,
      "share of images": pct(c.prevalence, 1),
      "AUC (95 % DeLong)": auc ? withInterval(auc.auc, auc.lower, auc.upper) : "—",
      sensitivity: proportionText(c.sensitivity),
      specificity: proportionText(c.specificity),
      "PPV at that share": proportionText(c.ppv),
      "NPV at that share": proportionText(c.npv),
      ...(at !== undefined && c.atPrevalence
        ? {
          [`PPV at ${pct(at, 1)}`]: percentWithInterval(
            c.atPrevalence.ppv,
            c.atPrevalence.ppvInterval,
          ),
          [`NPV at ${pct(at, 1)}`]: percentWithInterval(
            c.atPrevalence.npv,
            c.atPrevalence.npvInterval,
          ),
        }
        : {}),
    };
  });
  rows.push({
    class: "macro average",
    "AUC (95 % DeLong)": withInterval(d.macroAuc.auc, d.macroAuc.lower, d.macroAuc.upper),
  });
  return table(rows);
}

/**
 * What the diagnostic table cannot say on its own: the per-class prevalences differ from any
 * clinical population's, and a prevalence-specific reading needs `--prevalence`.
 */
export function diagnosticsNotes(d: DiagnosticSummary): string[] {
  const notes = [
    "Each class is read against the other two together (one against the rest). Sensitivity, " +
    "specificity and predictive values have exact (Clopper–Pearson) 95 % intervals; the AUCs " +
    "DeLong's, from the probabilities in predictions.csv.",
  ];
  if (d.prevalence !== undefined) {
    notes.push(
      `At a prevalence of ${
        pct(d.prevalence, 1)
      }, PPV and NPV follow from the sensitivity and specificity by Bayes' rule; their ranges ` +
        "come from those two intervals' bounds.",
    );
  } else {
    notes.push(
      "PPV and NPV are at this set's own class shares, which no clinic shares: " +
        "`--prevalence 0.05` adds them at 5 % (or any other share).",
    );
  }
  if (d.auc.some((a) => a.auc === 1 || a.auc === 0)) {
    notes.push(
      "An AUC of exactly 1 (or 0) has no spread under DeLong's method: its interval is that " +
        "single value, however few the images.",
    );
  }
  return notes;
}
