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
import { createPredictor, createStepEngine, type EngineKind } from "../engine/mod.ts";
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
 * Train `model` for `config.epochs` epochs (or the rest of them, when resuming) and keep the best
 * checkpoint by validation loss in `runDir/best`.
 */
export function trainModel(model: tf.LayersModel, opts: TrainOptions): Promise<TrainResult> {
  // Ctrl-C during training stops after the current step, saving it (lib/stop.ts).
  return stoppableWork(() => train(model, opts));
}

async function train(model: tf.LayersModel, opts: TrainOptions): Promise<TrainResult> {
  await initBackend();
  const { config } = opts;
  const log = opts.log ?? ((line: string) => console.log(line));
  const numClasses = opts.classNames.length;
  const bestDir = path.join(opts.runDir, "best");
  if (opts.validation.length === 0) {
    throw new TrainingError(
      `No validation images: a validation fraction of ${config.validationFraction} of ` +
        `${opts.train.length} training images holds none out. The method keeps the weights with ` +
        "the lowest validation loss, so it needs some: raise --validation-fraction (the paper's " +
        "is 0.14).",
    );
  }
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
  /** An epoch resumed part-way: where it stopped and its running sums. */
  let partial: PartialEpoch | undefined = opts.resume?.partial;
  const checkpointMeta = (
    epoch: number,
    metrics?: CheckpointInput["metrics"],
  ): CheckpointInput => ({
    classNames: opts.classNames,
    imageSize: config.imageSize,
    normalization: opts.weights.normalization,
    convention: conventionOf(model),
    weights: opts.weights,
    training: config as unknown as Record<string, unknown>,
    epoch,
    ...(metrics ? { metrics } : {}),
  });

  try {
    for (let epoch = firstEpoch; epoch <= config.epochs; epoch++) {
      const resumed = partial?.epoch === epoch ? partial : undefined;
      partial = undefined;
      const started = performance.now() - (resumed?.seconds ?? 0) * 1000;
      let peakRss = Math.max(resumed?.peakRss ?? 0, Deno.memoryUsage().rss);
      const learningRate = learningRateAt(epoch, config);
      engine.setLearningRate(learningRate);

      // Training phase (from where a polite stop left it).
      let lossSum = resumed?.lossSum ?? 0, correct = resumed?.correct ?? 0;
      let seen = resumed?.seen ?? 0;
      const progress = createProgress(`Epoch ${epoch}/${config.epochs} train`, steps, {
        quiet: opts.quiet,
      });
      let step = resumed?.step ?? 0;
      for await (
        const batch of iterateBatches(opts.train, {
          batchSize: config.batchSize,
          cache: opts.cache,
          shuffle: Rng.stream(config.seed, "shuffle", epoch),
          augment: { rng: Rng.stream(config.seed, "augment", epoch), options: config.augmentation },
          mask: config.inputMask,
          skip: step,
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
        await yieldToEventLoop(); // lets a Ctrl-C listener run between steps
        if (stopRequested() && step < steps) {
          // Ctrl-C: save where this epoch is, and stop.
          await progress.end(`Epoch ${epoch}/${config.epochs} train: stopped after step ${step}`);
          await saveTrainingState(
            opts.runDir,
            model,
            await engine.optimizerState(),
            checkpointMeta(epoch - 1),
            {
              epoch: epoch - 1,
              partial: {
                epoch,
                step,
                lossSum,
                correct,
                seen,
                seconds: (performance.now() - started) / 1000,
                peakRss,
              },
              globalStep,
              bestValidLoss,
              bestEpoch,
              history,
              config,
            },
          );
          throw new Interrupted(
            `Stopped at epoch ${epoch}, step ${step} of ${steps}; everything up to it is saved. ` +
              `Continue with:\n  deno task reproduce --resume ${opts.runDir}`,
          );
        }
      }
      await progress.end();

      // Validation phase, on this epoch's weights.
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
        `Epoch ${epoch}/${config.epochs}  train loss ${lossText(record.trainLoss)}  acc ${
          percent(record.trainAccuracy)
        }  ` +
          `valid loss ${lossText(record.validLoss)}  acc ${
            percent(record.validAccuracy)
          }  lr ${learningRate}  ` +
          `(${record.seconds.toFixed(0)} s)`,
      );
      const meta = checkpointMeta(epoch, { validLoss: valid.loss, validAccuracy: valid.accuracy });
      if (improved) {
        log(
          `Validation loss decreased (${lossText(bestValidLoss)} --> ${
            lossText(valid.loss)
          }). Saving model ...`,
        );
        bestValidLoss = valid.loss;
        bestEpoch = epoch;
        await saveCheckpoint(bestDir, model, meta);
        faultPoint("best-saved");
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
      faultPoint("epoch-saved");
      if (stopRequested() && epoch < config.epochs) {
        throw new Interrupted(
          `Stopped after epoch ${epoch}; everything up to it is saved. Continue with:\n` +
            `  deno task reproduce --resume ${opts.runDir}`,
        );
      }
    }
  } finally {
    engine.dispose();
  }
  return { history, bestEpoch, bestValidLoss, bestDir, engine: engine.kind };
}
