/**
 * What a run saves after every epoch, so `--resume` continues exactly: the model, the optimizer's
 * momentum buffers, the history and the step count (`state/`), and the history as JSON and CSV.
 */
import * as fs from "node:fs";
import * as path from "node:path";
import { tf } from "../backend.ts";
import type { RunConfig } from "../config.ts";
import { recoverDir, replaceDirAtomic, writeFileAtomic, writeJsonAtomic } from "../files.ts";
import { type CheckpointInput, loadCheckpoint, saveCheckpoint } from "../model/mod.ts";
import type { EncodedWeights, NamedTensor } from "../engine/mod.ts";
import { UserError } from "../errors.ts";

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
  /** The process's peak resident memory by the end of the epoch, in MB (lib/memory.ts). */
  peakRssMB: number;
  /** Which kernels the epoch's steps ran (lib/engine/kernels.ts); absent before 2026-12. */
  kernels?: "fused" | "standard";
}

/** A problem that stops training (e.g. a diverging loss), with what to change. */
export class TrainingError extends UserError {
  override name = "TrainingError";
}

/** An epoch stopped part-way (Ctrl-C): where it was, and its running sums. */
export interface PartialEpoch {
  /** The epoch in progress (1-based). */
  epoch: number;
  /** Training steps of it done. */
  step: number;
  lossSum: number;
  correct: number;
  seen: number;
  /** Seconds it had run. */
  seconds: number;
  peakRss: number;
}

/** What is saved after every epoch (and at a polite stop) to resume from. */
export interface TrainingState {
  /** Epochs completed. */
  epoch: number;
  /** The next epoch, stopped part-way, when the run was stopped with Ctrl-C. */
  partial?: PartialEpoch;
  /** Training steps taken (drives the dropout masks). */
  globalStep: number;
  bestValidLoss: number;
  bestEpoch: number;
  history: EpochRecord[];
  config: RunConfig;
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
export async function saveTrainingState(
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
 * Load the state an interrupted run saved after its last completed epoch (or, stopped with
 * Ctrl-C, part-way through the next).
 * @returns the state, the model as it was (caller disposes) and the optimizer's buffers.
 */
export async function loadTrainingState(
  runDir: string,
): Promise<TrainingState & { model: tf.LayersModel; optimizerWeights: NamedTensor[] }> {
  const dir = path.join(runDir, "state");
  recoverDir(dir); // a save cut short by a kill: finished or undone
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
