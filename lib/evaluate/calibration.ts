/**
 * How sure is the model, and is it right that sure? Pure maths on predictions (no tensors):
 * expected calibration error, Brier score, the calibration diagram's bins, and temperature scaling
 * (Guo et al. 2017, "On Calibration of Modern Neural Networks"): one number T, fitted on the
 * validation split only, that divides the logits; the arg-max, and so every prediction, stays.
 */
import { softmax } from "../maths.ts";

/** One bin of a calibration diagram: predictions whose confidence falls in [lower, upper). */
export interface CalibrationBin {
  lower: number;
  upper: number;
  count: number;
  /** Mean confidence (the top class's probability) of the bin's predictions. */
  confidence: number;
  /** Share of them that are right. */
  accuracy: number;
}

/**
 * Equal-width bins of the top-class probability over [0, 1] (the last bin includes 1), as Guo et
 * al. and torchmetrics' `MulticlassCalibrationError` define them.
 */
export function calibrationBins(
  probabilities: readonly (readonly number[])[],
  labels: readonly number[],
  bins = 10,
): CalibrationBin[] {
  const out = Array.from({ length: bins }, (_, b) => ({
    lower: b / bins,
    upper: (b + 1) / bins,
    count: 0,
    confidence: 0,
    accuracy: 0,
  }));
  probabilities.forEach((p, i) => {
    const top = Math.max(...p);
    const predicted = p.indexOf(top);
    const b = Math.min(bins - 1, Math.floor(top * bins));
    out[b].count++;
    out[b].confidence += top;
    out[b].accuracy += predicted === labels[i] ? 1 : 0;
  });
  for (const b of out) {
    if (b.count > 0) {
      b.confidence /= b.count;
      b.accuracy /= b.count;
    }
  }
  return out;
}

/**
 * Expected calibration error: Σ over bins of (bin size / n) · |accuracy − confidence| (Guo et al.
 * 2017, with 10 equal-width bins of the top-class probability).
 */
export function expectedCalibrationError(
  probabilities: readonly (readonly number[])[],
  labels: readonly number[],
  bins = 10,
): number {
  const n = probabilities.length;
  if (n === 0) throw new Error("expectedCalibrationError: no predictions");
  return calibrationBins(probabilities, labels, bins)
    .reduce((s, b) => s + (b.count / n) * Math.abs(b.accuracy - b.confidence), 0);
}

/**
 * Multi-class Brier score: the mean over images of Σ_k (p_k − [k = label])² (Brier 1950; what
 * scikit-learn's `brier_score_loss` computes for several classes since 1.7). 0 is perfect; always
 * answering 1/K scores 1 − 1/K.
 */
export function brierScore(
  probabilities: readonly (readonly number[])[],
  labels: readonly number[],
): number {
  const n = probabilities.length;
  if (n === 0) throw new Error("brierScore: no predictions");
  let total = 0;
  probabilities.forEach((p, i) => {
    p.forEach((v, k) => total += (v - (k === labels[i] ? 1 : 0)) ** 2);
  });
  return total / n;
}

/** Mean negative log-likelihood of the labels under softmax(logits / temperature). */
export function negativeLogLikelihood(
  logits: readonly (readonly number[])[],
  labels: readonly number[],
  temperature = 1,
): number {
  let total = 0;
  logits.forEach((z, i) => {
    const scaled = z.map((v) => v / temperature);
    const max = Math.max(...scaled);
    const logSum = max + Math.log(scaled.reduce((s, v) => s + Math.exp(v - max), 0));
    total += logSum - scaled[labels[i]];
  });
  return total / logits.length;
}

/** Probabilities softmax(logits / T), row by row. */
export function temperatureProbabilities(
  logits: readonly (readonly number[])[],
  temperature: number,
): number[][] {
  return logits.map((z) => softmax(z.map((v) => v / temperature)));
}

/** A fitted temperature and what it changed on the data it was fitted on. */
export interface TemperatureFit {
  /** 1 when nothing could be fitted (see `notFitted`). */
  temperature: number;
  /** Images it was fitted on. */
  n: number;
  nllBefore: number;
  nllAfter: number;
  /** Why no temperature was fitted (T = 1 kept), when none was. */
  notFitted?: string;
}

/**
 * The temperature T > 0 that minimises the negative log-likelihood of `labels` under
 * softmax(logits / T): a one-dimensional convex problem in log T, solved by golden-section search
 * over T in [0.01, 100].
 *
 * When every prediction is right the likelihood only grows as T → 0 (more certainty is never
 * punished), so there is no minimum to find: T = 1 is kept and `notFitted` says why. A small
 * validation split of a good model is exactly that case.
 */
export function fitTemperature(
  logits: readonly (readonly number[])[],
  labels: readonly number[],
): TemperatureFit {
  if (logits.length === 0) throw new Error("fitTemperature: no predictions to fit on");
  const nllBefore = negativeLogLikelihood(logits, labels, 1);
  const wrong = logits.filter((z, i) => z.indexOf(Math.max(...z)) !== labels[i]).length;
  if (wrong === 0) {
    return {
      temperature: 1,
      n: logits.length,
      nllBefore,
      nllAfter: nllBefore,
      notFitted: `all ${logits.length} predictions are right, so the likelihood has no ` +
        "minimum (it keeps rising as T → 0); T = 1 kept",
    };
  }
  const f = (logT: number) => negativeLogLikelihood(logits, labels, Math.exp(logT));
  let lo = Math.log(0.01), hi = Math.log(100);
  const phi = (Math.sqrt(5) - 1) / 2;
  let a = hi - phi * (hi - lo), b = lo + phi * (hi - lo);
  let fa = f(a), fb = f(b);
  for (let i = 0; i < 100 && hi - lo > 1e-7; i++) {
    if (fa < fb) {
      hi = b;
      b = a;
      fb = fa;
      a = hi - phi * (hi - lo);
      fa = f(a);
    } else {
      lo = a;
      a = b;
      fa = fb;
      b = lo + phi * (hi - lo);
      fb = f(b);
    }
  }
  const temperature = Math.exp((lo + hi) / 2);
  return {
    temperature,
    n: logits.length,
    nllBefore,
    nllAfter: negativeLogLikelihood(logits, labels, temperature),
  };
}

/** Calibration of one set of predictions, before and after a temperature. */
export interface CalibrationSummary {
  n: number;
  eceBefore: number;
  eceAfter: number;
  brierBefore: number;
  brierAfter: number;
  nllBefore: number;
  nllAfter: number;
  /** The calibration diagram's bins (10, equal width) before and after. */
  binsBefore: CalibrationBin[];
  binsAfter: CalibrationBin[];
}

/** ECE, Brier score and NLL of `logits` at temperature 1 and at `temperature`. */
export function calibrationSummary(
  logits: readonly (readonly number[])[],
  labels: readonly number[],
  temperature: number,
): CalibrationSummary {
  const before = temperatureProbabilities(logits, 1);
  const after = temperatureProbabilities(logits, temperature);
  return {
    n: logits.length,
    eceBefore: expectedCalibrationError(before, labels),
    eceAfter: expectedCalibrationError(after, labels),
    brierBefore: brierScore(before, labels),
    brierAfter: brierScore(after, labels),
    nllBefore: negativeLogLikelihood(logits, labels, 1),
    nllAfter: negativeLogLikelihood(logits, labels, temperature),
    binsBefore: calibrationBins(before, labels),
    binsAfter: calibrationBins(after, labels),
  };
}

/**
 * One line saying what a model's probabilities are: temperature-scaled (with T and what it was
 * fitted on) or the softmax as trained, and why.
 */
export function probabilityNote(
  calibration?: { temperature: number; n: number; notFitted?: string },
): string {
  if (!calibration) {
    return "Probabilities: the softmax as trained (the model has no calibration; checkpoints " +
      "trained by this version carry one).";
  }
  if (calibration.notFitted) {
    return `Probabilities: the softmax as trained (no temperature could be fitted: ${calibration.notFitted}).`;
  }
  return `Probabilities are calibrated: softmax(logits / T), T = ${
    calibration.temperature.toFixed(3)
  } fitted on the run's ${calibration.n} validation images (metadata.json); predictions are ` +
    "unchanged by it.";
}
