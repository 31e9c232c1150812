/**
 * The review's charts of what happens outside the data set and how sure the model is: calibration
 * diagrams, predictions broken down by a manifest column, and the shortcut probe's rates.
 */
import * as Plot from "@observablehq/plot";
import { percent } from "../format.ts";
import type {
  BreakdownRow,
  CalibrationSummary,
  RocAnalysis,
  ShortcutRate,
} from "../evaluate/mod.ts";
import { type Figure, plotFigure } from "./figure.ts";

const BEFORE_AFTER = { domain: ["T = 1", "calibrated"], range: ["#e15759", "#4e79a7"] };

/**
 * Calibration diagrams, one panel per set: mean confidence against accuracy per confidence bin,
 * before (T = 1) and after temperature scaling; dots sized by how many images the bin holds. On
 * the diagonal a model is exactly as sure as it is right; below it, surer than right.
 */
export function plotCalibration(
  sets: readonly { name: string; summary: CalibrationSummary }[],
  temperature: number,
): Figure {
  const panels = sets.map(({ name, summary }) => {
    const points = [
      ...summary.binsBefore.map((b) => ({ ...b, when: "T = 1" })),
      ...summary.binsAfter.map((b) => ({ ...b, when: "calibrated" })),
    ].filter((b) => b.count > 0);
    return {
      width: 260,
      height: 280,
      marginTop: 52,
      marginLeft: 46,
      x: { label: "confidence", domain: [0, 1], grid: true },
      y: { label: "accuracy", domain: [0, 1], grid: true },
      r: { range: [2, 9], domain: [0, summary.n] },
      color: BEFORE_AFTER,
      marks: [
        Plot.link([0], { x1: 0, y1: 0, x2: 1, y2: 1, stroke: "#aaa", strokeDasharray: "4,3" }),
        Plot.line(points, { x: "confidence", y: "accuracy", stroke: "when", z: "when" }),
        Plot.dot(points, {
          x: "confidence",
          y: "accuracy",
          r: "count",
          fill: "when",
          fillOpacity: 0.8,
        }),
        Plot.text([name], { frameAnchor: "top-left", dy: -40, fontWeight: "bold" }),
        Plot.text([
          `${summary.n} images · ECE ${summary.eceBefore.toFixed(3)} → ${
            summary.eceAfter.toFixed(3)
          }`,
        ], { frameAnchor: "top-left", dy: -27, fill: "#555" }),
      ],
    } satisfies Plot.PlotOptions;
  });
  return plotFigure(
    "Calibration: how sure against how often right",
    panels,
    `red: softmax as trained (T = 1); blue: temperature-scaled (T = ${
      temperature.toFixed(2)
    }, fitted on validation only); dot size: images in the bin`,
  );
}

const PALETTE = [
  ["#e15759", "red"],
  ["#4e79a7", "blue"],
  ["#f28e2b", "orange"],
  ["#76b7b2", "teal"],
  ["#59a14f", "green"],
];

/** Colours for predicted classes in class order (Covid red, Normal blue, Viral Pneumonia orange). */
function classColors(classNames: readonly string[]) {
  return {
    domain: [...classNames],
    range: classNames.map((_, k) => PALETTE[k % PALETTE.length][0]),
  };
}

/** "red: Covid, blue: Normal, orange: Viral Pneumonia". */
function colorKey(classNames: readonly string[]): string {
  return classNames.map((c, k) => `${PALETTE[k % PALETTE.length][1]}: ${c}`).join(", ");
}

/**
 * What the images of each group (one value of a manifest column × one true class) were predicted
 * as, as stacked shares; the group's size and correct share written beside it.
 */
export function plotBreakdown(
  rows: readonly BreakdownRow[],
  classNames: readonly string[],
  opts: { title?: string; subtitle?: string } = {},
): Figure {
  const label = (r: BreakdownRow) => `${r.value} · ${r.className} (${r.images})`;
  const bars = rows.flatMap((r) =>
    r.predicted.map((n, k) => ({
      group: label(r),
      predicted: classNames[k],
      share: n / r.images,
    }))
  ).filter((b) => b.share > 0);
  const longest = Math.max(...rows.map((r) => label(r).length));
  return plotFigure(opts.title ?? `Predictions by ${rows[0]?.column ?? "group"}`, {
    width: 760,
    height: 50 + 24 * rows.length,
    marginLeft: Math.min(360, 12 + 6.2 * longest),
    marginRight: 90,
    x: {
      label: "share of the group's images, by predicted class",
      domain: [0, 1],
      tickFormat: "%",
    },
    y: { label: null, domain: rows.map(label) },
    color: classColors(classNames),
    marks: [
      Plot.barX(bars, { y: "group", x: "share", fill: "predicted", order: classNames as string[] }),
      Plot.text(rows, {
        y: label,
        x: 1,
        text: (r: BreakdownRow) => `${percent(r.correct / r.images, 0)} right`,
        textAnchor: "start",
        dx: 4,
      }),
    ],
  }, opts.subtitle ?? `predicted as ${colorKey(classNames)}`);
}

/**
 * The shortcut probe: for each set and class, the share of its images called the target class
 * (Covid), with its 95 % Clopper–Pearson interval.
 */
export function plotShortcutProbe(
  sets: readonly { name: string; probe: readonly ShortcutRate[] }[],
  opts: { target?: string } = {},
): Figure {
  const rows = sets.flatMap(({ name, probe }) =>
    probe.map((r) => ({
      line: `${name} · ${r.className}${r.level === "patient" ? " (per patient)" : ""}`,
      rate: r.rate,
      lower: r.interval.lower,
      upper: r.interval.upper,
      text: `${r.called} of ${r.total}`,
    }))
  );
  const target = opts.target ?? "Covid";
  return plotFigure(`Called "${target}" though not ${target}`, {
    width: 760,
    height: 50 + 26 * rows.length,
    marginLeft: 330,
    marginRight: 70,
    x: { label: `share called ${target}`, domain: [0, 1], tickFormat: "%", grid: true },
    y: { label: null, domain: rows.map((r) => r.line) },
    marks: [
      Plot.link(rows, {
        x1: "lower",
        x2: "upper",
        y1: "line",
        y2: "line",
        stroke: "#e15759",
        strokeWidth: 2,
      }),
      Plot.dot(rows, { x: "rate", y: "line", fill: "#e15759", r: 4 }),
      Plot.text(rows, { x: 1, y: "line", text: "text", textAnchor: "start", dx: 6 }),
    ],
  }, "dot: share; line: 95 % Clopper–Pearson interval");
}

const CLASS_COLORS = ["#e15759", "#4e79a7", "#59a14f", "#f28e2b", "#b07aa1", "#76b7b2"];

/**
 * ROC curves, one class against the rest, with each class's AUC and its 95 % interval in the
 * subtitle (the chart has no legend: Plot's legends are HTML).
 */
export function plotRoc(roc: RocAnalysis, opts: { title?: string } = {}): Figure {
  const names = roc.perClass.map((c) => c.className);
  const points = roc.perClass.flatMap((c) =>
    c.curve.map((p) => ({
      className: c.className,
      fpr: p.falsePositiveRate,
      tpr: p.truePositiveRate,
    }))
  );
  const auc = (a: number, lo: number, hi: number) =>
    `${a.toFixed(3)} (${lo.toFixed(3)}–${hi.toFixed(3)})`;
  return plotFigure(
    opts.title ?? "ROC curves, one class against the rest",
    {
      width: 420,
      height: 400,
      marginTop: 20,
      x: { label: "false-positive rate (1 − specificity)", domain: [0, 1], grid: true },
      y: { label: "true-positive rate (sensitivity)", domain: [0, 1], grid: true },
      color: { domain: names, range: CLASS_COLORS.slice(0, names.length) },
      marks: [
        Plot.link([0], { x1: 0, y1: 0, x2: 1, y2: 1, stroke: "#aaa", strokeDasharray: "4,3" }),
        Plot.line(points, {
          x: "fpr",
          y: "tpr",
          stroke: "className",
          z: "className",
          curve: "step-after",
        }),
        Plot.text(roc.perClass, {
          x: 0.98,
          y: (_: unknown, i: number) => 0.06 + 0.07 * (roc.perClass.length - 1 - i),
          text: (c: (typeof roc.perClass)[number]) =>
            `${c.className}: AUC ${auc(c.auc, c.interval.lower, c.interval.upper)}`,
          fill: (c: (typeof roc.perClass)[number]) => c.className,
          textAnchor: "end",
        }),
      ],
    },
    `macro AUC ${
      auc(roc.macro.auc, roc.macro.interval.lower, roc.macro.interval.upper)
    }; 95 % DeLong intervals; ${roc.perClass[0]?.positives + roc.perClass[0]?.negatives} images`,
  );
}
