/**
 * Run folders, their whole lifecycle: where runs go (`--out`, `COVID_CXR_OUTPUTS`, `outputs/`), a
 * new folder per run (an earlier run is never overwritten), `latest` pointing at the newest
 * finished one, and finished runs read back.
 */
import * as fs from "node:fs";
import * as path from "node:path";
import type { RunConfig } from "../config.ts";
import { projectPath } from "../paths.ts";
import type { EpochRecord } from "../train/mod.ts";
import type { RunSummary } from "./report.ts";

/** The outputs folder: `--out`, else `COVID_CXR_OUTPUTS`, else `outputs/` in the project. */
export function outputsRoot(flag?: string): string {
  return path.resolve(flag ?? Deno.env.get("COVID_CXR_OUTPUTS") ?? projectPath("outputs"));
}

/** The weights setting in a folder name: the source's name, or "file" for a path. */
export function weightsLabel(weights: string): string {
  return ["torchvision", "imagenet", "keras", "none"].includes(weights) ? weights : "file";
}

/**
 * A new, unique run folder: `<root>/<date>-<time>_<size>px_<weights>[_<mask>]_seed<seed>`, or
 * `<root>/<name>` when named.
 */
export function createRunDir(
  root: string,
  config: RunConfig,
  opts: { name?: string; now?: Date } = {},
): string {
  const stamp = (opts.now ?? new Date()).toISOString().slice(0, 19).replace(/[-:]/g, "").replace(
    "T",
    "-",
  );
  const weights = weightsLabel(config.weights);
  const mask = config.inputMask && config.inputMask !== "none" ? `_${config.inputMask}` : "";
  const base = opts.name ?? `${stamp}_${config.imageSize}px_${weights}${mask}_seed${config.seed}`;
  fs.mkdirSync(root, { recursive: true });
  for (let i = 1;; i++) {
    const dir = path.join(root, i === 1 ? base : `${base}-${i}`);
    try {
      fs.mkdirSync(dir); // fails if it exists: never reuse a folder
      return dir;
    } catch (error) {
      if (!(error instanceof Deno.errors.AlreadyExists)) throw error;
    }
  }
}

/** Point `<root>/latest` (or another link name) at `runDir`: a relative symlink, swapped in atomically. */
export function updateLatest(root: string, runDir: string, name = "latest"): void {
  const link = path.join(root, name);
  const tmp = `${link}.tmp-${Deno.pid}`;
  fs.rmSync(tmp, { force: true });
  fs.symlinkSync(path.relative(root, runDir), tmp);
  fs.renameSync(tmp, link);
}

/** A run folder from a spec: "latest" (in `root`) or a path. */
export function resolveRunDir(spec: string, root = outputsRoot()): string {
  const dir = spec === "latest" ? path.join(root, "latest") : path.resolve(spec);
  if (!fs.existsSync(dir)) {
    throw new Error(
      spec === "latest"
        ? `No finished run in ${root} (no "latest"): run \`deno task reproduce\` or notebook 04 first`
        : `No run folder at ${dir}`,
    );
  }
  return fs.realpathSync(dir);
}

/** A finished run read back: its summary (history, metrics, settings) and where its checkpoint is. */
export interface FinishedRun {
  runDir: string;
  summary: RunSummary;
  history: EpochRecord[];
  bestDir: string;
}

/** Read a finished run ("latest" or a folder). */
export function loadRun(spec = "latest", root?: string): FinishedRun {
  const runDir = resolveRunDir(spec, outputsRoot(root));
  const file = path.join(runDir, "summary.json");
  if (!fs.existsSync(file)) {
    throw new Error(
      `Run ${runDir} has no summary.json: it did not finish (resume it with --resume ${runDir})`,
    );
  }
  const summary = JSON.parse(fs.readFileSync(file, "utf8")) as RunSummary;
  return { runDir, summary, history: summary.history, bestDir: path.join(runDir, "best") };
}

/** Finished runs under `root` (folders with summary.json), newest first. */
export function listRuns(root = outputsRoot()): FinishedRun[] {
  if (!fs.existsSync(root)) return [];
  return fs.readdirSync(root, { withFileTypes: true })
    .filter((e) => e.isDirectory() && fs.existsSync(path.join(root, e.name, "summary.json")))
    .map((e) => loadRun(path.join(root, e.name)))
    .sort((a, b) => b.summary.runId.localeCompare(a.summary.runId));
}
