/**
 * One whole run of the method, as `deno task reproduce` and notebook 04 do it: data → model →
 * training → evaluation → `outputs/<run-id>/`. Also loading a finished run back.
 */
import * as fs from "node:fs";
import * as path from "node:path";
import { type BackendInfo, initBackend } from "../backend.ts";
import { type RunConfig, runConfig, sameSettings } from "../config.ts";
import { cleanTemporaries, writeFileAtomic, writeJsonAtomic } from "../files.ts";
import { percent } from "../format.ts";
import { peakResident, releaseFreedMemory } from "../memory.ts";
import { createProgress, type Progress } from "../progress.ts";
import { envValue } from "../env.ts";
import { codeVersion, runtimeInfo } from "../provenance.ts";
import {
  countByClass,
  exifOrientations,
  findNearDuplicates,
  imageFolderClasses,
  type NearDuplicateReport,
  prepareData,
  resolveDataDir,
} from "../data/mod.ts";
import {
  buildModel,
  checkpointInputMask,
  loadCheckpoint,
  resolveWeights,
  updateCheckpointMetadata,
  weightsAvailability,
  type WeightsInfo,
} from "../model/mod.ts";
import { type EpochRecord, loadTrainingState, trainModel } from "../train/mod.ts";
import { createPredictor, type Predictor, sessionSettings } from "../engine/mod.ts";
import {
  calibrationSummary,
  checkExternalSet,
  type DiagnosticSummary,
  evaluateExternal,
  evaluateModel,
  type Evaluation,
  type ExternalResult,
  fitTemperature,
  shortcutProbe,
  type ShortcutRate,
} from "../evaluate/mod.ts";
import { renderReport, type RunSummary, writeCurves } from "./report.ts";
import { accuracySentence, writeEvaluation } from "./results.ts";
import { type ExternalSummary, writeExternal } from "./external_report.ts";
import { leakageSummary, writeLeakageGallery } from "./leakage.ts";
import {
  type CalibrationRecord,
  calibrationRecord,
  writeCalibration,
} from "./calibration_report.ts";
import {
  createRunDir,
  ensureWritable,
  type FinishedRun,
  listRuns,
  loadRun,
  outputsRoot,
  resumableRun,
  RunError,
  runStatus,
  updateLatest,
} from "./runs.ts";

export interface ExperimentOptions {
  /** Overrides of the paper's configuration (when resuming: must agree with the run's own). */
  config?: Partial<RunConfig>;
  /** Data set folder (else COVID_CXR_DATA, else data/Covid19-dataset). */
  data?: string;
  /** Outputs root (else COVID_CXR_OUTPUTS, else outputs/). */
  outputs?: string;
  /**
   * Continue an interrupted run: this folder, or `true` for the newest unfinished run in the
   * outputs root.
   */
  resume?: string | true;
  /** Name the run folder (a seed sweep's "seed3") instead of the dated default. */
  runName?: string;
  /** Point `latest` beside the run at it when done (default true; sweeps keep their own link). */
  markLatest?: boolean;
  /** Leave unreadable files out (recorded in data_report.json and listed) instead of stopping. */
  skipBad?: boolean;
  /**
   * An external set (an ImageFolder, with a MANIFEST.tsv when it has one) to evaluate the kept
   * checkpoint on after the test set, into `external/` (scripts resolve `--external` and
   * COVID_CXR_EXTERNAL with resolveExternalDir).
   */
  external?: string;
  /** PPV and NPV are also reported at this prevalence (0–1), besides the test set's own. */
  prevalence?: number;
  /** No progress bars. */
  quiet?: boolean;
  /** Receives the narrative lines (epochs, saving, results). */
  log?: (line: string) => void;
  /** Called once the run folder is known (the reproduce task tells an interrupted user about it). */
  onStart?: (runDir: string) => void;
}

export interface ExperimentResult {
  runDir: string;
  summary: RunSummary;
  evaluation: Evaluation;
}

/** Options that change what a run reports, not how it trains: kept so that a resume keeps them. */
interface RunOptions {
  external?: string;
  prevalence?: number;
}

/** What config.json holds. */
interface RunRecord {
  config: RunConfig;
  /** The run's reporting options (runs from before they were kept have none). */
  options?: RunOptions;
  dataRoot: string;
  weights: WeightsInfo;
  backend: BackendInfo;
  codeVersion: string;
  runtime: Record<string, string>;
  startedAt: string;
}

/**
 * Train and evaluate as the paper does, writing every output into a new run folder: data (with
 * its leakage report), model, training (resumable), the kept checkpoint on the test set (and the
 * external set), calibration, figures, summary.json and report.md.
 *
 * @param opts Settings over the paper's, the data, the outputs folder, resume, the external set
 *   and reporting options (see {@link ExperimentOptions}).
 * @returns The run folder, its summary (what report.md is written from) and the test evaluation.
 * @throws {Interrupted} When stopped with Ctrl-C (the state is saved: `--resume` continues).
 *
 * @example
 * ```ts
 * const { runDir, summary } = await runExperiment({ config: { weights: "none", epochs: 1 } });
 * console.log(runDir, summary.test.accuracy);
 * ```
 */
export async function runExperiment(opts: ExperimentOptions = {}): Promise<ExperimentResult> {
  const started = performance.now();
  const log = opts.log ?? ((line: string) => console.log(line));
  const backend = await initBackend();
  const root = outputsRoot(opts.outputs);
  const run = opts.resume ? await resumeRun(opts, root, log) : await startRun(opts, root, backend);
  const { runDir, record, resume } = run;
  opts.onStart?.(runDir);
  log(`Run folder: ${runDir}`);
  try {
    const config = record.config;
    // The run's own options (a resumed run keeps those it started with).
    opts = { ...opts, ...record.options };
    const data = await prepareRunData(runDir, record, opts, log);
    const trained = await trainRun(runDir, record, data, resume, opts, log);
    const evaluated = await evaluateBest(trained.bestDir, data, config, opts, log);
    const evaluation = evaluated.test;
    const { classNames } = data.dataset;
    const prevalence = opts.prevalence;
    const diagnostics = await writeEvaluation(runDir, evaluation, classNames, { prevalence });
    await writeCurves(runDir, trained.history);
    await writeCalibration(runDir, evaluated.calibration);
    await writeLeakageGallery(runDir, data.nearDuplicates, data.cache);
    const external = evaluated.external
      ? await writeExternal(path.join(runDir, "external"), evaluated.external, classNames, {
        test: { metrics: evaluation.metrics, probe: evaluated.testProbe, diagnostics },
        prevalence,
      })
      : undefined;
    const summary = summarize(runDir, record, data, trained, evaluated, backend, {
      seconds: (performance.now() - started) / 1000 +
        (resume ? resume.history.reduce((s, h) => s + h.seconds, 0) : 0),
      diagnostics,
      external,
    });
    await writeJsonAtomic(path.join(runDir, "summary.json"), summary);
    await writeFileAtomic(path.join(runDir, "report.md"), renderReport(summary));
    cleanTemporaries(runDir);
    if (opts.markLatest ?? true) updateLatest(path.dirname(runDir), runDir);
    if (evaluated.external) {
      const m = evaluated.external.passes[0].evaluation.metrics;
      log(`External accuracy ${percent(m.accuracy)} (${m.correct} of ${m.total}).`);
    }
    log(
      `Test accuracy ${accuracySentence(evaluation.metrics)} Report: ${
        path.join(runDir, "report.md")
      }`,
    );
    return { runDir, summary, evaluation };
  } catch (error) {
    // Nothing worth keeping when no epoch was saved: no folder that looks like a run remains.
    if (!opts.resume && runStatus(runDir) === "empty") {
      fs.rmSync(runDir, { recursive: true, force: true });
    }
    throw error;
  }
}

type TrainingResume = Awaited<ReturnType<typeof loadTrainingState>>;

/** A new run: settings, weights (resolved first: offline fails here, before any work), folder. */
async function startRun(
  opts: ExperimentOptions,
  root: string,
  backend: BackendInfo,
): Promise<{ runDir: string; record: RunRecord; resume?: TrainingResume }> {
  const config = runConfig(opts.config);
  const weights = await resolveWeights(config.weights);
  const dataRoot = resolveDataDir(opts.data);
  ensureWritable(root); // before the external set's decoding: a wrong --out should not wait for it
  if (opts.external) {
    // A bad external set found after eight epochs would cost them all: check it first, images
    // too. Decoding them now also keeps decoding's memory out of the run's peak after training.
    let progress: Progress | undefined;
    const warnings = await checkExternalSet(opts.external, imageFolderClasses(dataRoot), {
      decode: {
        imageSize: config.imageSize,
        exifRotate: config.exifRotate,
        maxPixels: config.maxPixels,
        skipBad: opts.skipBad,
        onProgress: (done, total) => {
          progress ??= createProgress("Checking and decoding the external set", total, {
            quiet: opts.quiet,
          });
          progress.update(done);
        },
      },
    });
    await progress?.end();
    for (const w of warnings) (opts.log ?? console.log)(w);
  }
  const runDir = createRunDir(root, config, { name: opts.runName });
  const record: RunRecord = {
    config,
    options: {
      ...(opts.external ? { external: path.resolve(opts.external) } : {}),
      ...(opts.prevalence !== undefined ? { prevalence: opts.prevalence } : {}),
    },
    dataRoot,
    weights,
    backend,
    codeVersion: codeVersion(),
    runtime: runtimeInfo(),
    startedAt: new Date().toISOString(),
  };
  await writeJsonAtomic(path.join(runDir, "config.json"), record);
  return { runDir, record };
}

/**
 * An interrupted run, continued with its own settings: given settings and data that differ from
 * the run's are refused, listing the differences.
 */
async function resumeRun(
  opts: ExperimentOptions,
  root: string,
  log: (line: string) => void,
): Promise<{ runDir: string; record: RunRecord; resume: TrainingResume }> {
  const runDir = resumableRun(opts.resume === true ? undefined : opts.resume, root);
  const record = JSON.parse(fs.readFileSync(path.join(runDir, "config.json"), "utf8")) as RunRecord;
  const differences = Object.entries(opts.config ?? {})
    .filter(([k, v]) =>
      !sameSettings({ [k]: v } as never, { [k]: record.config[k as keyof RunConfig] } as never)
    )
    .map(([k, v]) =>
      `${k}: the run has ${JSON.stringify(record.config[k as keyof RunConfig])}, given ${
        JSON.stringify(v)
      }`
    );
  if (opts.data && path.resolve(opts.data) !== path.resolve(record.dataRoot)) {
    differences.push(`data: the run has ${record.dataRoot}, given ${path.resolve(opts.data)}`);
  }
  const kept = record.options ?? {};
  if (opts.external && path.resolve(opts.external) !== kept.external) {
    differences.push(
      `external: the run has ${kept.external ?? "none"}, given ${path.resolve(opts.external)}`,
    );
  }
  if (!opts.external && kept.external && !fs.existsSync(kept.external)) {
    differences.push(
      `external: the run was started with ${kept.external}, which is gone; restore it, or give ` +
        "--external DIR with the same set's new place",
    );
  }
  if (opts.prevalence !== undefined && opts.prevalence !== kept.prevalence) {
    differences.push(
      `prevalence: the run has ${kept.prevalence ?? "none"}, given ${opts.prevalence}`,
    );
  }
  if (differences.length > 0) {
    throw new RunError(
      `Cannot resume ${runDir} with other settings than it started with:\n  ${
        differences.join("\n  ")
      }\nResume without them (the run keeps its own), or start a new run.`,
    );
  }
  const removed = cleanTemporaries(runDir);
  if (removed.length) log(`Cleaned up after the interruption: ${removed.join(", ")}`);
  const resume = await loadTrainingState(runDir);
  log(
    `Resuming ${runDir} after epoch ${resume.epoch} of ${record.config.epochs}${
      resume.partial ? `, at step ${resume.partial.step} of epoch ${resume.partial.epoch}` : ""
    }`,
  );
  return { runDir, record, resume };
}

type RunData = Awaited<ReturnType<typeof prepareData>> & { nearDuplicates: NearDuplicateReport };

/** The data, checked and split, with data_report.json written and the counts said. */
async function prepareRunData(
  runDir: string,
  record: RunRecord,
  opts: ExperimentOptions,
  log: (line: string) => void,
): Promise<RunData> {
  let progress: Progress | undefined;
  const data = await prepareData({
    data: record.dataRoot,
    config: record.config,
    skipBad: opts.skipBad,
    onProgress: (done, total) => {
      progress ??= createProgress("Checking and decoding images", total, { quiet: opts.quiet });
      progress.update(done);
    },
  });
  await progress?.end();
  const nearDuplicates = await findNearDuplicates(data.dataset, {
    maxPixels: record.config.maxPixels,
    log,
  });
  // Decoding full-size images (a first run: nothing cached yet) leaves freed memory in the
  // decoder threads' heaps, under the training that comes on top.
  releaseFreedMemory();
  const exif = await exifOrientations([...data.dataset.train, ...data.dataset.test]);
  if (exif.length > 0) {
    log(
      `${exif.length} image(s) carry an EXIF orientation tag: ${
        record.config.exifRotate
          ? "rotated as a viewer shows them (--exif-rotate)"
          : "decoded as stored, as the paper's pipeline does (--exif-rotate rotates them)"
      }; listed in data_report.json.`,
    );
  }
  const { train, validation, test } = data.splits;
  await writeJsonAtomic(path.join(runDir, "data_report.json"), {
    root: data.dataset.root,
    classNames: data.dataset.classNames,
    counts: { train: train.length, validation: validation.length, test: test.length },
    perClass: countByClass(data.dataset),
    validation: validation.map((i) => i.relPath),
    ...data.report,
    duplicates: data.report.duplicates.map((g) => ({
      kind: g.kind,
      files: g.items.map((i) => i.relPath),
    })),
    exifOrientation: { applied: record.config.exifRotate, images: exif },
    nearDuplicates: {
      method: nearDuplicates.method,
      calibration: nearDuplicates.calibration,
      pairs: nearDuplicates.pairs.map((p) => ({
        kind: p.kind,
        files: [p.a.relPath, p.b.relPath],
        distance: p.distance,
        byteIdentical: p.byteIdentical,
      })),
    },
  });
  if (data.report.skipped.length > 0) {
    log(`Skipped ${data.report.skipped.length} unreadable file(s) (--skip-bad):`);
    for (const s of data.report.skipped) {
      log(`  ${path.relative(data.dataset.root, s.path)}: ${s.reason}`);
    }
  }
  log(
    `Data: ${train.length} training, ${validation.length} validation, ${test.length} test ` +
      `images at ${record.config.imageSize} px; per class (train/test): ${
        countByClass(data.dataset).map((c) => `${c.className} ${c.train}/${c.test}`).join(", ")
      }`,
  );
  const cross = nearDuplicates.pairs.filter((p) => p.kind === "train-test");
  if (cross.length > 0) {
    const leaked = new Set(cross.map((p) => p.b.relPath));
    log(
      `Leakage: ${leaked.size} test image(s) are the same X-ray as a training image ` +
        `(${cross.filter((p) => p.byteIdentical).length} byte-identical pair(s), ` +
        `${cross.filter((p) => !p.byteIdentical).length} near-identical); see data_report.json.`,
    );
  }
  return { ...data, nearDuplicates };
}

/** Build (or take the resumed) model and train it; the model is freed afterwards. */
async function trainRun(
  runDir: string,
  record: RunRecord,
  data: RunData,
  resume: TrainingResume | undefined,
  opts: ExperimentOptions,
  log: (line: string) => void,
) {
  const config = record.config;
  const { classNames } = data.dataset;
  const model = resume?.model ?? (await buildModel({
    weights: config.weights,
    numClasses: classNames.length,
    imageSize: config.imageSize,
    seed: config.seed,
    dropout: config.dropout,
    batchNormMomentum: config.batchNormMomentum,
  })).model;
  try {
    return await trainModel(model, {
      config,
      classNames,
      train: data.splits.train,
      validation: data.splits.validation,
      cache: data.cache,
      runDir,
      weights: record.weights,
      resume,
      log,
      quiet: opts.quiet,
    });
  } finally {
    model.dispose();
  }
}

/** What the kept checkpoint did on the test set (and the external set), and its calibration. */
interface BestEvaluation {
  test: Evaluation;
  /** The test set's non-Covid classes called Covid. */
  testProbe: ShortcutRate[];
  calibration: CalibrationRecord;
  external?: ExternalResult;
}

/**
 * The kept checkpoint, with everything its metadata says applied: a temperature fitted on the
 * validation split (stored in its metadata.json), then the test set and the external set.
 */
async function evaluateBest(
  bestDir: string,
  data: RunData,
  config: RunConfig,
  opts: ExperimentOptions,
  log: (line: string) => void,
): Promise<BestEvaluation> {
  const { model, meta } = await loadCheckpoint(bestDir);
  // One graph for the validation, test and external sets: each graph built after training raised
  // the run's memory peak (TensorFlow did not reuse the training's freed memory for it).
  let predictor: Predictor;
  try {
    predictor = createPredictor(model);
  } catch (error) {
    model.dispose();
    throw error;
  }
  const common = {
    cache: data.cache,
    numClasses: meta.classNames.length,
    batchSize: config.batchSize,
    mask: checkpointInputMask(meta),
    quiet: opts.quiet,
    predictor,
  };
  const logitsOf = (e: Evaluation) => e.predictions.map((p) => p.logits);
  const labelsOf = (e: Evaluation) => e.predictions.map((p) => p.item.label);
  try {
    const validation = await evaluateModel(model, data.splits.validation, common);
    const fit = fitTemperature(logitsOf(validation), labelsOf(validation));
    const calibrated = await updateCheckpointMetadata(bestDir, {
      calibration: {
        temperature: fit.temperature,
        fittedOn: "validation",
        n: fit.n,
        nllBefore: fit.nllBefore,
        nllAfter: fit.nllAfter,
        ...(fit.notFitted ? { notFitted: fit.notFitted } : {}),
      },
    });
    const test = await evaluateModel(model, data.splits.test, {
      ...common,
      temperature: fit.temperature,
    });
    let external: ExternalResult | undefined;
    if (opts.external) {
      log(`Evaluating on the external set ${opts.external} (as stored, then gray)`);
      external = await evaluateExternal(model, calibrated, opts.external, {
        batchSize: config.batchSize,
        maxPixels: config.maxPixels,
        skipBad: opts.skipBad,
        quiet: opts.quiet,
        predictor,
      });
    }
    const measured = [
      ["validation", validation],
      ["test", test],
      ...(external ? [["external", external.passes[0].evaluation] as const] : []),
    ] as const;
    return {
      test,
      testProbe: shortcutProbe(test.predictions, meta.classNames),
      calibration: calibrationRecord(
        fit,
        measured.map(([name, e]) => ({
          name,
          summary: calibrationSummary(logitsOf(e), labelsOf(e), fit.temperature),
        })),
      ),
      external,
    };
  } finally {
    predictor.dispose();
    model.dispose();
  }
}

/** summary.json: everything report.md is written from. */
function summarize(
  runDir: string,
  record: RunRecord,
  data: RunData,
  trained: Awaited<ReturnType<typeof trainModel>>,
  evaluated: BestEvaluation,
  backend: BackendInfo,
  extra: { seconds: number; diagnostics: DiagnosticSummary; external?: ExternalSummary },
): RunSummary {
  const evaluation = evaluated.test;
  const { classNames } = data.dataset;
  const leakage = leakageSummary(data.nearDuplicates, evaluation.predictions, classNames.length);
  const excluded = [...leakage.byteIdentical, ...leakage.nearIdentical.map((n) => n.test)];
  return {
    runId: path.basename(runDir),
    config: record.config,
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
    testDiagnostics: extra.diagnostics,
    ...(excluded.length > 0
      ? { unseenTest: { metrics: leakage.clean, excluded: excluded.sort() } }
      : {}),
    leakage,
    testProbe: evaluated.testProbe,
    ...(extra.external ? { external: extra.external } : {}),
    calibration: evaluated.calibration,
    skippedFiles: data.report.skipped,
    backend: { backend: backend.backend, package: backend.package, versions: backend.versions },
    trainingEngine: trained.engine,
    kernels: trained.kernels,
    inferenceEngine: evaluation.engine,
    ...(evaluation.kernels ? { inferenceKernels: evaluation.kernels } : {}),
    sessionSettings: sessionSettings(),
    codeVersion: record.codeVersion,
    totalSeconds: extra.seconds,
    peakMemory: runPeakMemory(trained.history),
  };
}

/** The whole run's peak memory: this process's, or an earlier process's epoch when resumed. */
function runPeakMemory(history: EpochRecord[]): RunSummary["peakMemory"] {
  const now = peakResident();
  const mb = Math.max(Math.round(now.bytes / 2 ** 20), ...history.map((h) => h.peakRssMB));
  return { mb, source: now.source };
}

/**
 * For notebook 04: load the finished run named by `COVID_CXR_RUN` (or `opts.run`) when given, or
 * else train one now. Where the configured weights cannot be had (ImageNet, offline), training
 * uses random initialisation and says so in the log.
 */
export async function loadOrTrainRun(
  opts: { run?: string; config?: Partial<RunConfig>; log?: (line: string) => void } = {},
): Promise<FinishedRun & { trainedNow: boolean }> {
  const log = opts.log ?? ((line: string) => console.log(line));
  const spec = opts.run ?? envValue("COVID_CXR_RUN");
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
export async function reuseOrTrainRun(
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
  // A run made for a comparison is not the newest run of the method: `latest` stays where it is.
  const result = await runExperiment({
    config,
    data: opts.data,
    outputs: opts.root,
    log,
    markLatest: false,
  });
  return loadRun(result.runDir);
}
