/**
 * Training as the paper does it: cross-entropy, SGD with momentum, learning rate ×0.1 after
 * epochs 4 and 6, the weights with the lowest validation loss kept, and everything needed to
 * resume saved after every epoch.
 * @module
 */
export { trainModel, type TrainOptions, type TrainResult, validationPass } from "./loop.ts";
export { learningRateAt } from "./schedule.ts";
export {
  type EpochRecord,
  loadTrainingState,
  TrainingError,
  type TrainingState,
  writeHistory,
} from "./state.ts";
