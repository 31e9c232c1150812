/**
 * Training as the paper does it: cross-entropy, SGD with momentum, learning rate ×0.1 after
 * epochs 4 and 6, and the weights with the lowest validation loss kept. Each epoch has a training
 * phase (dropout on, BatchNorm statistics updated) and a validation phase (inference mode).
 *
 * After every epoch the whole training state (weights, optimizer momentum, history, step count)
 * is saved, so `--resume` continues an interrupted run exactly: the data order, augmentation and
 * dropout of every epoch come from seeded streams, not from state carried in memory. A stop asked
 * for with Ctrl-C (lib/stop.ts) saves the same state after the current step, with the epoch's
 * position and running sums, and the resumed epoch picks up at the next batch.
 */
import * as path from "node:path";
import { initBackend, tf } from "../backend.ts";
import type { InputMask, RunConfig } from "../config.ts";
import { faultPoint } from "../files.ts";
import { lossText, percent } from "../format.ts";
import { peakResident, releaseFreedMemory } from "../memory.ts";
import { createProgress } from "../progress.ts";
import { Rng } from "../rng.ts";
import { Interrupted, stoppableWork, stopRequested, yieldToEventLoop } from "../stop.ts";
import { batchCount, type ImageCache, type ImageItem, iterateBatches } from "../data/mod.ts";
import {
  type CheckpointInput,
  conventionOf,
  saveCheckpoint,
  type WeightsInfo,
} from "../model/mod.ts";
import {
  createPredictor,
  createStepEngine,
  type EngineKind,
  type KernelChoice,
  type NativeAugmenter,
  nativeAugmenter,
} from "../engine/mod.ts";
import { learningRateAt } from "./schedule.ts";
import {
  type EpochRecord,
  type PartialEpoch,
  saveTrainingState,
  TrainingError,
  type TrainingState,
  writeHistory,
} from "./state.ts";
import type { NamedTensor } from "../engine/mod.ts";

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
  /** Called after each epoch's record, checkpoint and state are written. */
  onEpoch?: (record: EpochRecord) => void;
}

export interface TrainResult {
  history: EpochRecord[];
  bestEpoch: number;
  bestValidLoss: number;
  /** Directory of the best checkpoint. */
  bestDir: string;
  /** How the training steps ran (lib/engine/select.ts). */
  engine: EngineKind;
  /** Which kernels they used, fused or standard (lib/engine/kernels.ts). */
  kernels: KernelChoice;
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
  const predictor = createPredictor(model);
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
        if (!Number.isFinite(l[i])) {
          throw new TrainingError(
            `The validation loss of ${batch.items[i].relPath} is ${
              l[i]
            }: the model's weights are ` +
              "not finite (training diverged). Lower the learning rate (--lr).",
          );
        }
        lossSum += l[i];
        if (p[i] === batch.items[i].label) correct++;
      }
      progress.update(++done);
    }
  } finally {
    predictor.dispose();
  }
  await progress.end();
  return { loss: lossSum / items.length, accuracy: correct / items.length };
}

/**
 * Train a model as the paper does: `config.epochs` epochs (or the rest of them, when resuming) of
 * SGD with momentum and the step schedule, validating after each and keeping the weights with
 * the lowest validation loss in `runDir/best`. Ctrl-C stops after the current step, saving it.
 *
 * @param model The MobileNetV3-Large to train (trained in place; the caller disposes it).
 * @param opts The run's settings, images, decode cache and folder (see {@link TrainOptions}).
 * @returns The per-epoch history, the kept epoch and where its checkpoint is.
 *
 * @example
 * ```ts
 * const { history, bestDir } = await trainModel(model, {
 *   config, classNames, train: splits.train, validation: splits.validation, cache, runDir, weights,
 * });
 * ```
 */
export function trainModel(model: tf.LayersModel, opts: TrainOptions): Promise<TrainResult> {
  // Ctrl-C during training stops after the current step, saving it (lib/stop.ts).
  return stoppableWork(() => train(model, opts));
}

/** What the epochs share: the model, its step engine, the options and the running bests. */
interface Training {
  model: tf.LayersModel;
  engine: Awaited<ReturnType<typeof createStepEngine>>;
  /** The fused kernels' batch augmentation, where they run the step (the same results). */
  augmenter?: NativeAugmenter;
  opts: TrainOptions;
  log: (line: string) => void;
  steps: number;
  globalStep: number;
  bestValidLoss: number;
  bestEpoch: number;
  history: EpochRecord[];
}

/** The training phase's running sums (saved with a polite stop). */
type EpochSums = Omit<PartialEpoch, "epoch">;

async function train(model: tf.LayersModel, opts: TrainOptions): Promise<TrainResult> {
  await initBackend();
  const { config, resume } = opts;
  if (opts.validation.length === 0) {
    throw new TrainingError(
      `No validation images: a validation fraction of ${config.validationFraction} of ` +
        `${opts.train.length} training images holds none out. The method keeps the weights with ` +
        "the lowest validation loss, so it needs some: raise --validation-fraction (the paper's " +
        "is 0.14).",
    );
  }
  const t: Training = {
    model,
    engine: await createStepEngine(model, {
      learningRate: config.learningRate,
      momentum: config.momentum,
      numClasses: opts.classNames.length,
      optimizerWeights: resume?.optimizerWeights,
    }),
    opts,
    log: opts.log ?? ((line: string) => console.log(line)),
    steps: batchCount(opts.train.length, config.batchSize),
    globalStep: resume?.globalStep ?? 0,
    bestValidLoss: resume?.bestValidLoss ?? Infinity,
    bestEpoch: resume?.bestEpoch ?? 0,
    history: [...(resume?.history ?? [])],
  };
  if (resume) tf.dispose(resume.optimizerWeights.map((w) => w.tensor));
  try {
    if (t.engine.kernels.kind === "fused") t.augmenter = nativeAugmenter();
    for (let epoch = (resume?.epoch ?? 0) + 1; epoch <= config.epochs; epoch++) {
      // An epoch a polite stop cut short picks up where it was.
      const partial = resume?.partial?.epoch === epoch ? resume.partial : undefined;
      const sums = await trainEpoch(t, epoch, partial);
      await saveEpoch(t, epoch, sums);
      if (stopRequested() && epoch < config.epochs) {
        throw new Interrupted(
          `Stopped after epoch ${epoch}; everything up to it is saved. Continue with:\n` +
            `  deno task reproduce --resume ${opts.runDir}`,
        );
      }
    }
  } finally {
    t.augmenter?.dispose();
    t.engine.dispose();
    // What the training session freed, back to the system before the evaluation allocates
    // (446 px, batch 4: the resident size 1,751 → 1,580 MB).
    releaseFreedMemory();
  }
  return {
    history: t.history,
    bestEpoch: t.bestEpoch,
    bestValidLoss: t.bestValidLoss,
    bestDir: path.join(opts.runDir, "best"),
    engine: t.engine.kind,
    kernels: t.engine.kernels,
  };
}

/** The checkpoint metadata of the model after `epoch` epochs. */
function checkpointMeta(
  t: Training,
  epoch: number,
  metrics?: CheckpointInput["metrics"],
): CheckpointInput {
  return {
    classNames: t.opts.classNames,
    imageSize: t.opts.config.imageSize,
    normalization: t.opts.weights.normalization,
    convention: conventionOf(t.model),
    weights: t.opts.weights,
    training: t.opts.config as unknown as Record<string, unknown>,
    epoch,
    ...(metrics ? { metrics } : {}),
  };
}

/**
 * One epoch's training phase: the seeded batch order and augmentation of this epoch, one engine
 * step per batch (lib/engine: one TensorFlow graph call, or TF.js op by op). From `partial`'s step
 * when an earlier stop cut the epoch short. A stop asked for saves the epoch so far and throws.
 */
async function trainEpoch(t: Training, epoch: number, partial?: PartialEpoch): Promise<EpochSums> {
  const { config } = t.opts;
  const started = performance.now() - (partial?.seconds ?? 0) * 1000;
  const sums: EpochSums = {
    step: partial?.step ?? 0,
    lossSum: partial?.lossSum ?? 0,
    correct: partial?.correct ?? 0,
    seen: partial?.seen ?? 0,
    seconds: 0,
    peakRss: partial?.peakRss ?? 0, // an interrupted process's peak; this one's is read at the end
  };
  const learningRate = learningRateAt(epoch, config);
  t.engine.setLearningRate(learningRate);
  const progress = createProgress(`Epoch ${epoch}/${config.epochs} train`, t.steps, {
    quiet: t.opts.quiet,
  });
  for await (
    const batch of iterateBatches(t.opts.train, {
      batchSize: config.batchSize,
      cache: t.opts.cache,
      shuffle: Rng.stream(config.seed, "shuffle", epoch),
      augment: {
        rng: Rng.stream(config.seed, "augment", epoch),
        options: config.augmentation,
        apply: t.augmenter?.apply,
      },
      mask: config.inputMask,
      skip: sums.step,
    })
  ) {
    const { loss, predicted } = await t.engine.step(batch.x, batch.labels, t.globalStep);
    tf.dispose([batch.x, batch.labels]);
    if (!Number.isFinite(loss)) {
      throw new TrainingError(
        `Training diverged: loss ${loss} at epoch ${epoch}, step ${sums.step + 1}. ` +
          `Lower the learning rate (--lr, now ${learningRate}).`,
      );
    }
    sums.lossSum += loss * batch.items.length;
    sums.seen += batch.items.length;
    batch.items.forEach((item, i) => {
      if (predicted[i] === item.label) sums.correct++;
    });
    t.globalStep++;
    progress.update(++sums.step, `loss ${(sums.lossSum / sums.seen).toFixed(4)}`);
    await yieldToEventLoop(); // lets a Ctrl-C listener run between steps
    if (stopRequested() && sums.step < t.steps) {
      sums.seconds = (performance.now() - started) / 1000;
      sums.peakRss = Math.max(sums.peakRss, peakResident().bytes);
      await progress.end(`Epoch ${epoch}/${config.epochs} train: stopped after step ${sums.step}`);
      await saveState(t, epoch - 1, { epoch, ...sums });
      throw new Interrupted(
        `Stopped at epoch ${epoch}, step ${sums.step} of ${t.steps}; everything up to it is ` +
          `saved. Continue with:\n  deno task reproduce --resume ${t.opts.runDir}`,
      );
    }
  }
  await progress.end();
  sums.seconds = (performance.now() - started) / 1000;
  return sums;
}

/** The resume state after `epoch` complete epochs (and `partial`, the next one's start). */
async function saveState(t: Training, epoch: number, partial?: PartialEpoch): Promise<void> {
  await saveTrainingState(
    t.opts.runDir,
    t.model,
    await t.engine.optimizerState(),
    checkpointMeta(t, epoch),
    {
      epoch,
      ...(partial ? { partial } : {}),
      globalStep: t.globalStep,
      bestValidLoss: t.bestValidLoss,
      bestEpoch: t.bestEpoch,
      history: t.history,
      config: t.opts.config,
    },
  );
}

/**
 * After an epoch's training phase: validate on its weights, record the epoch, keep the weights
 * when the validation loss is the lowest so far, and save the resume state and the history.
 */
async function saveEpoch(t: Training, epoch: number, sums: EpochSums): Promise<void> {
  const { config } = t.opts;
  const started = performance.now();
  const valid = await validationPass(t.model, t.opts.validation, {
    cache: t.opts.cache,
    batchSize: config.batchSize,
    numClasses: t.opts.classNames.length,
    mask: config.inputMask,
    quiet: t.opts.quiet,
  });
  // The validation graph's memory, freed, back to the system before the next epoch's steps
  // allocate on other threads (a 446 px run's peak about 80 MB lower).
  releaseFreedMemory();
  const improved = valid.loss < t.bestValidLoss;
  const record: EpochRecord = {
    epoch,
    learningRate: learningRateAt(epoch, config),
    trainLoss: sums.lossSum / sums.seen,
    trainAccuracy: sums.correct / sums.seen,
    validLoss: valid.loss,
    validAccuracy: valid.accuracy,
    improved,
    seconds: sums.seconds + (performance.now() - started) / 1000,
    peakRssMB: Math.round(Math.max(sums.peakRss, peakResident().bytes) / 2 ** 20),
    kernels: t.engine.kernels.kind,
  };
  t.history.push(record);
  t.log(
    `Epoch ${epoch}/${config.epochs}  train loss ${lossText(record.trainLoss)}  acc ${
      percent(record.trainAccuracy)
    }  valid loss ${lossText(record.validLoss)}  acc ${
      percent(record.validAccuracy)
    }  lr ${record.learningRate}  (${record.seconds.toFixed(0)} s)`,
  );
  if (improved) {
    t.log(
      `Validation loss decreased (${lossText(t.bestValidLoss)} --> ${
        lossText(valid.loss)
      }). Saving model ...`,
    );
    t.bestValidLoss = valid.loss;
    t.bestEpoch = epoch;
    await saveCheckpoint(
      path.join(t.opts.runDir, "best"),
      t.model,
      checkpointMeta(t, epoch, { validLoss: valid.loss, validAccuracy: valid.accuracy }),
    );
    faultPoint("best-saved");
  }
  await saveState(t, epoch);
  await writeHistory(t.opts.runDir, t.history);
  t.opts.onEpoch?.(record);
  faultPoint("epoch-saved");
}
