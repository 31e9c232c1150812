/**
 * The notebooks as a product: executed in the Deno kernel against a finished run, checked for
 * missing outputs, written with every output and rendered into one offline HTML page.
 *
 * @example
 * ```ts
 * const result = await renderRunNotebooks(loadRun("latest"));
 * console.log(result.html); // <run>/notebooks/index.html
 * ```
 * @module
 */
export {
  type CellEvent,
  ensureJupyter,
  executeNotebook,
  NotebookError,
  type NotebookHole,
  notebookHoles,
  type NotebookJson,
  sourceText,
} from "./execute.ts";
export { notebooksHtml, type PageHeader, type RenderedNotebook } from "./html.ts";
export {
  isQuickRun,
  notebookEnvironment,
  type NotebooksResult,
  projectNotebooks,
  renderRunNotebooks,
} from "./run_notebooks.ts";
