/**
 * A {@link Figure} shows itself inline in a Jupyter notebook and writes itself to files: the same
 * object either way. Charts are Observable Plot SVG (rendered with a linkedom `document`, since
 * Deno has no DOM); image grids are PNG composited by sharp (raster.ts).
 */
import * as Plot from "@observablehq/plot";
import { parseHTML } from "linkedom";
import { encodeBase64, escapeMarkup } from "../encoding.ts";
import { writeFileAtomic } from "../files.ts";
import { svgToPng } from "./raster.ts";

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
