/** Tables that display as HTML in Jupyter and as aligned text elsewhere. */
import { stringify } from "csv-stringify/sync";
import { escapeMarkup } from "./encoding.ts";

export type Cell = string | number | boolean | null | undefined;

function format(v: Cell, digits: number): string {
  if (v === null || v === undefined) return "";
  if (typeof v === "number") {
    return Number.isInteger(v) ? String(v) : String(Number(v.toFixed(digits)));
  }
  return String(v);
}

export class Table {
  constructor(
    readonly rows: Record<string, Cell>[],
    readonly opts: { columns?: string[]; title?: string; digits?: number } = {},
  ) {}

  get columns(): string[] {
    return this.opts.columns ?? [...new Set(this.rows.flatMap((r) => Object.keys(r)))];
  }

  /** Aligned plain text (also what a terminal or a report shows). */
  toString(): string {
    const digits = this.opts.digits ?? 4;
    const cols = this.columns;
    const cells = this.rows.map((r) => cols.map((c) => format(r[c], digits)));
    const widths = cols.map((c, i) => Math.max(c.length, ...cells.map((row) => row[i].length)));
    const line = (values: string[]) =>
      values.map((v, i) => (i === 0 ? v.padEnd(widths[i]) : v.padStart(widths[i]))).join("  ");
    return [
      ...(this.opts.title ? [this.opts.title] : []),
      line(cols),
      widths.map((w) => "-".repeat(w)).join("  "),
      ...cells.map(line),
    ].join("\n");
  }

  /** A Markdown table (for report.md). */
  toMarkdown(): string {
    const digits = this.opts.digits ?? 4;
    const cols = this.columns;
    // Right-align columns that hold only numbers.
    const numeric = cols.map((c) =>
      this.rows.every((r) => typeof r[c] === "number" || r[c] == null)
    );
    return [
      `| ${cols.join(" | ")} |`,
      `| ${cols.map((_, i) => (numeric[i] ? "---:" : "---")).join(" | ")} |`,
      ...this.rows.map((r) => `| ${cols.map((c) => format(r[c], digits)).join(" | ")} |`),
    ].join("\n");
  }

  [Symbol.for("Jupyter.display")](): Record<string, string> {
    const digits = this.opts.digits ?? 4;
    const cols = this.columns;
    const html =
      `<table>${this.opts.title ? `<caption>${escapeMarkup(this.opts.title)}</caption>` : ""}` +
      `<thead><tr>${cols.map((c) => `<th>${escapeMarkup(c)}</th>`).join("")}</tr></thead><tbody>` +
      this.rows.map((r) =>
        `<tr>${cols.map((c) => `<td>${escapeMarkup(format(r[c], digits))}</td>`).join("")}</tr>`
      ).join("") + `</tbody></table>`;
    return { "text/html": html, "text/plain": this.toString() };
  }
}

/** Rows as a displayable table. */
export function table(
  rows: Record<string, Cell>[],
  opts: { columns?: string[]; title?: string; digits?: number } = {},
): Table {
  return new Table(rows, opts);
}

/**
 * Rows as CSV (RFC 4180, via csv-stringify): text always quoted, a quote inside text doubled,
 * numbers and booleans bare; one row per line.
 */
export function csvText(rows: Cell[][]): string {
  return stringify(rows, {
    quoted_string: true,
    cast: { boolean: (v: boolean) => String(v) },
    record_delimiter: "\n",
  });
}
