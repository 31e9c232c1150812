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
  loadOrTrainRun,
  reuseOrTrainRun,
  runExperiment,
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
export {
  compareOutcomes,
  comparisonSentence,
  differenceText,
  type Outcomes,
  pairedTable,
  runOutcomes,
} from "./compare.ts";
export {
  calibrationSentence,
  leakageAccuracyTable,
  leakageFinding,
  leakageGallery,
  leakagePairsTable,
  type LeakageSummary,
  leakageSummary,
  writeLeakageGallery,
} from "./leakage.ts";
export {
  accuracySentence,
  diagnosticsNotes,
  diagnosticsTable,
  intervalTable,
  metricsTable,
  writeEvaluation,
} from "./results.ts";
export {
  breakdownTable,
  descriptionLines,
  externalSection,
  type ExternalSummary,
  rateText,
  readingText,
  sideBySideTable,
  summarizeExternal,
  type TestSide,
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
  mixedCodeNote,
  reuseDifferences,
  runSweep,
  type Spread,
  spread,
  summarizeSweep,
  type SweepResult,
  sweepRunsTable,
  sweepSpreadTable,
} from "./sweep.ts";
