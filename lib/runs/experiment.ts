/**
 * One whole run of the method, as `deno task reproduce` and notebook 04 do it: data → model →
 * training → evaluation → `outputs/<run-id>/`. Also loading a finished run back.
 */
import * as fs from "node:fs";
import * as path from "node:path";
import { type BackendInfo, initBackend, tf } from "../backend.ts";
import { type RunConfig, runConfig, sameSettings } from "../config.ts";
import { writeFileAtomic, writeJsonAtomic } from "../files.ts";
import { createProgress, type Progress } from "../progress.ts";
import { codeVersion, runtimeInfo } from "../provenance.ts";
import { leakedTestItems, prepareData, resolveDataDir } from "../data/mod.ts";
import {
  buildModel,
  loadCheckpoint,
  resolveWeights,
  weightsAvailability,
  type WeightsInfo,
} from "../model/mod.ts";
import { loadTrainingState, trainModel } from "../train/mod.ts";
import { computeMetrics, evaluateModel, type Evaluation } from "../evaluate/mod.ts";
import { renderReport, type RunSummary, writeCurves, writeEvaluation } from "./report.ts";
import {
  createRunDir,
  type FinishedRun,
  listRuns,
  loadRun,
  outputsRoot,
  resolveRunDir,
  updateLatest,
} from "./runs.ts";

export interface ExperimentOptions {
  /** Overrides of the paper's configuration (ignored when resuming: the run's own is used). */
  config?: Partial<RunConfig>;
  /** Data set folder (else COVID_CXR_DATA, else data/Covid19-dataset). */
  data?: string;
  /** Outputs root (else COVID_CXR_OUTPUTS, else outputs/). */
  outputs?: string;
  /** Continue the interrupted run in this folder ("latest" for the newest). */
  resume?: string;
  /** Name the run folder (a seed sweep's "seed3") instead of the dated default. */
  runName?: string;
  /** Point `<outputs>/latest` at this run when done (default true; sweeps keep their own link). */
  markLatest?: boolean;
  /** Leave unreadable files out (recorded in data_report.json) instead of stopping. */
  skipBad?: boolean;
  /** No progress bars. */
  quiet?: boolean;
  /** Receives the narrative lines (epochs, saving, results). */
  log?: (line: string) => void;
  /** Stop training after this epoch as if interrupted (for tests). */
  stopAfterEpoch?: number;
}

export interface ExperimentResult {
  runDir: string;
  summary: RunSummary;
  evaluation: Evaluation;
}

/** What config.json holds. */
interface RunRecord {
  config: RunConfig;
  dataRoot: string;
  weights: WeightsInfo;
  backend: BackendInfo;
  codeVersion: string;
  runtime: Record<string, string>;
  startedAt: string;
}

/** Train and evaluate as the paper does, writing every output into a new run folder. */
export async function runExperiment(opts: ExperimentOptions = {}): Promise<ExperimentResult> {
  const started = performance.now();
  const log = opts.log ?? ((line: string) => console.log(line));
  const backend = await initBackend();
  const root = outputsRoot(opts.outputs);

  // Settings, weights and the run folder. Weights are resolved first: an offline machine asked for
  // ImageNet weights fails here, before any work and before any folder is made.
  let runDir: string;
  let record: RunRecord;
  let resumeState: Awaited<ReturnType<typeof loadTrainingState>> | undefined;
  if (opts.resume) {
    runDir = resolveRunDir(opts.resume, root);
    record = JSON.parse(fs.readFileSync(path.join(runDir, "config.json"), "utf8"));
    resumeState = await loadTrainingState(runDir);
    log(`Resuming ${runDir} after epoch ${resumeState.epoch} of ${record.config.epochs}`);
  } else {
    const config = runConfig(opts.config);
    const weights = await resolveWeights(config.weights);
    const dataRoot = resolveDataDir(opts.data);
    runDir = createRunDir(root, config, { name: opts.runName });
    record = {
      config,
      dataRoot,
      weights,
      backend,
      codeVersion: codeVersion(),
      runtime: runtimeInfo(),
      startedAt: new Date().toISOString(),
    };
    await writeJsonAtomic(path.join(runDir, "config.json"), record);
  }
  const config = record.config;
  log(`Run folder: ${runDir}`);

  // Data.
  let progress: Progress | undefined;
  const data = await prepareData({
    data: opts.data ?? record.dataRoot,
    config,
    skipBad: opts.skipBad,
    onProgress: (done, total) => {
      progress ??= createProgress("Checking and decoding images", total, { quiet: opts.quiet });
      progress.update(done);
    },
  });
  progress?.end();
  await writeJsonAtomic(path.join(runDir, "data_report.json"), {
    root: data.dataset.root,
    classNames: data.dataset.classNames,
    counts: {
      train: data.splits.train.length,
      validation: data.splits.validation.length,
      test: data.splits.test.length,
    },
    validation: data.splits.validation.map((i) => i.relPath),
    ...data.report,
    duplicates: data.report.duplicates.map((g) => ({
      kind: g.kind,
      files: g.items.map((i) => i.relPath),
    })),
  });
  log(
    `Data: ${data.splits.train.length} training, ${data.splits.validation.length} validation, ` +
      `${data.splits.test.length} test images at ${config.imageSize} px`,
  );

  // Model and training.
  const { classNames } = data.dataset;
  let model: tf.LayersModel;
  if (resumeState) {
    model = resumeState.model;
  } else {
    model = (await buildModel({
      weights: config.weights,
      numClasses: classNames.length,
      imageSize: config.imageSize,
      seed: config.seed,
      dropout: config.dropout,
      batchNormMomentum: config.batchNormMomentum,
    })).model;
  }
  let trained;
  try {
    trained = await trainModel(model, {
      config,
      classNames,
      train: data.splits.train,
      validation: data.splits.validation,
      cache: data.cache,
      runDir,
      weights: record.weights,
      resume: resumeState,
      log,
      quiet: opts.quiet,
      stopAfterEpoch: opts.stopAfterEpoch,
    });
  } finally {
    model.dispose();
  }
  if (trained.history.length < config.epochs) {
    log(`Stopped after epoch ${trained.history.length}; continue with --resume ${runDir}`);
  }

  // Evaluation of the best checkpoint on the test folder.
  const { model: best } = await loadCheckpoint(trained.bestDir);
  let evaluation: Evaluation;
  try {
    evaluation = await evaluateModel(best, data.splits.test, {
      cache: data.cache,
      numClasses: classNames.length,
      batchSize: config.batchSize,
      mask: config.inputMask,
      quiet: opts.quiet,
    });
  } finally {
    best.dispose();
  }
  const leaked = new Set(leakedTestItems(data.dataset).map((i) => i.path));
  const unseen = evaluation.predictions.filter((p) => !leaked.has(p.item.path));
  const summary: RunSummary = {
    runId: path.basename(runDir),
    config,
    weights: record.weights,
    classNames,
    dataRoot: data.dataset.root,
    counts: {
      train: data.splits.train.length,
      validation: data.splits.validation.length,
      test: data.splits.test.length,
    },
    history: trained.history,
    bestEpoch: trained.bestEpoch,
    test: evaluation.metrics,
    ...(leaked.size > 0
      ? {
        unseenTest: {
          metrics: computeMetrics(
            unseen.map((p) => p.item.label),
            unseen.map((p) => p.predicted),
            classNames.length,
          ),
          excluded: [...leaked].map((p) => path.relative(data.dataset.root, p)),
        },
      }
      : {}),
    skippedFiles: data.report.skipped,
    backend: { backend: backend.backend, versions: backend.versions },
    trainingEngine: trained.engine,
    inferenceEngine: evaluation.engine,
    codeVersion: record.codeVersion,
    totalSeconds: (performance.now() - started) / 1000 +
      (resumeState ? resumeState.history.reduce((s, h) => s + h.seconds, 0) : 0),
  };

  await writeEvaluation(runDir, evaluation, classNames);
  await writeCurves(runDir, trained.history);
  await writeJsonAtomic(path.join(runDir, "summary.json"), summary);
  await writeFileAtomic(path.join(runDir, "report.md"), renderReport(summary));
  if ((opts.markLatest ?? true) && path.dirname(runDir) === root) updateLatest(root, runDir);
  const m = evaluation.metrics;
  log(
    `Test accuracy ${(100 * m.accuracy).toFixed(2)} % (${m.correct}/${m.total}; 95 % CI ` +
      `${(100 * m.accuracyInterval.lower).toFixed(1)}–${
        (100 * m.accuracyInterval.upper).toFixed(1)
      } %). ` +
      `Report: ${path.join(runDir, "report.md")}`,
  );
  return { runDir, summary, evaluation };
}

/**
 * For notebook 04: load the finished run named by `COVID_CXR_RUN` (or `opts.run`) when given, or
 * else train one now. Where the configured weights cannot be had (ImageNet, offline), training
 * uses random initialisation and says so in the log.
 */
export async function trainOrLoadRun(
  opts: { run?: string; config?: Partial<RunConfig>; log?: (line: string) => void } = {},
): Promise<FinishedRun & { trainedNow: boolean }> {
  const log = opts.log ?? ((line: string) => console.log(line));
  const spec = opts.run ?? Deno.env.get("COVID_CXR_RUN");
  if (spec) {
    const run = loadRun(spec);
    log(`Loaded the finished run ${run.runDir} (COVID_CXR_RUN); no training in this session.`);
    return { ...run, trainedNow: false };
  }
  const config = runConfig(opts.config);
  const availability = await weightsAvailability(config.weights);
  if (availability.use !== config.weights) log(availability.note);
  const result = await runExperiment({
    config: { ...opts.config, weights: availability.use },
    log,
  });
  return { ...loadRun(result.runDir), trainedNow: true };
}

/** A finished run's best checkpoint evaluated again on its test images, with what notebooks need. */
export async function evaluateRun(run: FinishedRun, opts: { data?: string } = {}) {
  const { model, meta } = await loadCheckpoint(run.bestDir);
  const data = await prepareData({
    data: opts.data ?? run.summary.dataRoot,
    config: { ...run.summary.config },
  });
  try {
    const evaluation = await evaluateModel(model, data.splits.test, {
      cache: data.cache,
      numClasses: meta.classNames.length,
      batchSize: run.summary.config.batchSize,
      mask: run.summary.config.inputMask,
      quiet: true,
    });
    return { evaluation, meta, dataset: data.dataset, cache: data.cache };
  } finally {
    model.dispose();
  }
}

/**
 * The newest finished run in `root` whose settings are exactly `config` (all of them), or a new
 * one trained now. Lets notebooks reuse `deno task reproduce` runs instead of training again.
 */
export async function findOrTrainRun(
  config: RunConfig,
  opts: { root?: string; data?: string; log?: (line: string) => void } = {},
): Promise<FinishedRun> {
  const log = opts.log ?? ((line: string) => console.log(line));
  const same = listRuns(outputsRoot(opts.root)).find((r) => sameSettings(r.summary.config, config));
  if (same) {
    log(`Using the finished run ${same.runDir} (same settings).`);
    return same;
  }
  log(`No finished run with these settings in ${outputsRoot(opts.root)}; training one now.`);
  const result = await runExperiment({ config, data: opts.data, outputs: opts.root, log });
  return loadRun(result.runDir);
}
