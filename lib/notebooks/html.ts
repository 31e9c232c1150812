/**
 * Executed notebooks as one self-contained, offline HTML document: prose (Markdown), code, every
 * output (figures as data URIs, tables as HTML, text), a contents list, and the run it was made
 * from on top. No request leaves the page: no scripts, no fonts, no external images.
 */
import { marked } from "marked";
import { encodeBase64, escapeMarkup } from "../encoding.ts";
import type { NotebookCell, NotebookJson, NotebookOutput } from "./execute.ts";
import { sourceText } from "./execute.ts";

/** One notebook to render, by its file name (without .ipynb). */
export interface RenderedNotebook {
  name: string;
  notebook: NotebookJson;
}

/** What the page says about where its numbers come from. */
export interface PageHeader {
  title: string;
  /** Label → value lines (run, date, code version, settings…). */
  facts: [string, string][];
}

/** A notebook's multi-line string, with terminal colour codes (the kernel's inspect) removed. */
const join = (v: string | string[] | undefined) =>
  // deno-lint-ignore no-control-regex
  (Array.isArray(v) ? v.join("") : v ?? "").replace(/\x1b\[[0-9;]*m/g, "");

/** A heading's anchor: the notebook's name and a slug of the text. */
function slug(notebook: string, text: string): string {
  return `${notebook}--${
    text.toLowerCase().replace(/<[^>]+>/g, "").replace(/[^a-z0-9]+/g, "-").replace(/^-|-$/g, "")
  }`;
}

/** Markdown to HTML, with ids on the headings and external images dropped (offline page). */
function markdownHtml(markdown: string, notebook: string, toc: TocEntry[]): string {
  const html = marked.parse(markdown, { async: false }) as string;
  return html
    .replace(/<h([1-3])>([\s\S]*?)<\/h\1>/g, (_, level: string, inner: string) => {
      const id = slug(notebook, inner);
      toc.push({ level: Number(level), id, text: inner.replace(/<[^>]+>/g, "") });
      return `<h${level} id="${id}">${inner}</h${level}>`;
    })
    .replace(/<img\b[^>]*src="https?:[^"]*"[^>]*>/g, "");
}

interface TocEntry {
  level: number;
  id: string;
  text: string;
}

/** One output, as the page shows it. */
function outputHtml(o: NotebookOutput, notebook: string, toc: TocEntry[]): string {
  if (o.output_type === "stream") {
    return `<pre class="stream ${o.name ?? ""}">${escapeMarkup(join(o.text))}</pre>`;
  }
  if (o.output_type === "error") {
    return `<pre class="error">${escapeMarkup(`${o.ename}: ${o.evalue}`)}</pre>`;
  }
  const data = o.data ?? {};
  if (data["image/png"] !== undefined) {
    return `<img class="figure" alt="figure" src="data:image/png;base64,${
      join(data["image/png"]).replace(/\s/g, "")
    }">`;
  }
  if (data["image/svg+xml"] !== undefined) {
    // As an image, not inline: an SVG's ids and styles stay its own, and it runs nothing.
    const svg = new TextEncoder().encode(join(data["image/svg+xml"]));
    return `<img class="figure" alt="figure" src="data:image/svg+xml;base64,${encodeBase64(svg)}">`;
  }
  if (data["text/html"] !== undefined) {
    // Our own tables (lib/tables.ts): escaped cells, no scripts.
    return `<div class="html">${
      join(data["text/html"]).replace(/<script[\s\S]*?<\/script>/gi, "")
    }</div>`;
  }
  if (data["text/markdown"] !== undefined) {
    return `<div class="markdown">${
      markdownHtml(join(data["text/markdown"]), notebook, toc)
    }</div>`;
  }
  if (data["text/plain"] !== undefined) {
    const text = join(data["text/plain"]);
    // show()'s bullet lists and sentences read better as prose than as a terminal block.
    return /^(- |[A-Z])/.test(text) && !text.includes("  ")
      ? `<div class="text">${markdownHtml(text, notebook, [])}</div>`
      : `<pre>${escapeMarkup(text)}</pre>`;
  }
  return "";
}

function cellHtml(cell: NotebookCell, notebook: string, toc: TocEntry[]): string {
  if (cell.cell_type === "markdown") {
    return `<section class="prose">${markdownHtml(sourceText(cell), notebook, toc)}</section>`;
  }
  if (cell.cell_type !== "code") return "";
  const outputs = (cell.outputs ?? []).map((o) => outputHtml(o, notebook, toc)).join("\n");
  return `<section class="cell"><details class="code"><summary>code</summary><pre><code>${
    escapeMarkup(sourceText(cell))
  }</code></pre></details>${outputs ? `<div class="outputs">${outputs}</div>` : ""}</section>`;
}

const STYLE = `
body { font: 15px/1.5 system-ui, -apple-system, "Segoe UI", sans-serif; margin: 0; color: #1f2328; }
header { background: #f6f8fa; border-bottom: 1px solid #d0d7de; padding: 1.2em 2em; }
header h1 { margin: 0 0 .4em; font-size: 1.5em; }
header dl { display: grid; grid-template-columns: max-content 1fr; gap: .1em 1em; margin: 0; }
header dt { color: #57606a; } header dd { margin: 0; }
.layout { display: grid; grid-template-columns: 18em 1fr; }
nav { position: sticky; top: 0; align-self: start; max-height: 100vh; overflow: auto;
  padding: 1em; border-right: 1px solid #d0d7de; font-size: .9em; }
nav ol { list-style: none; padding-left: 0; margin: 0; } nav li.l2 { padding-left: 1em; }
nav li.l3 { padding-left: 2em; } nav a { color: #0969da; text-decoration: none; }
main { padding: 1em 2em; max-width: 72em; overflow-x: auto; }
article { border-bottom: 2px solid #d0d7de; margin-bottom: 2em; padding-bottom: 1em; }
pre { background: #f6f8fa; padding: .6em; overflow-x: auto; font-size: .85em; }
pre.error { background: #ffebe9; } pre.stream.stderr { background: #fff8c5; }
details.code summary { cursor: pointer; color: #57606a; font-size: .85em; }
.outputs { margin: .4em 0 1em; } img.figure { max-width: 100%; height: auto; display: block; margin: .5em 0; }
table { border-collapse: collapse; margin: .5em 0; font-size: .9em; }
th, td { border: 1px solid #d0d7de; padding: .2em .5em; text-align: left; vertical-align: top; }
caption { text-align: left; font-weight: 600; padding: .2em 0; }
`;

/** The whole page: header, contents, then each notebook as an article. */
export function notebooksHtml(notebooks: readonly RenderedNotebook[], header: PageHeader): string {
  const toc: TocEntry[] = [];
  const articles = notebooks.map(({ name, notebook }) => {
    const body = notebook.cells.map((c) => cellHtml(c, name, toc)).join("\n");
    return `<article id="${name}">${body}</article>`;
  });
  const contents = toc.filter((t) => t.level <= 2).map((t) =>
    `<li class="l${t.level}"><a href="#${t.id}">${escapeMarkup(t.text)}</a></li>`
  ).join("\n");
  return `<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; img-src data:; style-src 'unsafe-inline'">
<title>${escapeMarkup(header.title)}</title>
<style>${STYLE}</style>
</head>
<body>
<header><h1>${escapeMarkup(header.title)}</h1><dl>${
    header.facts.map(([k, v]) => `<dt>${escapeMarkup(k)}</dt><dd>${escapeMarkup(v)}</dd>`).join("")
  }</dl></header>
<div class="layout">
<nav aria-label="Contents"><strong>Contents</strong><ol>${contents}</ol></nav>
<main>
${articles.join("\n")}
</main>
</div>
</body>
</html>
`;
}
