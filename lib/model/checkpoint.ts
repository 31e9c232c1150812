/**
 * Self-describing checkpoints: TF.js `model.json` + `weights.bin`, and `metadata.json` with what a
 * reader needs to use the model correctly (class names in index order, input size, normalisation,
 * where the weights came from, the training configuration and metrics, the code version).
 */
import * as fs from "node:fs";
import * as path from "node:path";
import { createHash } from "node:crypto";
import { initBackend, tf } from "../backend.ts";
import type { InputMask } from "../config.ts";
import { UserError } from "../errors.ts";
import { recoverDir, replaceDirAtomic, writeFileAtomic, writeJsonAtomic } from "../files.ts";
import { codeVersion } from "../provenance.ts";
import { Normalize } from "./layers.ts"; // also registers the custom layers with TF.js
import { type Convention, conventionOf } from "./mobilenet_v3.ts";
import type { NormalizationSpec } from "./normalization.ts";
import type { WeightsInfo } from "./weights.ts";

export const CHECKPOINT_FORMAT = "covid-cxr-checkpoint/1";

export interface CheckpointMetadata {
  format: typeof CHECKPOINT_FORMAT;
  architecture: "MobileNetV3-Large";
  /** Class names in output index order. */
  classNames: string[];
  /** Square input size in pixels. */
  imageSize: number;
  /** Input normalisation inside the model's first layer (pixels in 0..255 go in). */
  normalization: NormalizationSpec;
  /**
   * The reference implementation the model follows (padding, initialisation): "torchvision" or
   * "keras". Checkpoints written before this field existed are Keras's.
   */
  convention: Convention;
  /** Where the weights training started from. */
  weights: WeightsInfo;
  /** The training configuration, when the checkpoint comes from training. */
  training?: Record<string, unknown>;
  /**
   * Temperature scaling fitted on the run's validation split (lib/evaluate/calibration.ts):
   * evaluate and predict divide the logits by `temperature` and say so.
   */
  calibration?: {
    temperature: number;
    fittedOn: "validation";
    n: number;
    nllBefore: number;
    nllAfter: number;
    /** Why no temperature was fitted (then T = 1), when none was. */
    notFitted?: string;
  };
  /** For a model read from a PyTorch file: where its class names came from. */
  classesFrom?: string;
  /** SHA-256 of weights.bin, checked on load (absent in checkpoints written before it was). */
  weightsSha256?: string;
  /** The epoch these weights are from (1-based). */
  epoch?: number;
  /** Metrics at that point (e.g. validation loss). */
  metrics?: Record<string, number>;
  codeVersion: string;
  createdAt: string;
}

export type CheckpointInput = Omit<
  CheckpointMetadata,
  "format" | "architecture" | "codeVersion" | "createdAt" | "weightsSha256"
>;

export class CheckpointError extends UserError {
  override name = "CheckpointError";
}

/** The model's weights and topology as files (model.json + weights.bin). */
async function modelFiles(model: tf.LayersModel): Promise<{ json: string; bin: Uint8Array }> {
  let artifacts: tf.io.ModelArtifacts | undefined;
  await model.save(tf.io.withSaveHandler((a) => {
    artifacts = a;
    return Promise.resolve({
      modelArtifactsInfo: { dateSaved: new Date(), modelTopologyType: "JSON" },
    });
  }));
  const a = artifacts!;
  const parts = Array.isArray(a.weightData) ? a.weightData : [a.weightData!];
  const bin = new Uint8Array(parts.reduce((s, p) => s + p.byteLength, 0));
  let offset = 0;
  for (const p of parts) {
    bin.set(new Uint8Array(p), offset);
    offset += p.byteLength;
  }
  const json = JSON.stringify({
    format: "layers-model",
    generatedBy: `TensorFlow.js tfjs-layers v${tf.version_layers}`,
    convertedBy: null,
    modelTopology: a.modelTopology,
    weightsManifest: [{ paths: ["weights.bin"], weights: a.weightSpecs }],
  });
  return { json, bin };
}

/**
 * Save `model` with its metadata into `dir`, atomically: a reader sees the old checkpoint or the
 * new one, never a mix.
 */
export async function saveCheckpoint(
  dir: string,
  model: tf.LayersModel,
  meta: CheckpointInput,
): Promise<CheckpointMetadata> {
  const full: CheckpointMetadata = {
    format: CHECKPOINT_FORMAT,
    architecture: "MobileNetV3-Large",
    ...meta,
    codeVersion: codeVersion(),
    createdAt: new Date().toISOString(),
  };
  checkConsistent(dir, model, full);
  const files = await modelFiles(model);
  full.weightsSha256 = sha256(files.bin);
  await replaceDirAtomic(dir, async (tmp) => {
    await writeFileAtomic(path.join(tmp, "model.json"), files.json);
    await writeFileAtomic(path.join(tmp, "weights.bin"), files.bin);
    await writeJsonAtomic(path.join(tmp, "metadata.json"), full);
  });
  return full;
}

const REQUIRED: (keyof CheckpointMetadata)[] = [
  "format",
  "classNames",
  "imageSize",
  "normalization",
  "weights",
];

/**
 * Add facts learned after training (the calibration) to a checkpoint's metadata.json, replacing
 * the file atomically; the weights are untouched.
 */
export async function updateCheckpointMetadata(
  dir: string,
  patch: Pick<CheckpointMetadata, "calibration">,
): Promise<CheckpointMetadata> {
  const meta = { ...readCheckpointMetadata(dir), ...patch };
  await writeJsonAtomic(path.join(dir, "metadata.json"), meta);
  return meta;
}

/** The input mask a checkpoint's model was trained with (the review's experiments), or "none". */
export function checkpointInputMask(meta: Pick<CheckpointMetadata, "training">): InputMask {
  const mask = (meta.training as { inputMask?: InputMask } | undefined)?.inputMask;
  return mask ?? "none";
}

/**
 * Whether a checkpoint's model saw images rotated by their EXIF tag: its training settings say;
 * checkpoints from before the setting existed were made with rotation on.
 */
export function checkpointExifRotate(meta: Pick<CheckpointMetadata, "training">): boolean {
  const training = meta.training as { exifRotate?: boolean; inputMask?: string } | undefined;
  if (!training) return false; // a PyTorch file: the paper's pipeline
  return training.exifRotate ?? true;
}

/** Read a checkpoint's metadata without loading the model. */
export function readCheckpointMetadata(dir: string): CheckpointMetadata {
  const file = path.join(dir, "metadata.json");
  if (!fs.existsSync(dir)) {
    throw new CheckpointError(`Cannot load checkpoint "${dir}": no such folder`);
  }
  if (!fs.existsSync(file)) {
    throw new CheckpointError(
      `Cannot load checkpoint "${dir}": no metadata.json. A checkpoint must describe itself ` +
        "(class names, input size, normalisation); save it with saveCheckpoint().",
    );
  }
  let meta: Partial<CheckpointMetadata>;
  try {
    meta = JSON.parse(fs.readFileSync(file, "utf8"));
  } catch (error) {
    throw new CheckpointError(
      `Cannot load checkpoint "${dir}": metadata.json is not JSON (${error})`,
    );
  }
  const missing = REQUIRED.filter((k) => meta[k] === undefined);
  if (missing.length > 0) {
    throw new CheckpointError(
      `Cannot load checkpoint "${dir}": metadata.json lacks ${missing.join(", ")}`,
    );
  }
  if (meta.format !== CHECKPOINT_FORMAT) {
    throw new CheckpointError(
      `Cannot load checkpoint "${dir}": format "${meta.format}", expected "${CHECKPOINT_FORMAT}"`,
    );
  }
  if (!Array.isArray(meta.classNames) || meta.classNames.length < 2) {
    throw new CheckpointError(
      `Cannot load checkpoint "${dir}": classNames must list 2 or more classes`,
    );
  }
  // Written before torchvision's conventions existed here: Keras's.
  meta.convention ??= "keras";
  return meta as CheckpointMetadata;
}

/**
 * Load a checkpoint ready to predict. Refuses one whose metadata is missing or disagrees with the
 * model it describes.
 *
 * @returns the model (caller disposes) and its metadata.
 */
export async function loadCheckpoint(
  dir: string,
): Promise<{ model: tf.LayersModel; meta: CheckpointMetadata }> {
  await initBackend();
  recoverDir(dir); // a save cut short by a kill: finished or undone
  const meta = readCheckpointMetadata(dir);
  for (const f of ["model.json", "weights.bin"]) {
    if (!fs.existsSync(path.join(dir, f))) {
      throw new CheckpointError(`Cannot load checkpoint "${dir}": ${f} is missing`);
    }
  }
  let json;
  try {
    json = JSON.parse(fs.readFileSync(path.join(dir, "model.json"), "utf8"));
  } catch (error) {
    throw new CheckpointError(
      `Cannot load checkpoint "${dir}": model.json is not valid JSON (${
        (error as Error).message
      }); the file is damaged or cut short`,
    );
  }
  const bin = fs.readFileSync(path.join(dir, "weights.bin"));
  if (meta.weightsSha256 && sha256(bin) !== meta.weightsSha256) {
    throw new CheckpointError(
      `Cannot load checkpoint "${dir}": weights.bin does not match the SHA-256 recorded in ` +
        "metadata.json (the file was damaged or replaced); restore it from a copy or train again",
    );
  }
  let model: tf.LayersModel;
  try {
    model = await tf.loadLayersModel(tf.io.fromMemory({
      modelTopology: json.modelTopology,
      weightSpecs: json.weightsManifest[0].weights,
      weightData: bin.buffer.slice(bin.byteOffset, bin.byteOffset + bin.byteLength),
    }));
  } catch (error) {
    throw new CheckpointError(
      `Cannot load checkpoint "${dir}": model.json/weights.bin do not load (${
        (error as Error).message
      })`,
    );
  }
  try {
    checkConsistent(dir, model, meta);
  } catch (error) {
    model.dispose();
    throw error;
  }
  return { model, meta };
}

/** Metadata and model must agree on classes, input size and normalisation. */
function checkConsistent(dir: string, model: tf.LayersModel, meta: CheckpointMetadata): void {
  const problems: string[] = [];
  const outputs = model.outputs[0].shape.at(-1);
  if (outputs !== meta.classNames.length) {
    problems.push(
      `metadata lists ${meta.classNames.length} classes, the model has ${outputs} outputs`,
    );
  }
  const [, h, w] = model.inputs[0].shape;
  if (h !== meta.imageSize || w !== meta.imageSize) {
    problems.push(`metadata says ${meta.imageSize} px, the model takes ${h}x${w}`);
  }
  const norm = model.layers.find((l) => l instanceof Normalize) as Normalize | undefined;
  const same = (a: number[], b: number[]) =>
    a.length === b.length && a.every((v, i) => Math.abs(v - b[i]) < 1e-7);
  if (conventionOf(model) !== meta.convention) {
    problems.push(
      `metadata says ${meta.convention} conventions, the model is built in ${
        conventionOf(model)
      }'s`,
    );
  }
  if (!norm) problems.push("the model has no Normalize input layer");
  else if (!same(norm.mean, meta.normalization.mean) || !same(norm.std, meta.normalization.std)) {
    problems.push(
      `metadata normalisation ${JSON.stringify(meta.normalization)} differs from the model's ` +
        JSON.stringify({ mean: norm.mean, std: norm.std }),
    );
  }
  if (problems.length > 0) {
    throw new CheckpointError(`Inconsistent checkpoint "${dir}": ${problems.join("; ")}`);
  }
}

function sha256(bytes: Uint8Array): string {
  return createHash("sha256").update(bytes).digest("hex");
}
