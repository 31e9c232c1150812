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

/** Text a spreadsheet would run as a formula: it starts with = + - @ (or tab / CR). */
const FORMULA_START = /^[=+\-@\t\r]/;
const PLAIN_NUMBER = /^[+-]?(\d+\.?\d*|\.\d+)(e[+-]?\d+)?$/i;

/**
 * A text cell made safe for spreadsheets (OWASP's CSV-injection advice): a file or class name that
 * starts like a formula gets a leading `'`, which spreadsheets show as text and never evaluate.
 * Numbers written as text ("-0.5") are left alone.
 */
export function csvSafe(text: string): string {
  return FORMULA_START.test(text) && !PLAIN_NUMBER.test(text) ? `'${text}` : text;
}

/** The text a {@link csvSafe} cell stood for (a CSV reader's side). */
export function csvUnsafe(cell: string): string {
  return cell.startsWith("'") && FORMULA_START.test(cell.slice(1)) ? cell.slice(1) : cell;
}

/**
 * Rows as CSV (RFC 4180, via csv-stringify): text always quoted, a quote inside text doubled,
 * text that starts like a formula neutralised ({@link csvSafe}), numbers and booleans bare; one
 * row per line.
 */
export function csvText(rows: Cell[][]): string {
  return stringify(rows.map((row) => row.map((c) => (typeof c === "string" ? csvSafe(c) : c))), {
    quoted_string: true,
    cast: { boolean: (v: boolean) => String(v) },
    record_delimiter: "\n",
  });
}
