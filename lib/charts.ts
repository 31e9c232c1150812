/**
 * Figures: data in, figure out. Charts are Observable Plot SVG (rendered with a linkedom
 * `document`, since Deno has no DOM); image grids are PNG composited by sharp. A {@link Figure}
 * shows itself inline in a Jupyter notebook and writes itself to files: the same object either way.
 */
import * as Plot from "@observablehq/plot";
import { parseHTML } from "linkedom";
import { encodeBase64, escapeMarkup } from "./encoding.ts";
import { svgToPng } from "./images.ts";
import { writeFileAtomic } from "./files.ts";
import type { ImageStats } from "./dataset.ts";
import type { EpochRecord } from "./train.ts";

/** A figure: SVG (charts) or PNG (image grids), displayable in Jupyter and savable to disk. */
export class Figure {
  constructor(
    readonly title: string,
    readonly content: { svg: string } | { png: Uint8Array },
  ) {}

  get svg(): string | undefined {
    return "svg" in this.content ? this.content.svg : undefined;
  }

  /** The Deno Jupyter kernel calls this to display the object inline. */
  [Symbol.for("Jupyter.display")](): Record<string, string> {
    return "svg" in this.content
      ? { "image/svg+xml": this.content.svg }
      : { "image/png": encodeBase64(this.content.png) };
  }

  /** PNG bytes (rasterised from the SVG for charts). */
  async png(): Promise<Uint8Array> {
    return "png" in this.content ? this.content.png : await svgToPng(this.content.svg);
  }

  /**
   * Write `<base>.svg` (charts) and `<base>.png` (always).
   * @returns the paths written.
   */
  async save(base: string): Promise<string[]> {
    const written: string[] = [];
    if ("svg" in this.content) {
      await writeFileAtomic(`${base}.svg`, this.content.svg);
      written.push(`${base}.svg`);
    }
    await writeFileAtomic(`${base}.png`, await this.png());
    written.push(`${base}.png`);
    return written;
  }
}

/** The slice of a DOM element this module uses (Deno has no DOM types). */
interface SvgElement {
  tagName: string;
  outerHTML: string;
  getAttribute(name: string): string | null;
  setAttribute(name: string, value: string): void;
}

// deno-lint-ignore no-explicit-any
let doc: any;
// deno-lint-ignore no-explicit-any
function document(): any {
  // deno-lint-ignore no-explicit-any
  doc ??= (parseHTML("<!DOCTYPE html><html><body></body></html>") as any).document;
  return doc;
}

function renderPlot(options: Plot.PlotOptions, context: string): SvgElement {
  const el = Plot.plot({ ...options, document: document() }) as unknown as SvgElement;
  if (el.tagName.toLowerCase() !== "svg") {
    throw new Error(`${context}: Plot returned <${el.tagName}>, not <svg>; avoid legends/captions`);
  }
  return el;
}

/**
 * Render one or more Plot charts, side by side, to a standalone SVG Figure with the title drawn
 * in the SVG (Plot's own title would wrap the chart in HTML, which neither an .svg file nor
 * librsvg can use).
 */
export function plotFigure(
  title: string,
  options: Plot.PlotOptions | Plot.PlotOptions[],
  subtitle?: string,
): Figure {
  const panels = (Array.isArray(options) ? options : [options]).map((o) =>
    renderPlot(o, `plotFigure("${title}")`)
  );
  const head = subtitle ? 40 : 24;
  let x = 0;
  let height = 0;
  const inner = panels.map((el) => {
    el.setAttribute("x", String(x));
    el.setAttribute("y", String(head));
    x += Number(el.getAttribute("width"));
    height = Math.max(height, Number(el.getAttribute("height")));
    return el.outerHTML;
  }).join("");
  const width = x;
  const svg =
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height + head}" ` +
    `viewBox="0 0 ${width} ${height + head}" font-family="system-ui, sans-serif">` +
    `<rect width="100%" height="100%" fill="white"/>` +
    `<text x="4" y="16" font-size="14" font-weight="bold">${escapeMarkup(title)}</text>` +
    (subtitle
      ? `<text x="4" y="33" font-size="11" fill="#555">${escapeMarkup(subtitle)}</text>`
      : "") +
    inner + `</svg>`;
  return new Figure(title, { svg });
}

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
  }, "the paper says every image is 3-channel; gray JPEGs and RGBA PNGs say otherwise");
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
        Plot.line(data, { x: "epoch", y: "value", stroke: "split" }),
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
