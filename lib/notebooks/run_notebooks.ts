/**
 * A run's review, executed and readable without running it: notebooks 00–06 executed in the Deno
 * kernel against one finished run, written with every output into `<run>/notebooks/`, and
 * rendered into one offline HTML page, `<run>/notebooks/index.html`. `deno task notebooks` and
 * `deno task reproduce --notebooks` call it.
 */
import * as fs from "node:fs";
import * as path from "node:path";
import { QUICK_OVERRIDES, type RunConfig } from "../config.ts";
import { writeFileAtomic, writeJsonAtomic } from "../files.ts";
import { projectPath } from "../paths.ts";
import { type FinishedRun, renderReport, type RunSummary } from "../runs/mod.ts";
import {
  type CellEvent,
  executeNotebook,
  NotebookError,
  notebookHoles,
  type NotebookJson,
} from "./execute.ts";
import { notebooksHtml, type RenderedNotebook } from "./html.ts";

/** The project's notebooks, sorted: `NN_name.ipynb`. */
export function projectNotebooks(): string[] {
  const dir = projectPath("notebooks");
  return fs.readdirSync(dir).filter((f) => /^\d\d_.*\.ipynb$/.test(f)).sort().map((f) =>
    path.join(dir, f)
  );
}

/** True when a run was made with quick mode's settings (the notebooks then run quick too). */
export function isQuickRun(config: RunConfig): boolean {
  return Object.entries(QUICK_OVERRIDES).every(([k, v]) => config[k as keyof RunConfig] === v);
}

/**
 * The environment the notebooks read a run from: the run itself, its outputs folder (where
 * notebook 06 finds the masked runs and seed sweep made beside it), its data, its external set,
 * and quick mode when the run is quick.
 */
export function notebookEnvironment(run: FinishedRun): Record<string, string> {
  const env: Record<string, string> = {
    COVID_CXR_RUN: run.runDir,
    COVID_CXR_OUTPUTS: path.dirname(run.runDir),
    COVID_CXR_DATA: run.summary.dataRoot,
    COVID_CXR_QUICK: isQuickRun(run.summary.config) ? "1" : "",
  };
  const external = run.summary.external?.folder;
  if (external && fs.existsSync(external)) env.COVID_CXR_EXTERNAL = external;
  return env;
}

export interface NotebooksResult {
  dir: string;
  html: string;
  notebooks: { name: string; seconds: number; cells: number }[];
  htmlBytes: number;
}

/**
 * Execute `only` (default all) notebooks against `run` and write them, then index.html. Fails —
 * writing no page — when a cell raises or any cell that should show something shows nothing.
 */
export async function renderRunNotebooks(
  run: FinishedRun,
  opts: {
    only?: readonly string[];
    timeoutSeconds?: number;
    log?: (line: string) => void;
    codeVersion?: string;
  } = {},
): Promise<NotebooksResult> {
  const log = opts.log ?? ((line: string) => console.log(line));
  const files = projectNotebooks().filter((f) =>
    !opts.only?.length || opts.only.some((o) => path.basename(f).startsWith(o))
  );
  if (files.length === 0) {
    throw new NotebookError(
      `No notebook matches ${opts.only?.join(", ")}: the notebooks are ${
        projectNotebooks().map((f) => path.basename(f, ".ipynb").slice(0, 2)).join(", ")
      }`,
    );
  }
  const env = notebookEnvironment(run);
  const executed: RenderedNotebook[] = [];
  const timings: NotebooksResult["notebooks"] = [];
  for (const file of files) {
    const name = path.basename(file, ".ipynb");
    const t0 = performance.now();
    const cells = new Map<number, number>();
    const onEvent = (e: CellEvent) => {
      if (e.event === "start") {
        cells.set(e.cell, performance.now());
        log(`  ${name}: cell ${e.cell + 1}/${e.cells} …`);
      } else if (e.event === "done") {
        log(`  ${name}: cell ${e.cell + 1} done in ${e.seconds.toFixed(1)} s`);
      }
    };
    log(`${name}: executing`);
    const notebook: NotebookJson = await executeNotebook(file, {
      env,
      timeoutSeconds: opts.timeoutSeconds,
      onEvent,
    });
    const holes = notebookHoles(notebook);
    if (holes.length > 0) {
      throw new NotebookError(
        `${name}: ${holes.map((h) => `cell ${h.cell} (${h.firstLine}): ${h.reason}`).join("; ")}`,
      );
    }
    const seconds = (performance.now() - t0) / 1000;
    timings.push({ name, seconds, cells: cells.size });
    log(`${name}: done in ${seconds.toFixed(0)} s`);
    executed.push({ name, notebook });
  }
  const dir = path.join(run.runDir, "notebooks");
  for (const { name, notebook } of executed) {
    await writeJsonAtomic(path.join(dir, `${name}.ipynb`), notebook);
  }
  const c = run.summary.config;
  const html = notebooksHtml(executed, {
    title: `COVID-19 chest X-ray classification: run ${run.summary.runId}`,
    facts: [
      ["run", run.runDir],
      ["executed", new Date().toISOString().slice(0, 16).replace("T", " ") + " UTC"],
      ["code version", opts.codeVersion ?? run.summary.codeVersion],
      [
        "settings",
        `${c.imageSize} px, ${c.epochs} epochs, batch ${c.batchSize}, lr ${c.learningRate}, ` +
        `momentum ${c.momentum}, BatchNorm momentum ${c.batchNormMomentum}, seed ${c.seed}, ` +
        `weights ${run.summary.weights.kind}${isQuickRun(c) ? " (quick mode)" : ""}`,
      ],
      ["data", run.summary.dataRoot],
      ...(env.COVID_CXR_EXTERNAL
        ? [["external set", env.COVID_CXR_EXTERNAL] as [string, string]]
        : []),
      ["notebooks", executed.map((n) => n.name).join(", ")],
    ],
  });
  const index = path.join(dir, "index.html");
  await writeFileAtomic(index, html);
  // The run's report links the page from now on.
  const summary: RunSummary = {
    ...run.summary,
    notebooks: {
      index: "notebooks/index.html",
      names: executed.map((n) => n.name),
      executedAt: new Date().toISOString().slice(0, 16).replace("T", " ") + " UTC",
    },
  };
  await writeJsonAtomic(path.join(run.runDir, "summary.json"), summary);
  await writeFileAtomic(path.join(run.runDir, "report.md"), renderReport(summary));
  return { dir, html: index, notebooks: timings, htmlBytes: new TextEncoder().encode(html).length };
}
