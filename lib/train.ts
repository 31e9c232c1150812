/**
 * Training as the paper does it: cross-entropy, SGD with momentum, learning rate ×0.1 after
 * epochs 4 and 6, and the weights with the lowest validation loss kept. Each epoch has a training
 * phase (dropout on, BatchNorm statistics updated) and a validation phase (inference mode).
 *
 * After every epoch the whole training state (weights, optimizer momentum, history, step count)
 * is saved, so `--resume` continues an interrupted run exactly: the data order, augmentation and
 * dropout of every epoch come from seeded streams, not from state carried in memory.
 */
import * as fs from "node:fs";
import * as path from "node:path";
import { initBackend, tf } from "./backend.ts";
import { batchCount, iterateBatches } from "./batches.ts";
import { type CheckpointInput, loadCheckpoint, saveCheckpoint } from "./checkpoint.ts";
import type { RunConfig } from "./config.ts";
import type { ImageItem } from "./dataset.ts";
import { replaceDirAtomic, writeFileAtomic, writeJsonAtomic } from "./files.ts";
import type { ImageCache } from "./image_cache.ts";
import { dropoutLayers } from "./model.ts";
import { createProgress } from "./progress.ts";
import { minimizeLean } from "./gradients.ts";
import { predictorFor } from "./inference.ts";
import { graphStepEngine } from "./graph_train.ts";
import { Rng } from "./rng.ts";
import type { WeightsInfo } from "./weights.ts";
import type { InputMask } from "./preprocess.ts";

/** One epoch of the training history. */
export interface EpochRecord {
  epoch: number;
  learningRate: number;
  trainLoss: number;
  trainAccuracy: number;
  validLoss: number;
  validAccuracy: number;
  /** True when the validation loss fell below its previous minimum (and the best checkpoint was saved). */
  improved: boolean;
  seconds: number;
  /** Highest resident memory seen during the epoch, in MB. */
  peakRssMB: number;
}

/**
 * The learning rate of a 1-based epoch: `learningRate · lrGamma^k`, k = milestones already passed.
 * With milestones [4, 6]: epochs 1–4 at the base rate, 5–6 at a tenth, 7–8 at a hundredth.
 */
export function learningRateAt(
  epoch: number,
  schedule: Pick<RunConfig, "learningRate" | "lrMilestones" | "lrGamma">,
): number {
  const passed = schedule.lrMilestones.filter((m) => epoch > m).length;
  // toPrecision: 0.001 · 0.1² is 1.0000000000000002e-5 in binary floating point.
  return Number((schedule.learningRate * schedule.lrGamma ** passed).toPrecision(12));
}

/** What is saved after every epoch to resume from. */
export interface TrainingState {
  /** Epochs completed. */
  epoch: number;
  /** Training steps taken (drives the dropout masks). */
  globalStep: number;
  bestValidLoss: number;
  bestEpoch: number;
  history: EpochRecord[];
  config: RunConfig;
}

export interface TrainOptions {
  config: RunConfig;
  classNames: string[];
  train: readonly ImageItem[];
  validation: readonly ImageItem[];
  cache: ImageCache;
  /** The run folder: `best/` (best checkpoint) and `state/` (resume state) are written here. */
  runDir: string;
  /** Where the starting weights came from (recorded in checkpoints). */
  weights: WeightsInfo;
  /** Continue from this state (see {@link loadTrainingState}); the model must be the state's. */
  resume?: TrainingState & { optimizerWeights: NamedTensor[] };
  /** Receives the per-epoch lines ("Epoch 3/8 …", "Validation loss decreased …"). */
  log?: (line: string) => void;
  /** No progress bars (tests). */
  quiet?: boolean;
  /** Stop after this epoch as if interrupted (tests of --resume). */
  stopAfterEpoch?: number;
  /** Called after each epoch's record, checkpoint and state are written. */
  onEpoch?: (record: EpochRecord) => void;
}

export interface TrainResult {
  history: EpochRecord[];
  bestEpoch: number;
  bestValidLoss: number;
  /** Directory of the best checkpoint. */
  bestDir: string;
  /** How the training steps ran (see createStepEngine). */
  engine: StepEngine["kind"];
}

/** A named tensor as TF.js optimizers save and restore them. */
export interface NamedTensor {
  name: string;
  tensor: tf.Tensor;
}

export class TrainingError extends Error {
  override name = "TrainingError";
}

const fmt = (v: number) => (Number.isFinite(v) ? v.toFixed(4) : "inf");
const pct = (v: number) => `${(100 * v).toFixed(1)}%`;

/**
 * Which gradient implementation training uses: ours, which releases memory during the backward
 * pass (default), or TF.js's `optimizer.minimize` (`COVID_CXR_GRADIENTS=tfjs`, for comparison).
 */
function useLeanGradients(): boolean {
  return Deno.env.get("COVID_CXR_GRADIENTS") !== "tfjs";
}

/**
 * One training step: forward in training mode, cross-entropy, backward, SGD update.
 * @param x Tensor4D [B, S, S, 3] in 0..255; labels Tensor1D [B] int32 (neither disposed).
 * @returns the batch's mean loss and the predicted classes (caller disposes both).
 */
export function trainStep(
  model: tf.LayersModel,
  optimizer: tf.Optimizer,
  variables: tf.Variable[],
  x: tf.Tensor4D,
  labels: tf.Tensor1D,
  numClasses: number,
): { loss: tf.Scalar; predicted: tf.Tensor1D } {
  let predicted: tf.Tensor1D | undefined;
  const f = () => {
    const logits = model.apply(x, { training: true }) as tf.Tensor2D;
    predicted = tf.keep(tf.argMax(logits, 1));
    return tf.losses.softmaxCrossEntropy(tf.oneHot(labels, numClasses), logits) as tf.Scalar;
  };
  const loss = useLeanGradients()
    ? minimizeLean(optimizer, f, variables)
    : optimizer.minimize(f, true, variables)!;
  return { loss, predicted: predicted! };
}

/** Optimizer state as `tf.io.encodeWeights` gives it (bytes and their specs). */
export type EncodedWeights = Awaited<ReturnType<typeof tf.io.encodeWeights>>;

/**
 * How training steps run: "graph" (the whole step as one TensorFlow graph, lib/graph_train.ts;
 * native backend) or "eager" (TF.js operations on the layers model's own variables).
 */
export interface StepEngine {
  readonly kind: "graph" | "eager";
  setLearningRate(lr: number): void;
  /** One step on a batch (x and labels are not disposed): the mean loss, predicted classes. */
  step(x: tf.Tensor4D, labels: tf.Tensor1D, globalStep: number): Promise<StepResult>;
  /** Make the layers model hold the current weights (no-op when they live there already). */
  syncToModel(): void;
  /** The momentum buffers, named and ordered as TF.js's optimizer saves them, encoded. */
  optimizerState(): Promise<EncodedWeights>;
  dispose(): void;
}

export interface StepResult {
  loss: number;
  predicted: ArrayLike<number>;
}

export interface StepEngineOptions {
  learningRate: number;
  momentum: number;
  numClasses: number;
  /** Momentum buffers of an interrupted run (by position; not disposed here). */
  optimizerWeights?: NamedTensor[];
}

let graphWarned = false;

/**
 * The fastest step engine available: graph mode with the native backend (unless
 * `COVID_CXR_TRAIN_ENGINE=eager`), else eager. Both compute the same step (a test compares them).
 */
export async function createStepEngine(
  model: tf.LayersModel,
  opts: StepEngineOptions,
  kind: "graph" | "eager" | undefined = engineFromEnv(),
): Promise<StepEngine> {
  if (kind !== "eager" && tf.getBackend() === "tensorflow") {
    try {
      return graphStepEngine(model, opts);
    } catch (error) {
      if (kind === "graph") throw error;
      if (!graphWarned) console.warn(`graph-mode training unavailable, training eagerly: ${error}`);
      graphWarned = true;
    }
  } else if (kind === "graph") {
    throw new Error("graph-mode training needs the native TensorFlow backend");
  }
  return await eagerStepEngine(model, opts);
}

function engineFromEnv(): "graph" | "eager" | undefined {
  const v = Deno.env.get("COVID_CXR_TRAIN_ENGINE");
  if (v === undefined || v === "") return undefined;
  if (v !== "graph" && v !== "eager") {
    throw new TrainingError(`COVID_CXR_TRAIN_ENGINE must be "graph" or "eager", not "${v}"`);
  }
  return v;
}

/** TF.js's momentum optimizer on the layers model's variables, one step at a time. */
async function eagerStepEngine(
  model: tf.LayersModel,
  opts: StepEngineOptions,
): Promise<StepEngine> {
  const optimizer = tf.train.momentum(opts.learningRate, opts.momentum);
  const variables = model.trainableWeights.map((w) => w.read() as tf.Variable);
  const dropouts = dropoutLayers(model);
  if (opts.optimizerWeights) {
    // Momentum buffers are matched to variables by position, as TF.js's optimizer keeps them.
    // setWeights() keeps its own copies.
    await optimizer.setWeights(opts.optimizerWeights.map((w) => ({ ...w })));
  }
  return {
    kind: "eager",
    // The step uses a cached scalar -lr; setLearningRate replaces it (assigning the field would not).
    setLearningRate: (lr) => optimizer.setLearningRate(lr),
    step: async (x, labels, globalStep) => {
      for (const d of dropouts) d.step = globalStep;
      const { loss, predicted } = trainStep(
        model,
        optimizer,
        variables,
        x,
        labels,
        opts.numClasses,
      );
      const value = (await loss.data())[0];
      const p = await predicted.data();
      tf.dispose([loss, predicted]);
      return { loss: value, predicted: p };
    },
    syncToModel: () => {},
    optimizerState: async () => {
      const named = await optimizer.getWeights();
      const encoded = await tf.io.encodeWeights(named);
      // getWeights() makes a fresh scalar for the iteration count; the momentum buffers are live.
      tf.dispose(named.filter((w) => w.name === "iter").map((w) => w.tensor));
      return encoded;
    },
    dispose: () => {
      optimizer.dispose();
      // MomentumOptimizer.dispose() forgets SGD's cached -lr scalar.
      (optimizer as unknown as { c?: tf.Tensor }).c?.dispose();
    },
  };
}

/** Loss and accuracy of `model` on `items` in inference mode. */
export async function validationPass(
  model: tf.LayersModel,
  items: readonly ImageItem[],
  opts: {
    cache: ImageCache;
    batchSize: number;
    numClasses: number;
    mask?: InputMask;
    quiet?: boolean;
    label?: string;
  },
): Promise<{ loss: number; accuracy: number }> {
  let lossSum = 0, correct = 0;
  const progress = createProgress(
    opts.label ?? "  valid",
    batchCount(items.length, opts.batchSize),
    {
      quiet: opts.quiet,
    },
  );
  let done = 0;
  // BatchNorm folded for this pass (the weights are this epoch's).
  const predictor = predictorFor(model);
  try {
    for await (
      const batch of iterateBatches(items, {
        batchSize: opts.batchSize,
        cache: opts.cache,
        mask: opts.mask,
      })
    ) {
      const [losses, predicted] = tf.tidy(() => {
        const logits = predictor.predict(batch.x);
        const onehot = tf.oneHot(batch.labels, opts.numClasses);
        return [
          tf.losses.softmaxCrossEntropy(onehot, logits, undefined, undefined, tf.Reduction.NONE),
          tf.argMax(logits, 1),
        ];
      });
      const [l, p] = [await losses.data(), await predicted.data()];
      tf.dispose([losses, predicted, batch.x, batch.labels]);
      for (let i = 0; i < l.length; i++) {
        lossSum += l[i];
        if (p[i] === batch.items[i].label) correct++;
      }
      progress.update(++done);
    }
  } finally {
    predictor.dispose();
  }
  progress.end();
  return { loss: lossSum / items.length, accuracy: correct / items.length };
}

/**
 * Train `model` for `config.epochs` epochs (or the rest of them, when resuming) and keep the best
 * checkpoint by validation loss in `runDir/best`.
 */
export async function trainModel(model: tf.LayersModel, opts: TrainOptions): Promise<TrainResult> {
  await initBackend();
  const { config } = opts;
  const log = opts.log ?? ((line: string) => console.log(line));
  const numClasses = opts.classNames.length;
  const bestDir = path.join(opts.runDir, "best");
  const engine = await createStepEngine(model, {
    learningRate: config.learningRate,
    momentum: config.momentum,
    numClasses,
    optimizerWeights: opts.resume?.optimizerWeights,
  });

  const history: EpochRecord[] = [...(opts.resume?.history ?? [])];
  let globalStep = opts.resume?.globalStep ?? 0;
  let bestValidLoss = opts.resume?.bestValidLoss ?? Infinity;
  let bestEpoch = opts.resume?.bestEpoch ?? 0;
  if (opts.resume) tf.dispose(opts.resume.optimizerWeights.map((w) => w.tensor));
  const firstEpoch = (opts.resume?.epoch ?? 0) + 1;
  const steps = batchCount(opts.train.length, config.batchSize);

  try {
    for (let epoch = firstEpoch; epoch <= config.epochs; epoch++) {
      const started = performance.now();
      let peakRss = Deno.memoryUsage().rss;
      const learningRate = learningRateAt(epoch, config);
      engine.setLearningRate(learningRate);

      // Training phase.
      let lossSum = 0, correct = 0, seen = 0;
      const progress = createProgress(`Epoch ${epoch}/${config.epochs} train`, steps, {
        quiet: opts.quiet,
      });
      let step = 0;
      for await (
        const batch of iterateBatches(opts.train, {
          batchSize: config.batchSize,
          cache: opts.cache,
          shuffle: Rng.stream(config.seed, "shuffle", epoch),
          augment: { rng: Rng.stream(config.seed, "augment", epoch), options: config.augmentation },
          mask: config.inputMask,
        })
      ) {
        const { loss: value, predicted: p } = await engine.step(batch.x, batch.labels, globalStep);
        tf.dispose([batch.x, batch.labels]);
        if (!Number.isFinite(value)) {
          throw new TrainingError(
            `Training diverged: loss ${value} at epoch ${epoch}, step ${step + 1}. ` +
              `Lower the learning rate (--lr, now ${learningRate}).`,
          );
        }
        const n = batch.items.length;
        lossSum += value * n;
        seen += n;
        batch.items.forEach((item, i) => {
          if (p[i] === item.label) correct++;
        });
        globalStep++;
        peakRss = Math.max(peakRss, Deno.memoryUsage().rss);
        progress.update(++step, `loss ${(lossSum / seen).toFixed(4)}`);
      }
      progress.end();

      // Validation phase, on this epoch's weights.
      engine.syncToModel();
      const valid = await validationPass(model, opts.validation, {
        cache: opts.cache,
        batchSize: config.batchSize,
        numClasses,
        mask: config.inputMask,
        quiet: opts.quiet,
      });
      const improved = valid.loss < bestValidLoss;
      const record: EpochRecord = {
        epoch,
        learningRate,
        trainLoss: lossSum / seen,
        trainAccuracy: correct / seen,
        validLoss: valid.loss,
        validAccuracy: valid.accuracy,
        improved,
        seconds: (performance.now() - started) / 1000,
        peakRssMB: Math.round(Math.max(peakRss, Deno.memoryUsage().rss) / 2 ** 20),
      };
      history.push(record);
      log(
        `Epoch ${epoch}/${config.epochs}  train loss ${fmt(record.trainLoss)}  acc ${
          pct(record.trainAccuracy)
        }  ` +
          `valid loss ${fmt(record.validLoss)}  acc ${
            pct(record.validAccuracy)
          }  lr ${learningRate}  ` +
          `(${record.seconds.toFixed(0)} s)`,
      );
      const meta: CheckpointInput = {
        classNames: opts.classNames,
        imageSize: config.imageSize,
        normalization: opts.weights.normalization,
        weights: opts.weights,
        training: config as unknown as Record<string, unknown>,
        epoch,
        metrics: { validLoss: valid.loss, validAccuracy: valid.accuracy },
      };
      if (improved) {
        log(
          `Validation loss decreased (${fmt(bestValidLoss)} --> ${
            fmt(valid.loss)
          }). Saving model ...`,
        );
        bestValidLoss = valid.loss;
        bestEpoch = epoch;
        await saveCheckpoint(bestDir, model, meta);
      }
      await saveTrainingState(opts.runDir, model, await engine.optimizerState(), meta, {
        epoch,
        globalStep,
        bestValidLoss,
        bestEpoch,
        history,
        config,
      });
      await writeHistory(opts.runDir, history);
      opts.onEpoch?.(record);
      if (opts.stopAfterEpoch !== undefined && epoch >= opts.stopAfterEpoch) break;
    }
  } finally {
    engine.dispose();
  }
  return { history, bestEpoch, bestValidLoss, bestDir, engine: engine.kind };
}

/** Write `history.json` and `history.csv` into the run folder. */
export async function writeHistory(runDir: string, history: readonly EpochRecord[]): Promise<void> {
  await writeJsonAtomic(path.join(runDir, "history.json"), history);
  const columns: (keyof EpochRecord)[] = [
    "epoch",
    "learningRate",
    "trainLoss",
    "trainAccuracy",
    "validLoss",
    "validAccuracy",
    "improved",
    "seconds",
    "peakRssMB",
  ];
  const csv =
    [columns.join(","), ...history.map((r) => columns.map((c) => r[c]).join(","))].join("\n") +
    "\n";
  await writeFileAtomic(path.join(runDir, "history.csv"), csv);
}

/** Save everything needed to resume into `runDir/state`, replacing the previous epoch's. */
async function saveTrainingState(
  runDir: string,
  model: tf.LayersModel,
  encoded: EncodedWeights,
  meta: CheckpointInput,
  state: TrainingState,
): Promise<void> {
  await replaceDirAtomic(path.join(runDir, "state"), async (tmp) => {
    await saveCheckpoint(path.join(tmp, "model"), model, meta);
    await writeFileAtomic(
      path.join(tmp, "optimizer.bin"),
      new Uint8Array(encoded.data as ArrayBuffer),
    );
    await writeJsonAtomic(path.join(tmp, "optimizer.json"), encoded.specs);
    await writeJsonAtomic(path.join(tmp, "state.json"), state);
  });
}

/**
 * Load the state an interrupted run saved after its last completed epoch.
 * @returns the state, the model as it was (caller disposes) and the optimizer's buffers.
 */
export async function loadTrainingState(
  runDir: string,
): Promise<TrainingState & { model: tf.LayersModel; optimizerWeights: NamedTensor[] }> {
  const dir = path.join(runDir, "state");
  if (!fs.existsSync(path.join(dir, "state.json"))) {
    throw new TrainingError(
      `Cannot resume "${runDir}": no state/state.json (the run saves it after each completed epoch). ` +
        "Start a new run instead.",
    );
  }
  const state = JSON.parse(fs.readFileSync(path.join(dir, "state.json"), "utf8")) as TrainingState;
  const { model } = await loadCheckpoint(path.join(dir, "model"));
  const specs = JSON.parse(fs.readFileSync(path.join(dir, "optimizer.json"), "utf8"));
  const bytes = fs.readFileSync(path.join(dir, "optimizer.bin"));
  const map = tf.io.decodeWeights(
    bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength),
    specs,
  );
  const optimizerWeights = (specs as { name: string }[]).map((s) => ({
    name: s.name,
    tensor: map[s.name],
  }));
  return { ...state, model, optimizerWeights };
}
