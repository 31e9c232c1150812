/**
 * The numbers a diagnostic-accuracy reader looks for, one class against the rest: sensitivity and
 * specificity with exact (Clopper–Pearson) intervals, and the predictive values — at the test
 * set's own prevalence, and at a prevalence the reader states (a screening population is not a
 * test set with 39 % Covid). Pure maths on a confusion matrix.
 */
import { clopperPearson, type ConfusionMatrix, type Interval } from "./metrics.ts";
import { type RocAnalysis, rocAnalysis } from "./roc.ts";
import type { Prediction } from "./evaluate.ts";

export interface Proportion {
  value: number;
  /** Numerator and denominator it was measured on. */
  k: number;
  n: number;
  interval: Interval;
}

export interface PredictiveValues {
  prevalence: number;
  ppv: number;
  npv: number;
  /**
   * At a stated prevalence: from the sensitivity's and specificity's interval bounds (PPV and NPV
   * rise with both), so at least as wide as each alone.
   */
  ppvInterval: { lower: number; upper: number };
  npvInterval: { lower: number; upper: number };
}

export interface ClassDiagnostics {
  className: string;
  sensitivity: Proportion;
  specificity: Proportion;
  /** At the test set's prevalence: precision and its complement's analogue, exact intervals. */
  ppv: Proportion;
  npv: Proportion;
  /** The class's share of the images evaluated. */
  prevalence: number;
  /** At the prevalence the reader gave (`--prevalence`), when given. */
  atPrevalence?: PredictiveValues;
}

function proportion(k: number, n: number, level: number): Proportion {
  return { value: n ? k / n : 0, k, n, interval: clopperPearson(k, n, level) };
}

/** PPV and NPV of a test with this sensitivity and specificity at `prevalence` (Bayes). */
export function predictiveValues(
  sensitivity: number,
  specificity: number,
  prevalence: number,
): { ppv: number; npv: number } {
  const tp = sensitivity * prevalence, fp = (1 - specificity) * (1 - prevalence);
  const tn = specificity * (1 - prevalence), fn = (1 - sensitivity) * prevalence;
  return { ppv: tp + fp > 0 ? tp / (tp + fp) : 0, npv: tn + fn > 0 ? tn / (tn + fn) : 0 };
}

/** Every class against the rest: sensitivity, specificity, PPV, NPV (and at `prevalence`). */
export function classDiagnostics(
  confusion: ConfusionMatrix,
  classNames: readonly string[],
  opts: { prevalence?: number; level?: number } = {},
): ClassDiagnostics[] {
  const level = opts.level ?? 0.95;
  const total = confusion.reduce((s, row) => s + row.reduce((t, v) => t + v, 0), 0);
  return classNames.map((className, k) => {
    const tp = confusion[k][k];
    const fn = confusion[k].reduce((s, v) => s + v, 0) - tp;
    const fp = confusion.reduce((s, row) => s + row[k], 0) - tp;
    const tn = total - tp - fn - fp;
    const sensitivity = proportion(tp, tp + fn, level);
    const specificity = proportion(tn, tn + fp, level);
    const out: ClassDiagnostics = {
      className,
      sensitivity,
      specificity,
      ppv: proportion(tp, tp + fp, level),
      npv: proportion(tn, tn + fn, level),
      prevalence: total ? (tp + fn) / total : 0,
    };
    if (opts.prevalence !== undefined) {
      const at = predictiveValues(sensitivity.value, specificity.value, opts.prevalence);
      const low = predictiveValues(
        sensitivity.interval.lower,
        specificity.interval.lower,
        opts.prevalence,
      );
      const high = predictiveValues(
        sensitivity.interval.upper,
        specificity.interval.upper,
        opts.prevalence,
      );
      out.atPrevalence = {
        prevalence: opts.prevalence,
        ...at,
        ppvInterval: { lower: low.ppv, upper: high.ppv },
        npvInterval: { lower: low.npv, upper: high.npv },
      };
    }
    return out;
  });
}

/** What metrics.json and summary.json keep of the ROC and diagnostic analysis of one set. */
export interface DiagnosticSummary {
  /** One class against the rest, from the probabilities the evaluation reports. */
  auc: {
    className: string;
    auc: number;
    lower: number;
    upper: number;
    positives: number;
    negatives: number;
  }[];
  macroAuc: { auc: number; lower: number; upper: number };
  /** How the AUC intervals were computed. */
  aucMethod: "delong";
  classes: ClassDiagnostics[];
  /** The prevalence the reader gave for PPV/NPV, when given. */
  prevalence?: number;
}

/**
 * ROC analysis and sensitivity/specificity/PPV/NPV of one evaluated set. The ROC uses the
 * probabilities the evaluation reports (temperature-scaled when the run fitted a temperature).
 */
export function diagnosticSummary(
  predictions: readonly Prediction[],
  confusion: ConfusionMatrix,
  classNames: readonly string[],
  opts: { prevalence?: number } = {},
): { summary: DiagnosticSummary; roc: RocAnalysis } {
  const roc = rocAnalysis(
    predictions.map((p) => p.item.label),
    predictions.map((p) => p.probabilities),
    classNames,
  );
  return {
    roc,
    summary: {
      auc: roc.perClass.map((c) => ({
        className: c.className,
        auc: c.auc,
        lower: c.interval.lower,
        upper: c.interval.upper,
        positives: c.positives,
        negatives: c.negatives,
      })),
      macroAuc: {
        auc: roc.macro.auc,
        lower: roc.macro.interval.lower,
        upper: roc.macro.interval.upper,
      },
      aucMethod: "delong",
      classes: classDiagnostics(confusion, classNames, opts),
      ...(opts.prevalence !== undefined ? { prevalence: opts.prevalence } : {}),
    },
  };
}
