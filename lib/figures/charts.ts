/** Charts (Observable Plot): data in, figure out. */
import * as Plot from "@observablehq/plot";
import { percent } from "../format.ts";
import type { ImageStats } from "../data/mod.ts";
import type { Metrics } from "../evaluate/mod.ts";
import type { EpochRecord } from "../train/mod.ts";
import { type Figure, plotFigure } from "./figure.ts";

// ---------------------------------------------------------------------------------------------
// Data set

/** Images per class and split, as grouped bars with the counts written on them. */
export function plotClassCounts(
  counts: { className: string; train: number; test: number }[],
): Figure {
  const rows = counts.flatMap((c) => [
    { className: c.className, split: "train", n: c.train },
    { className: c.className, split: "test", n: c.test },
  ]);
  const total = (s: "train" | "test") => counts.reduce((t, c) => t + c[s], 0);
  return plotFigure("Images per class", {
    width: 560,
    height: 300,
    marginTop: 30,
    fx: { label: null },
    x: { label: null, domain: ["train", "test"] },
    y: { label: "images", grid: true },
    color: { domain: ["train", "test"], range: ["#4e79a7", "#f28e2b"] },
    marks: [
      Plot.barY(rows, { fx: "className", x: "split", y: "n", fill: "split" }),
      Plot.text(rows, { fx: "className", x: "split", y: "n", text: "n", dy: -7 }),
      Plot.ruleY([0]),
    ],
  }, `train ${total("train")}, test ${total("test")}`);
}

/** Stored width × height of every image, one panel per class. */
export function plotImageSizes(stats: ImageStats[]): Figure {
  return plotFigure("Image size as stored (pixels)", {
    width: 760,
    height: 300,
    marginTop: 30,
    fx: { label: null },
    x: { label: "width", grid: true },
    y: { label: "height", grid: true },
    color: { domain: ["train", "test"], range: ["#4e79a7", "#f28e2b"] },
    marks: [
      Plot.dot(stats, { fx: "className", x: "width", y: "height", stroke: "split", r: 2.5 }),
    ],
  }, "blue: train, orange: test");
}

/** How images are stored (format and bands), per class. */
export function plotStorageModes(stats: ImageStats[]): Figure {
  const keys = new Map<string, { className: string; mode: string; n: number }>();
  for (const s of stats) {
    const key = `${s.className}|${s.mode}`;
    const row = keys.get(key) ?? { className: s.className, mode: s.mode, n: 0 };
    row.n++;
    keys.set(key, row);
  }
  const rows = [...keys.values()];
  return plotFigure("Format and colour mode as stored", {
    width: 760,
    height: 260,
    marginLeft: 100,
    marginTop: 30,
    fx: { label: null },
    y: { label: null },
    x: { label: "images", grid: true },
    marks: [
      Plot.barX(rows, { fx: "className", y: "mode", x: "n", fill: "#4e79a7" }),
      Plot.text(rows, { fx: "className", y: "mode", x: "n", text: "n", dx: 10 }),
      Plot.ruleX([0]),
    ],
  }, storageSubtitle(stats));
}

/** The storage modes' subtitle, by what the images are: how many are not plain 8-bit RGB. */
export function storageSubtitle(stats: readonly ImageStats[]): string {
  const other = stats.filter((s) => !/ RGB$/.test(s.mode)).length;
  return other === 0
    ? `all ${stats.length} images are stored as 8-bit RGB`
    : `${other} of ${stats.length} images are not stored as 8-bit RGB (the paper calls every ` +
      "image 3-channel)";
}

// ---------------------------------------------------------------------------------------------
// Training and evaluation

const SPLIT_COLORS = { domain: ["train", "valid"], range: ["#4e79a7", "#e15759"] };

/**
 * Loss and accuracy per epoch, training and validation, with the learning-rate drops marked and
 * the epoch of the best validation loss (the checkpoint kept) circled.
 */
export function plotTrainingCurves(
  history: readonly EpochRecord[],
  opts: { title?: string } = {},
): Figure {
  const rows = (metric: "loss" | "accuracy") =>
    history.flatMap((h) => [
      { epoch: h.epoch, split: "train", value: metric === "loss" ? h.trainLoss : h.trainAccuracy },
      { epoch: h.epoch, split: "valid", value: metric === "loss" ? h.validLoss : h.validAccuracy },
    ]);
  const drops = history.slice(1).filter((h, i) => h.learningRate < history[i].learningRate);
  const best = history.reduce((b, h) => (h.validLoss < b.validLoss ? h : b), history[0]);
  const epochs = history.map((h) => h.epoch);
  const panel = (metric: "loss" | "accuracy"): Plot.PlotOptions => {
    const data = rows(metric);
    const last = data.filter((d) => d.epoch === epochs.at(-1));
    return {
      width: 420,
      height: 280,
      marginRight: 50,
      x: { label: "epoch", ticks: epochs, tickFormat: "d" },
      y: {
        label: metric,
        grid: true,
        ...(metric === "accuracy" ? { domain: [0, 1], tickFormat: "%" } : {}),
      },
      color: SPLIT_COLORS,
      marks: [
        Plot.ruleX(drops, {
          x: (d: EpochRecord) => d.epoch - 0.5,
          stroke: "#999",
          strokeDasharray: "4,3",
        }),
        Plot.text(drops, {
          x: (d: EpochRecord) => d.epoch - 0.5,
          frameAnchor: "top",
          text: (d: EpochRecord) => `lr ${d.learningRate.toExponential(0)}`,
          dy: 4,
          fill: "#777",
        }),
        // z named: with one epoch each series is a single point, and Plot would warn about it.
        Plot.line(data, { x: "epoch", y: "value", stroke: "split", z: "split" }),
        Plot.dot(data, { x: "epoch", y: "value", fill: "split", r: 2.5 }),
        ...(metric === "loss"
          ? [Plot.dot([best], { x: "epoch", y: "validLoss", r: 7, stroke: "black", fill: "none" })]
          : []),
        Plot.text(last, {
          x: "epoch",
          y: "value",
          text: "split",
          dx: 8,
          textAnchor: "start",
          fill: "split",
        }),
      ],
    };
  };
  return plotFigure(
    opts.title ?? "Training curves",
    [panel("loss"), panel("accuracy")],
    `circle: lowest validation loss (epoch ${best.epoch}, the checkpoint kept); dashed: learning-rate drops`,
  );
}

/** Counts of true class (rows) × predicted class (columns), with the counts written in. */
export function plotConfusionMatrix(
  confusion: readonly number[][],
  classNames: readonly string[],
  opts: { title?: string; subtitle?: string } = {},
): Figure {
  const cells = confusion.flatMap((row, t) =>
    row.map((n, p) => ({ truth: classNames[t], predicted: classNames[p], n, diagonal: t === p }))
  );
  const max = Math.max(1, ...cells.map((c) => c.n));
  return plotFigure(opts.title ?? "Confusion matrix", {
    width: 460,
    height: 360,
    marginLeft: 120,
    marginBottom: 50,
    padding: 0.05,
    x: { label: "predicted", domain: [...classNames] },
    y: { label: "true", domain: [...classNames] },
    color: { type: "linear", domain: [0, max], range: ["#f4f6fb", "#2b5c8a"] },
    marks: [
      Plot.cell(cells, { x: "predicted", y: "truth", fill: "n", inset: 0.5 }),
      Plot.text(cells, {
        x: "predicted",
        y: "truth",
        text: "n",
        fontSize: 16,
        fontWeight: "bold",
        fill: (d: { n: number }) => (d.n > max / 2 ? "white" : "black"),
      }),
    ],
  }, opts.subtitle);
}

/** Test accuracy of every seed with its 95 % interval, the mean marked. */
export function plotSeedSpread(
  runs: readonly { config: { seed: number }; test: Metrics }[],
  opts: { paper?: number } = {},
): Figure {
  const rows = runs.map((r) => ({
    seed: String(r.config.seed),
    accuracy: r.test.accuracy,
    lower: r.test.accuracyInterval.lower,
    upper: r.test.accuracyInterval.upper,
  }));
  const mean = rows.reduce((s, r) => s + r.accuracy, 0) / rows.length;
  const paper = opts.paper ?? 64 / 66;
  return plotFigure("Test accuracy by seed, with 95 % Clopper–Pearson intervals", {
    width: 560,
    height: 60 + 34 * rows.length,
    marginLeft: 60,
    x: { label: "test accuracy", domain: [0, 1], tickFormat: "%", grid: true },
    y: { label: "seed", domain: rows.map((r) => r.seed) },
    marks: [
      Plot.ruleX([paper], { stroke: "#e15759", strokeDasharray: "4,3" }),
      Plot.ruleX([mean], { stroke: "#555" }),
      Plot.link(rows, {
        x1: "lower",
        x2: "upper",
        y1: "seed",
        y2: "seed",
        stroke: "#4e79a7",
        strokeWidth: 2,
      }),
      Plot.dot(rows, { x: "accuracy", y: "seed", fill: "#4e79a7", r: 4 }),
      Plot.text([paper], {
        x: (d: number) => d,
        frameAnchor: "top",
        text: () => "paper",
        dy: -2,
        fill: "#e15759",
      }),
    ],
  }, `grey line: mean over seeds ${percent(mean)}; red dashed: the paper's 96.97 %`);
}

/**
 * Which input pixels a 3×3 stride-2 kernel reads in each convention, on an 8×8 input: torchvision
 * pads 1 pixel on every side; Keras (TensorFlow's "same" for stride 2 and even sizes) pads only
 * after. The first and the last window of each are drawn, with their centres: torchvision's
 * kernels centre on pixels 0, 2, 4, 6, Keras's on 1, 3, 5, 7 — one pixel apart.
 */
export function plotPaddingConventions(opts: { size?: number } = {}): Figure {
  const n = opts.size ?? 8;
  const panel = (title: string, before: number, after: number): Plot.PlotOptions => {
    const cells: { x: number; y: number; kind: string }[] = [];
    for (let y = -before; y < n + after; y++) {
      for (let x = -before; x < n + after; x++) {
        const pad = x < 0 || y < 0 || x >= n || y >= n;
        cells.push({ x, y, kind: pad ? "zero padding" : "image pixel" });
      }
    }
    // Window k starts at 2k − before (in image coordinates); outputs: (n + before + after − 3) / 2 + 1.
    const outputs = Math.floor((n + before + after - 3) / 2) + 1;
    const windows = [0, outputs - 1].map((k, i) => ({
      x1: 2 * k - before - 0.5,
      x2: 2 * k - before + 2.5,
      y1: 2 * k - before - 0.5,
      y2: 2 * k - before + 2.5,
      cx: 2 * k - before + 1,
      label: i === 0 ? "first window" : "last window",
    }));
    return {
      width: 300,
      height: 320,
      marginTop: 40,
      x: { domain: [-1.7, n + 0.7], axis: null },
      y: { domain: [n + 0.7, -1.7], axis: null },
      color: { domain: ["zero padding", "image pixel"], range: ["#d9d9d9", "#ffffff"] },
      marks: [
        Plot.rect(cells, {
          x1: (d: { x: number }) => d.x - 0.5,
          x2: (d: { x: number }) => d.x + 0.5,
          y1: (d: { y: number }) => d.y - 0.5,
          y2: (d: { y: number }) => d.y + 0.5,
          fill: "kind",
          stroke: "#999",
        }),
        Plot.rect(windows, {
          x1: "x1",
          x2: "x2",
          y1: "y1",
          y2: "y2",
          stroke: "#e15759",
          strokeWidth: 3,
          fill: "#e15759",
          fillOpacity: 0.15,
        }),
        Plot.dot(windows, { x: "cx", y: "cx", fill: "#e15759", r: 4 }),
        Plot.text([title], { frameAnchor: "top", dy: -28, fontWeight: "bold", fontSize: 12 }),
        Plot.text([`pads ${before} before, ${after} after; ${outputs}×${outputs} outputs`], {
          frameAnchor: "top",
          dy: -14,
          fill: "#555",
        }),
      ],
    };
  };
  return plotFigure(
    `A 3×3 stride-2 kernel on an ${n}×${n} image`,
    [panel("torchvision (the paper's)", 1, 1), panel('Keras / TensorFlow "same"', 0, 1)],
    "gray: zero padding; red: the first and last window, dot: its centre pixel",
  );
}
