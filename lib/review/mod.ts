/**
 * The review of the method: what the data set lets a model learn without looking at the lungs,
 * and what the headline number rests on (leakage, shortcuts, seed spread), computed.
 * @module
 */
export {
  type ComparedModel,
  comparisonTable,
  fitLogistic,
  gradCamGroups,
  leakageTable,
  type LogisticModel,
  majorityBaseline,
  majorityModel,
  METADATA_FEATURES,
  type MetadataBaseline,
  metadataBaseline,
  type MetadataFeature,
  metadataModel,
  metadataVector,
  outcomesOf,
  predictionOutcomes,
  predictLogistic,
  REVIEW_SEEDS,
  runModel,
  singleFeatureTable,
  sweepForReview,
  sweepPairsTable,
} from "./review.ts";
export {
  calibrationForRun,
  calledTargetGroups,
  evaluateRunExternal,
  externalDirFor,
  externalForRun,
  NO_EXTERNAL_SET,
} from "./external.ts";
export { type ReviewEvidence, reviewFindings, shortcutFindings } from "./findings.ts";
