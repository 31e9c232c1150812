/**
 * Run folders, their whole lifecycle: where runs go (`--out`, `COVID_CXR_OUTPUTS`, `outputs/`), a
 * new folder per run (an earlier run is never overwritten), its status read off the files in it,
 * `latest` pointing at the newest finished one, and runs read back.
 *
 * A run folder is "finished" when it holds summary.json (written last), "resumable" when it holds
 * state/state.json (written after each epoch) but no summary, and "empty" when it holds neither
 * (a run that stopped before its first epoch was saved; nothing in it can be resumed).
 */
import * as fs from "node:fs";
import * as path from "node:path";
import type { RunConfig } from "../config.ts";
import { UserError } from "../errors.ts";
import { recoverDir } from "../files.ts";
import { envValue } from "../env.ts";
import { projectPath } from "../paths.ts";
import type { EpochRecord } from "../train/mod.ts";
import type { RunSummary } from "./report.ts";

/** A run folder that is missing, unfinished where a finished one is needed, or unwritable. */
export class RunError extends UserError {
  override name = "RunError";
}

/** The outputs folder: `--out`, else `COVID_CXR_OUTPUTS`, else `outputs/` in the project. */
export function outputsRoot(flag?: string): string {
  return path.resolve(flag ?? envValue("COVID_CXR_OUTPUTS") ?? projectPath("outputs"));
}

/**
 * Make sure runs can be written under `root` before any work: it is (or can be made) a folder,
 * and a file can be written in it. Fails with the reason and where else to write.
 */
export function ensureWritable(root: string): void {
  const fix = "Choose another folder with --out DIR (or COVID_CXR_OUTPUTS).";
  if (fs.existsSync(root) && !fs.statSync(root).isDirectory()) {
    throw new RunError(`Cannot write runs to ${root}: it is a file, not a folder. ${fix}`);
  }
  const probe = path.join(root, `.write-test-${Deno.pid}`);
  try {
    fs.mkdirSync(root, { recursive: true });
    fs.writeFileSync(probe, "");
    fs.rmSync(probe);
  } catch (error) {
    throw new RunError(`Cannot write runs to ${root}: ${(error as Error).message}. ${fix}`);
  }
}

/** The weights setting in a folder name: the source's name, or "file" for a path. */
export function weightsLabel(weights: string): string {
  return ["torchvision", "imagenet", "keras", "none"].includes(weights) ? weights : "file";
}

/**
 * A new, unique run folder: `<root>/<date>-<time>_<size>px_<weights>[_<mask>]_seed<seed>`, or
 * `<root>/<name>` when named. Two runs started in the same second get `…-2`, `…-3`.
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
      Deno.mkdirSync(dir); // fails if it exists: never reuse a folder (atomic across processes)
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

export type RunStatus = "finished" | "resumable" | "empty";

/** What a run folder holds (see the header); an interrupted state save is finished first. */
export function runStatus(dir: string): RunStatus {
  if (fs.existsSync(path.join(dir, "summary.json"))) return "finished";
  recoverDir(path.join(dir, "state"));
  return fs.existsSync(path.join(dir, "state", "state.json")) ? "resumable" : "empty";
}

/** Run folders directly under `root` (a folder with config.json), newest name first. */
export function runFolders(root: string): string[] {
  if (!fs.existsSync(root)) return [];
  return fs.readdirSync(root, { withFileTypes: true })
    .filter((e) => e.isDirectory() && fs.existsSync(path.join(root, e.name, "config.json")))
    .map((e) => path.join(root, e.name))
    .sort()
    .reverse();
}

/**
 * The folder `--resume` continues: the one given, or else the newest resumable run under `root`
 * (never a finished run: `latest` points at those). Fails with what is there instead.
 */
export function resumableRun(spec: string | undefined, root: string): string {
  if (spec !== undefined) {
    const dir = path.resolve(spec);
    if (!fs.existsSync(dir) || !fs.existsSync(path.join(dir, "config.json"))) {
      throw new RunError(
        `Cannot resume "${dir}": ${
          fs.existsSync(dir) ? "not a run folder (no config.json)" : "no such folder"
        }.`,
      );
    }
    const status = runStatus(dir);
    if (status === "finished") {
      throw new RunError(
        `Cannot resume ${dir}: it finished (summary.json). Start a new run instead.`,
      );
    }
    if (status === "empty") {
      throw new RunError(
        `Cannot resume ${dir}: it stopped before its first epoch was saved (no state/state.json); ` +
          "nothing in it can be continued. Delete it and start a new run.",
      );
    }
    return fs.realpathSync(dir);
  }
  const folders = runFolders(root);
  const resumable = folders.find((d) => runStatus(d) === "resumable");
  if (resumable) return resumable;
  const empty = folders.filter((d) => runStatus(d) === "empty");
  throw new RunError(
    `No unfinished run to resume in ${root}` +
      (folders.length ? ` (${folders.length - empty.length} finished` : " (no runs") +
      (empty.length
        ? `; ${empty.length} stopped before their first epoch: ${
          empty.map((d) => path.basename(d)).join(", ")
        }, nothing to continue)`
        : ")") +
      ". Start a new run without --resume, or name the folder: --resume DIR.",
  );
}

/** A run folder from a spec: "latest" (in `root`) or a path. */
export function resolveRunDir(spec: string, root = outputsRoot()): string {
  const dir = spec === "latest" ? path.join(root, "latest") : path.resolve(spec);
  if (!fs.existsSync(dir)) {
    throw new RunError(
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
    throw new RunError(
      `Run ${runDir} has no summary.json: it did not finish (resume it with --resume ${runDir})`,
    );
  }
  const summary = JSON.parse(fs.readFileSync(file, "utf8")) as RunSummary;
  // Runs from before the setting existed decoded images with their EXIF rotation applied.
  summary.config.exifRotate ??= true;
  return { runDir, summary, history: summary.history, bestDir: path.join(runDir, "best") };
}

/** Finished runs under `root` (folders with summary.json), newest first. */
export function listRuns(root = outputsRoot()): FinishedRun[] {
  return runFolders(root)
    .filter((d) => runStatus(d) === "finished")
    .map((d) => loadRun(d))
    .sort((a, b) => b.summary.runId.localeCompare(a.summary.runId));
}
