/**
 * Seed sweeps: the same method run with several seeds (split, order, augmentation, initialisation
 * and dropout all change), to show how much the test metrics move by chance alone.
 */
import * as fs from "node:fs";
import * as path from "node:path";
import { type RunConfig, runConfig, settingDifferences } from "../config.ts";
import { resolveDataDir } from "../data/mod.ts";
import { UserError } from "../errors.ts";
import { codeVersion } from "../provenance.ts";
import { writeFileAtomic, writeJsonAtomic } from "../files.ts";
import { percent } from "../format.ts";
import { type Table, table } from "../tables.ts";
import type { Metrics } from "../evaluate/mod.ts";
import { plotSeedSpread } from "../figures/mod.ts";
import { type ExperimentOptions, runExperiment } from "./experiment.ts";
import type { RunSummary } from "./report.ts";
import { type FinishedRun, loadRun, outputsRoot, updateLatest, weightsLabel } from "./runs.ts";

/** Mean, sample standard deviation, minimum and maximum. */
export interface Spread {
  mean: number;
  sd: number;
  min: number;
  max: number;
}

/** Pure: the spread of a list of numbers (sd with n − 1; 0 for a single value). */
export function spread(values: readonly number[]): Spread {
  const n = values.length;
  const mean = values.reduce((s, v) => s + v, 0) / n;
  const sd = n > 1 ? Math.sqrt(values.reduce((s, v) => s + (v - mean) ** 2, 0) / (n - 1)) : 0;
  return { mean, sd, min: Math.min(...values), max: Math.max(...values) };
}

/** The test metrics a sweep summarises, by name. */
export function metricValues(m: Metrics, classNames: readonly string[]): Record<string, number> {
  const out: Record<string, number> = {
    accuracy: m.accuracy,
    "macro precision": m.macro.precision,
    "macro recall": m.macro.recall,
    "macro F1": m.macro.f1,
    "weighted F1": m.weighted.f1,
  };
  classNames.forEach((c, k) => {
    out[`${c} precision`] = m.perClass[k].precision;
    out[`${c} recall`] = m.perClass[k].recall;
    out[`${c} F1`] = m.perClass[k].f1;
  });
  return out;
}

/** Pure: the spread of every test metric over the runs. */
export function summarizeSweep(runs: readonly RunSummary[]): Record<string, Spread> {
  const classNames = runs[0].classNames;
  const values = runs.map((r) => metricValues(r.test, classNames));
  return Object.fromEntries(
    Object.keys(values[0]).map((k) => [k, spread(values.map((v) => v[k]))]),
  );
}

const pct = (v: number) => percent(v);

/** One row per seed: accuracy with its 95 % interval, macro F1, best epoch, the code that ran it. */
export function sweepRunsTable(runs: readonly RunSummary[]): Table {
  return table(runs.map((r) => ({
    seed: r.config.seed,
    accuracy: pct(r.test.accuracy),
    correct: `${r.test.correct} of ${r.test.total}`,
    "95 % Clopper–Pearson": `${pct(r.test.accuracyInterval.lower)} – ${
      pct(r.test.accuracyInterval.upper)
    }`,
    "macro F1": r.test.macro.f1,
    "best epoch": r.bestEpoch,
    code: r.codeVersion,
  })));
}

/**
 * Pure: when the seeds did not all run the same code (or the same kernels), a sentence saying
 * which ran what; else undefined.
 */
export function mixedCodeNote(runs: readonly RunSummary[]): string | undefined {
  const how = (r: RunSummary) =>
    `\`${r.codeVersion}\`${r.kernels ? `, ${r.kernels.kind} kernels` : ""}`;
  if (new Set(runs.map(how)).size < 2) return undefined;
  return `The seeds did not all run the same code (${
    runs.map((r) => `seed ${r.config.seed}: ${how(r)}`).join("; ")
  }): a difference between them may come from the code, not only from the seed.`;
}

/**
 * Pure: why a seed's finished run cannot stand in for the run this sweep would make (its settings
 * other than the seed, its data set, the external set the sweep asks for); empty when it can.
 */
export function reuseDifferences(
  run: RunSummary,
  want: { config: RunConfig; dataRoot: string; external?: string },
): string[] {
  const show = (v: unknown) => v === undefined ? "(not recorded)" : JSON.stringify(v);
  const out = settingDifferences(run.config, want.config, ["seed"]).map((k) =>
    `${k}: ${show(run.config[k])} there, ${show(want.config[k])} now`
  );
  if (path.resolve(run.dataRoot) !== path.resolve(want.dataRoot)) {
    out.push(`data: ${run.dataRoot} there, ${path.resolve(want.dataRoot)} now`);
  }
  const external = run.external?.folder;
  if (
    want.external &&
    (!external || path.resolve(external) !== path.resolve(want.external))
  ) {
    out.push(`external set: ${external ?? "none"} there, ${path.resolve(want.external)} now`);
  }
  return out;
}

/** Mean ± sd and range of every metric. */
export function sweepSpreadTable(summary: Record<string, Spread>): Table {
  return table(
    Object.entries(summary).map(([metric, s]) => ({
      metric,
      mean: pct(s.mean),
      sd: `${(100 * s.sd).toFixed(1)} points`,
      range: `${pct(s.min)} – ${pct(s.max)}`,
    })),
  );
}

export interface SweepResult {
  sweepDir: string;
  runs: RunSummary[];
  summary: Record<string, Spread>;
}

/** `report.md` of a sweep. */
export function renderSweepReport(s: SweepResult): string {
  const c = s.runs[0].config;
  const notPretrained = s.runs[0].weights.kind === "none";
  const mixed = mixedCodeNote(s.runs);
  return [
    `# Seed sweep: ${s.runs.length} runs`,
    "",
    ...(notPretrained
      ? ["> **Not pretrained** (`--weights none`): not comparable to the paper's 96.97 %.", ""]
      : []),
    `Settings as in every run's report (${c.imageSize} px, ${c.epochs} epochs, weights ${c.weights}); ` +
    "only the seed changes, and with it the train/validation split, batch order, augmentation, " +
    "the new classifier's initialisation and dropout.",
    "",
    "## Each run",
    "",
    sweepRunsTable(s.runs).toMarkdown(),
    "",
    ...(mixed ? [`> ${mixed}`, ""] : []),
    "## Spread of the test metrics",
    "",
    sweepSpreadTable(s.summary).toMarkdown(),
    "",
    "![Accuracy by seed](seed_spread.svg)",
    "",
    `With ${s.runs[0].test.total} test images one image is ${
      (100 / s.runs[0].test.total).toFixed(1)
    } ` +
    "points; the spread above is what chance alone does to the headline number.",
    "",
  ].join("\n");
}

/**
 * Run the method once per seed into `<outputs>/<sweep>/seed<N>/`. Seeds already finished there are
 * not run again, and an interrupted seed resumes, so re-running the same command continues a sweep.
 * A finished seed run with other settings (the folder's name holds only some of them) or on other
 * data is refused, not mixed in; one run by other code is reused and the report says so.
 */
export async function runSweep(
  seeds: readonly number[],
  opts: Omit<ExperimentOptions, "resume" | "runName"> & { sweepDir?: string } = {},
): Promise<SweepResult> {
  const log = opts.log ?? ((line: string) => console.log(line));
  const root = outputsRoot(opts.outputs);
  const config: RunConfig = runConfig(opts.config);
  const weights = weightsLabel(config.weights);
  const mask = config.inputMask !== "none" ? `_${config.inputMask}` : "";
  const sweepDir = opts.sweepDir ??
    path.join(
      root,
      `sweep_${config.imageSize}px_${weights}${mask}_${config.epochs}ep_seeds${seeds.join("-")}`,
    );
  fs.mkdirSync(sweepDir, { recursive: true });
  const dataRoot = resolveDataDir(opts.data);
  const runs: RunSummary[] = [];
  for (const seed of seeds) {
    const dir = path.join(sweepDir, `seed${seed}`);
    let run: FinishedRun;
    if (fs.existsSync(path.join(dir, "summary.json"))) {
      run = loadRun(dir);
      const differences = reuseDifferences(run.summary, {
        config: { ...config, seed },
        dataRoot,
        external: opts.external,
      });
      if (differences.length > 0) {
        throw new UserError(
          `Seed ${seed} finished before in ${dir}, but not as this sweep would run it (${
            differences.join("; ")
          }); a sweep changes only the seed. Keep that run by moving ${dir} aside (or run this ` +
            "sweep into another folder with --out), then run the command again.",
        );
      }
      const code = run.summary.codeVersion === codeVersion()
        ? ""
        : ` (by code ${run.summary.codeVersion}; this is ${codeVersion()})`;
      log(`Seed ${seed}: finished before${code}, reusing ${dir}`);
    } else if (fs.existsSync(path.join(dir, "state", "state.json"))) {
      log(`Seed ${seed}: resuming ${dir}`);
      await runExperiment({ ...opts, resume: dir, outputs: sweepDir, markLatest: false });
      run = loadRun(dir);
    } else {
      fs.rmSync(dir, { recursive: true, force: true }); // started but no epoch saved: start over
      log(`Seed ${seed}: training`);
      await runExperiment({
        ...opts,
        config: { ...opts.config, seed },
        outputs: sweepDir,
        runName: `seed${seed}`,
        markLatest: false,
      });
      run = loadRun(dir);
    }
    runs.push(run.summary);
  }
  const result: SweepResult = { sweepDir, runs, summary: summarizeSweep(runs) };
  await writeJsonAtomic(path.join(sweepDir, "sweep.json"), {
    seeds,
    summary: result.summary,
    runs: runs.map((r) => ({ seed: r.config.seed, runId: r.runId, test: r.test })),
  });
  await plotSeedSpread(runs).save(path.join(sweepDir, "seed_spread"));
  await writeFileAtomic(path.join(sweepDir, "report.md"), renderSweepReport(result));
  if (path.dirname(sweepDir) === root) updateLatest(root, sweepDir, "latest-sweep");
  const acc = result.summary.accuracy;
  log(
    `Sweep of ${seeds.length} seeds: test accuracy ${pct(acc.mean)} ± ${
      (100 * acc.sd).toFixed(1)
    } points ` +
      `(range ${pct(acc.min)} – ${pct(acc.max)}). Report: ${path.join(sweepDir, "report.md")}`,
  );
  return result;
}

/** A finished sweep read back (its folder holds sweep.json), or undefined. */
export function loadSweep(dir: string): SweepResult | undefined {
  if (!fs.existsSync(path.join(dir, "sweep.json"))) return undefined;
  const { seeds } = JSON.parse(fs.readFileSync(path.join(dir, "sweep.json"), "utf8")) as {
    seeds: number[];
  };
  const runs = seeds.map((s) => loadRun(path.join(dir, `seed${s}`)).summary);
  return { sweepDir: dir, runs, summary: summarizeSweep(runs) };
}
