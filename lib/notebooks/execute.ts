/**
 * Execute a notebook in the Deno kernel and check that nothing is missing from it: a cell that
 * raised, a figure cell without an image, a cell that calls `show` without any output. The
 * executor is nbclient (the project's JupyterLab venv, `execute_notebook.py` beside this file);
 * lib/jupyter.ts makes sure the kernel has published a cell's displays before it ends.
 */
import * as fs from "node:fs";
import * as path from "node:path";
import { UserError } from "../errors.ts";
import { venvBin } from "../paths.ts";

/** A notebook in nbformat 4, as far as this module reads it. */
export interface NotebookJson {
  cells: NotebookCell[];
  metadata: Record<string, unknown>;
  nbformat: number;
  nbformat_minor: number;
}

export interface NotebookCell {
  cell_type: "code" | "markdown" | "raw";
  source: string | string[];
  metadata: { tags?: string[] } & Record<string, unknown>;
  outputs?: NotebookOutput[];
  execution_count?: number | null;
  id?: string;
}

export interface NotebookOutput {
  output_type: "stream" | "display_data" | "execute_result" | "error" | "update_display_data";
  name?: string;
  text?: string | string[];
  data?: Record<string, string | string[]>;
  ename?: string;
  evalue?: string;
}

/** A cell whose output is missing or wrong. */
export interface NotebookHole {
  /** Index in the notebook's cell list. */
  cell: number;
  reason: string;
  /** The cell's first line of code, to find it. */
  firstLine: string;
}

/** A notebook problem: it names the notebook and the cell. */
export class NotebookError extends UserError {
  override name = "NotebookError";
}

export const sourceText = (cell: NotebookCell): string =>
  Array.isArray(cell.source) ? cell.source.join("") : cell.source;

const IMAGE_TYPES = ["image/png", "image/svg+xml"];

/**
 * Pure: the cells of an executed notebook that should show something and do not — figure-tagged
 * cells without an image, cells calling `show(` without a displayed output — and cells that
 * raised.
 */
export function notebookHoles(nb: NotebookJson): NotebookHole[] {
  const holes: NotebookHole[] = [];
  nb.cells.forEach((cell, index) => {
    if (cell.cell_type !== "code") return;
    const outputs = cell.outputs ?? [];
    const firstLine = sourceText(cell).split("\n").find((l) => l.trim() !== "")?.trim() ?? "";
    const error = outputs.find((o) => o.output_type === "error");
    if (error) {
      holes.push({ cell: index, reason: `raised ${error.ename}: ${error.evalue}`, firstLine });
      return;
    }
    const displayed = outputs.filter((o) =>
      o.output_type === "display_data" || o.output_type === "execute_result"
    );
    if (
      (cell.metadata.tags ?? []).includes("figure") &&
      !displayed.some((o) => IMAGE_TYPES.some((t) => o.data?.[t] !== undefined))
    ) {
      holes.push({ cell: index, reason: "a figure cell without an image", firstLine });
    } else if (/\bshow\(/.test(sourceText(cell)) && displayed.length === 0) {
      holes.push({ cell: index, reason: "calls show() but displayed nothing", firstLine });
    }
  });
  return holes;
}

/** The JupyterLab venv's Python; throws, saying how to install it, when it is missing. */
export function ensureJupyter(): string {
  const python = venvBin("python");
  if (!fs.existsSync(python)) {
    throw new NotebookError(
      `Cannot execute notebooks: JupyterLab is not installed (${python} is missing). Run ` +
        "`deno task setup` once.",
    );
  }
  return python;
}

/** Progress of one notebook's execution. */
export type CellEvent =
  | { event: "start"; cell: number; cells: number }
  | { event: "done"; cell: number; seconds: number }
  | { event: "error"; cell: number | null; ename: string; evalue: string }
  | { event: "finished" };

/**
 * Execute `file` in the Deno kernel (cwd: its folder, so `../lib/mod.ts` resolves) with `env`
 * added, and return the executed notebook. Throws {@link NotebookError} naming the notebook and
 * the cell when a cell raises or the executor fails; nothing is written then.
 */
export async function executeNotebook(
  file: string,
  opts: {
    env?: Record<string, string>;
    timeoutSeconds?: number;
    onEvent?: (event: CellEvent) => void;
  } = {},
): Promise<NotebookJson> {
  const python = ensureJupyter();
  const out = await Deno.makeTempFile({ prefix: "executed-", suffix: ".ipynb" });
  try {
    const child = new Deno.Command(python, {
      args: [
        path.join(import.meta.dirname!, "execute_notebook.py"),
        file,
        out,
        String(opts.timeoutSeconds ?? 3600),
        path.dirname(file),
      ],
      cwd: path.dirname(file),
      env: opts.env,
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    let failure: CellEvent & { event: "error" } | undefined;
    const stderr = new Response(child.stderr).text();
    let buffer = "";
    for await (const chunk of child.stdout.pipeThrough(new TextDecoderStream())) {
      buffer += chunk;
      let newline;
      while ((newline = buffer.indexOf("\n")) >= 0) {
        const line = buffer.slice(0, newline).trim();
        buffer = buffer.slice(newline + 1);
        if (!line.startsWith("{")) continue;
        const event = JSON.parse(line) as CellEvent;
        if (event.event === "error") failure = event;
        opts.onEvent?.(event);
      }
    }
    const { code } = await child.status;
    const name = path.basename(file);
    if (failure) {
      throw new NotebookError(
        `${name}: cell ${failure.cell ?? "?"} raised ${failure.ename}: ${failure.evalue}`,
      );
    }
    if (code !== 0 || !fs.existsSync(out) || fs.statSync(out).size === 0) {
      throw new NotebookError(
        `${name} could not be executed (exit ${code}): ${(await stderr).slice(-2000)}`,
      );
    }
    return JSON.parse(fs.readFileSync(out, "utf8")) as NotebookJson;
  } finally {
    fs.rmSync(out, { force: true });
  }
}
