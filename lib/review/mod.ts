/**
 * The review of the method: what the data set lets a model learn without looking at the lungs,
 * and what the headline number rests on (leakage, shortcuts, seed spread), computed.
 * @module
 */
export {
  comparisonTable,
  fitLogistic,
  gradCamGroups,
  leakageTable,
  type LogisticModel,
  majorityBaseline,
  METADATA_FEATURES,
  type MetadataBaseline,
  metadataBaseline,
  type MetadataFeature,
  metadataVector,
  predictLogistic,
  REVIEW_SEEDS,
  singleFeatureTable,
  sweepForReview,
} from "./review.ts";
export {
  calibrationForRun,
  calledTargetGroups,
  evaluateRunExternal,
  externalDirFor,
  externalForRun,
  NO_EXTERNAL_SET,
  outsideFindings,
} from "./outside.ts";
