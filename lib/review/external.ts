/**
 * The review's look beyond the 66 test images, for notebooks 05 and 06: a finished run's kept
 * checkpoint on an external set, the images it calls Covid though they are not, and how sure it
 * is (its calibration, fitted on validation only).
 */
import * as fs from "node:fs";
import type { ImageItem } from "../data/mod.ts";
import { prepareData, resolveExternalDir } from "../data/mod.ts";
import { checkpointInputMask, type CheckpointMetadata, loadCheckpoint } from "../model/mod.ts";
import {
  calibrationSummary,
  evaluateExternal,
  evaluateModel,
  type Evaluation,
  type ExternalResult,
  fitTemperature,
  type Prediction,
} from "../evaluate/mod.ts";
import {
  type CalibrationRecord,
  calibrationRecord,
  type ExternalSummary,
  type FinishedRun,
  summarizeExternal,
} from "../runs/mod.ts";

/**
 * The external set to show for a run: `dir`, else COVID_CXR_EXTERNAL, else the one the run was
 * evaluated on by `deno task reproduce --external` (if it is still there); else none.
 */
export function externalDirFor(run: FinishedRun, dir?: string): string | undefined {
  const configured = resolveExternalDir(dir);
  if (configured) return configured;
  const stored = run.summary.external?.folder;
  return stored && fs.existsSync(stored) ? stored : undefined;
}

/** Why there is nothing to show, and how to get it. */
export const NO_EXTERNAL_SET = "No external set is configured: set COVID_CXR_EXTERNAL=DIR before " +
  "starting JupyterLab, or run `deno task reproduce --external DIR` (the run then keeps the " +
  "results). An external set is an ImageFolder of the same classes from other sources, best " +
  "with a MANIFEST.tsv naming each image's source and the patient's age.";

/**
 * Notebook 05: the run's external results — from its summary.json when the run was evaluated on
 * that set, else evaluated now. Undefined when no external set is configured.
 */
export async function externalForRun(
  run: FinishedRun,
  opts: { dir?: string } = {},
): Promise<ExternalSummary | undefined> {
  const dir = externalDirFor(run, opts.dir);
  if (!dir) return undefined;
  const stored = run.summary.external;
  // Runs from before the set's description and readings were kept are evaluated again.
  if (stored && stored.folder === dir && stored.passes[0].readings) return stored;
  return (await evaluateRunExternal(run, { dir }))?.summary;
}

/**
 * Notebook 06: the run's kept checkpoint evaluated on the external set now (per-image
 * predictions and the decoded images, for Grad-CAM). Undefined when no external set is configured.
 */
export async function evaluateRunExternal(
  run: FinishedRun,
  opts: { dir?: string } = {},
): Promise<
  | { result: ExternalResult; summary: ExternalSummary; meta: CheckpointMetadata }
  | undefined
> {
  const dir = externalDirFor(run, opts.dir);
  if (!dir) return undefined;
  const { model, meta } = await loadCheckpoint(run.bestDir);
  try {
    const result = await evaluateExternal(model, meta, dir, {
      batchSize: run.summary.config.batchSize,
      quiet: true,
    });
    return {
      result,
      summary: summarizeExternal(result, { testProbe: run.summary.testProbe }),
      meta,
    };
  } finally {
    model.dispose();
  }
}

/**
 * Grad-CAM groups for the shortcut: images of each other class that the model called `target`
 * (say adult Normals called Covid), and for comparison `target` images it got right.
 */
export function calledTargetGroups(
  predictions: readonly Prediction[],
  classNames: readonly string[],
  opts: { target?: string; max?: number } = {},
): { title: string; items: ImageItem[] }[] {
  const target = classNames.indexOf(opts.target ?? classNames[0]);
  const max = opts.max ?? 4;
  const groups = classNames.map((c, k) => ({
    title: k === target ? `${c}, called ${c}` : `${c}, called ${classNames[target]}`,
    items: predictions.filter((p) => p.item.label === k && p.predicted === target)
      .slice(0, max).map((p) => p.item),
  }));
  // The mistakes first, the right ones last.
  return [...groups.filter((_, k) => k !== target), groups[target]]
    .filter((g) => g.items.length > 0);
}

/**
 * Notebook 06: the run's calibration — from summary.json, or, for runs made before calibration
 * was part of a run, fitted now on its validation split (nothing is written). An external
 * evaluation, when given, is added as a third set.
 */
export async function calibrationForRun(
  run: FinishedRun,
  opts: { external?: Evaluation } = {},
): Promise<CalibrationRecord> {
  const logitsOf = (e: Evaluation) => e.predictions.map((p) => p.logits);
  const labelsOf = (e: Evaluation) => e.predictions.map((p) => p.item.label);
  let record = run.summary.calibration;
  if (!record) {
    const { model, meta } = await loadCheckpoint(run.bestDir);
    try {
      const data = await prepareData({
        data: run.summary.dataRoot,
        config: { ...run.summary.config },
      });
      const common = {
        cache: data.cache,
        numClasses: meta.classNames.length,
        batchSize: run.summary.config.batchSize,
        mask: checkpointInputMask(meta),
        quiet: true,
      };
      const validation = await evaluateModel(model, data.splits.validation, common);
      const test = await evaluateModel(model, data.splits.test, common);
      const fit = fitTemperature(logitsOf(validation), labelsOf(validation));
      record = calibrationRecord(
        fit,
        Object.entries({ validation, test }).map(([name, e]) => ({
          name,
          summary: calibrationSummary(logitsOf(e), labelsOf(e), fit.temperature),
        })),
      );
    } finally {
      model.dispose();
    }
  }
  if (opts.external && !record.sets.some((s) => s.name === "external")) {
    const e = opts.external;
    record = {
      ...record,
      sets: [...record.sets, {
        name: "external",
        summary: calibrationSummary(logitsOf(e), labelsOf(e), record.temperature),
      }],
    };
  }
  return record;
}
