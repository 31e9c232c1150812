/**
 * Whole runs of the method: data → model → training → evaluation → a run folder with report.md;
 * seed sweeps; finished runs read back.
 *
 * @example
 * ```ts
 * const { runDir, summary } = await runExperiment({ config: { weights: "none", epochs: 1 } });
 * ```
 * @module
 */
export {
  evaluateRun,
  type ExperimentOptions,
  type ExperimentResult,
  findOrTrainRun,
  runExperiment,
  trainOrLoadRun,
} from "./experiment.ts";
export {
  createRunDir,
  ensureWritable,
  type FinishedRun,
  listRuns,
  loadRun,
  outputsRoot,
  resolveRunDir,
  resumableRun,
  RunError,
  runFolders,
  type RunStatus,
  runStatus,
  updateLatest,
} from "./runs.ts";
export { renderReport, type RunSummary, writeCurves } from "./report.ts";
export { accuracySentence, intervalTable, metricsTable, writeEvaluation } from "./results.ts";
export {
  breakdownTable,
  externalSection,
  type ExternalSummary,
  probeReading,
  rateText,
  sideBySideTable,
  summarizeExternal,
  writeExternal,
} from "./external_report.ts";
export {
  type CalibrationRecord,
  calibrationRecord,
  calibrationSection,
  calibrationTable,
  temperatureSentence,
  writeCalibration,
} from "./calibration_report.ts";
export {
  loadSweep,
  runSweep,
  type Spread,
  spread,
  summarizeSweep,
  type SweepResult,
  sweepRunsTable,
  sweepSpreadTable,
} from "./sweep.ts";
