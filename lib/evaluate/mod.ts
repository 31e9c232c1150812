/**
 * Evaluation: a model's predictions on images and the paper's metrics (accuracy with its interval,
 * per-class precision/recall/F1, macro and weighted averages, confusion matrix); predictions for
 * any images; Grad-CAM heatmaps.
 * @module
 */
export {
  averages,
  classificationReport,
  type ClassMetrics,
  clopperPearson,
  computeMetrics,
  type ConfusionMatrix,
  confusionMatrix,
  fisherExact,
  type Interval,
  type Metrics,
  wilson,
} from "./metrics.ts";
export {
  assertFinite,
  evaluateModel,
  type Evaluation,
  type EvaluationImages,
  loadEvaluationImages,
  ModelOutputError,
  type Prediction,
} from "./evaluate.ts";
export { evaluateFolder, type FolderEvaluation } from "./folder.ts";
export {
  type AucInterval,
  aucWithInterval,
  type ClassRoc,
  type RocAnalysis,
  rocAnalysis,
  rocCurve,
  type RocPoint,
} from "./roc.ts";
export {
  type ClassDiagnostics,
  classDiagnostics,
  type DiagnosticSummary,
  diagnosticSummary,
  type PredictiveValues,
  predictiveValues,
  type Proportion,
} from "./diagnostic.ts";
export {
  comparePaired,
  mcnemarExact,
  type PairedComparison,
  type PairedCounts,
  pairedCounts,
} from "./paired.ts";
export {
  expandInputs,
  type ImagePrediction,
  predictImages,
  predictionsTable,
  predictProbabilities,
  type PredictResult,
  writePredictionsCsv,
  writePredictionsJson,
} from "./predict.ts";
export { gradCam, heatShare, overlayHeatmap } from "./gradcam.ts";
export {
  brierScore,
  type CalibrationBin,
  calibrationBins,
  type CalibrationSummary,
  calibrationSummary,
  expectedCalibrationError,
  fitTemperature,
  negativeLogLikelihood,
  probabilityNote,
  type TemperatureFit,
  temperatureProbabilities,
} from "./calibration.ts";
export {
  ageBand,
  breakdown,
  type BreakdownRow,
  checkManifestAgreement,
  DESCRIBED_COLUMNS,
  describeExternalSet,
  type ExternalDescription,
  findManifest,
  type Manifest,
  manifestAgreement,
  perPatient,
  readManifest,
  readmeParagraph,
  type RelPath,
  shortcutProbe,
  type ShortcutRate,
} from "./manifest.ts";
export {
  ageGroupOf,
  type ClassReading,
  type GroupDifference,
  type GroupRate,
  MIN_GROUP,
  MOSTLY,
  readExternalSet,
  type ReadingVerdict,
  SIGNIFICANCE,
} from "./external_reading.ts";
export {
  BREAKDOWN_COLUMNS,
  checkExternalSet,
  evaluateExternal,
  type ExternalPass,
  type ExternalResult,
  GRAY_SIZE,
} from "./external.ts";
