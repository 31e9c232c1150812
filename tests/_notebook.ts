/** Run a notebook headlessly through the Deno kernel (the project's JupyterLab venv). */
import * as fs from "node:fs";
import * as path from "node:path";
import { projectPath } from "../lib/paths.ts";
import { resolveDataDir } from "../lib/data/mod.ts";

export interface ExecutedNotebook {
  /** Error outputs ("ename: evalue") of every cell. */
  errors: string[];
  /** Each code cell's output MIME types, in order. */
  outputTypes: string[][];
  /** Code cells tagged "figure" (in their metadata) that showed no image/png or image/svg+xml. */
  figuresMissing: number[];
  /** Code cells tagged "figure". */
  figureCells: number;
  /** Seconds the execution took. */
  seconds: number;
  /** Every text the reader sees in the outputs (plain text, markdown, streams), joined. */
  text: string;
}

/** Every notebook the project ships, sorted. */
export function listNotebooks(): string[] {
  const dir = projectPath("notebooks");
  return fs.readdirSync(dir).filter((f) => f.endsWith(".ipynb")).sort().map((f) =>
    path.join(dir, f)
  );
}

/**
 * Execute with `jupyter nbconvert --execute` in quick mode (`COVID_CXR_QUICK=1`), so a notebook
 * that trains does so on a small budget.
 */
export async function executeNotebook(
  file: string,
  opts: { timeoutSeconds?: number; env?: Record<string, string> } = {},
): Promise<ExecutedNotebook> {
  const out = await Deno.makeTempDir({ prefix: "nb-" });
  const t0 = performance.now();
  try {
    const result = await new Deno.Command(projectPath(".venv", "bin", "jupyter"), {
      args: [
        "nbconvert",
        "--to=notebook",
        "--execute",
        "--allow-errors",
        `--ExecutePreprocessor.timeout=${opts.timeoutSeconds ?? 900}`,
        "--ExecutePreprocessor.kernel_name=deno",
        `--output-dir=${out}`,
        file,
      ],
      cwd: path.dirname(file),
      env: { COVID_CXR_QUICK: "1", ...opts.env },
      // The notebooks write runs into COVID_CXR_OUTPUTS (the caller's temp folder, never outputs/).
      stdout: "piped",
      stderr: "piped",
    }).output();
    const executed = path.join(out, path.basename(file));
    if (!fs.existsSync(executed)) {
      throw new Error(
        `nbconvert did not execute ${file}:\n${
          new TextDecoder().decode(result.stderr).slice(-3000)
        }`,
      );
    }
    const nb = JSON.parse(fs.readFileSync(executed, "utf8"));
    const errors: string[] = [];
    const outputTypes: string[][] = [];
    const figuresMissing: number[] = [];
    const texts: string[] = [];
    let figureCells = 0;
    for (const [index, cell] of nb.cells.entries()) {
      if (cell.cell_type !== "code") continue;
      const types: string[] = [];
      for (const o of cell.outputs ?? []) {
        if (o.output_type === "error") errors.push(`${o.ename}: ${o.evalue}`);
        else if (o.output_type === "stream") types.push(`stream/${o.name}`);
        else types.push(...Object.keys(o.data ?? {}));
        const join = (v: string | string[] | undefined) => Array.isArray(v) ? v.join("") : v ?? "";
        texts.push(
          join(o.text),
          join(o.data?.["text/plain"]),
          join(o.data?.["text/markdown"]),
          join(o.data?.["text/html"]),
        );
      }
      outputTypes.push(types);
      if ((cell.metadata?.tags ?? []).includes("figure")) {
        figureCells++;
        if (!types.some((t) => t === "image/png" || t === "image/svg+xml")) {
          figuresMissing.push(index);
        }
      }
    }
    return {
      errors,
      outputTypes,
      figuresMissing,
      figureCells,
      seconds: (performance.now() - t0) / 1000,
      text: texts.join("\n"),
    };
  } finally {
    await Deno.remove(out, { recursive: true });
  }
}

/** True when a data set is configured (COVID_CXR_DATA or data/Covid19-dataset) and present. */
export function dataAvailable(): boolean {
  try {
    resolveDataDir();
    return true;
  } catch {
    return false;
  }
}
