/**
 * Proof that our MobileNetV3-Large, loading a reference implementation's weight file, computes what
 * that implementation computes, on every engine. A parity fixture holds a randomised model in the
 * layout of the official ImageNet file, two X-rays at 224 and 446 px, and the reference outputs:
 * Keras's (its .h5 layouts, Keras's conventions) and torchvision's (.pth in PyTorch's zip and legacy
 * formats, torchvision's conventions: symmetric padding, ImageNet mean/std).
 */
import * as fs from "node:fs";
import * as path from "node:path";
import { tf } from "../backend.ts";
import { UserError } from "../errors.ts";
import { envValue } from "../env.ts";
import { type Table, table } from "../tables.ts";
import {
  buildMobileNetV3Large,
  KERAS_NORMALIZATION,
  LAYER,
  loadKerasWeights,
  loadTorchvisionWeights,
  readTorchFile,
  TORCHVISION_IMAGENET_NORMALIZATION,
} from "../model/mod.ts";
import { eagerPredictor } from "./eager.ts";
import { graphPredictor } from "./graph_predictor.ts";
import type { Predictor } from "./predictor.ts";
import { graphEnginesUnavailable } from "./tf_c.ts";

/** The largest relative deviation accepted: max|ours − reference| / max|reference|. */
export const PARITY_TOLERANCE = 1e-4;

/** One weight file at one input size on one engine. */
export interface ParityResult {
  /** The reference implementation. */
  reference: "keras" | "torchvision";
  /** The weight file (its name in the fixture). */
  file: string;
  size: number;
  engine: Predictor["engine"];
  /** max|ours − reference| / max|reference| over the logits. */
  logitsError: number;
  /** The same over the 1280 features before their hard-swish (layers engine only). */
  featuresError?: number;
  /** The same over the 960 pooled features (torchvision's fixture; layers engine only). */
  pooledError?: number;
  logitsAbsMax: number;
  pass: boolean;
}

interface KerasCase {
  size: number;
  input: string;
  input_shape: number[];
  logits: string;
  logits_shape: number[];
  features: string;
}

/** The Keras fixture's weight files: Keras 3's legacy layout and Keras 2's (the official one's). */
export const KERAS_PARITY_FILES = [
  "mobilenet_v3_large_random_legacy.h5",
  "mobilenet_v3_large_random_keras2.h5",
];

/** The fixture folder: the `flag` (passed in) or the env var `COVID_CXR_PARITY`. */
export function resolveParityDir(flag?: string): string {
  const dir = flag ?? envValue("COVID_CXR_PARITY");
  if (!dir) {
    throw new UserError(
      "No parity fixture: pass its folder or set COVID_CXR_PARITY to the folder holding " +
        "fixture.json and mobilenet_v3_large_random_legacy.h5",
    );
  }
  if (!fs.existsSync(path.join(dir, "fixture.json"))) {
    throw new UserError(`Parity fixture "${dir}" has no fixture.json; is COVID_CXR_PARITY right?`);
  }
  return dir;
}

export function readF32(file: string): Float32Array {
  const bytes = fs.readFileSync(file);
  return new Float32Array(
    bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength),
  );
}

/** max|ours − ref| / max|ref|. */
export function relativeError(ours: ArrayLike<number>, ref: ArrayLike<number>): number {
  let diff = 0, scale = 0;
  for (let i = 0; i < ref.length; i++) {
    diff = Math.max(diff, Math.abs(ours[i] - ref[i]));
    scale = Math.max(scale, Math.abs(ref[i]));
  }
  return diff / scale;
}

/** The engines that can run here: TF.js's layers, the eager plan, and the graph where it runs. */
export function parityEngines(): Predictor["engine"][] {
  return graphEnginesUnavailable() ? ["layers", "eager"] : ["layers", "eager", "graph"];
}

/**
 * Logits of `model` for `x` on `engine`, and for the layers engine also the outputs of the layers
 * named in `probes`.
 */
export async function engineOutputs(
  model: tf.LayersModel,
  x: tf.Tensor4D,
  engine: Predictor["engine"],
  probes: string[],
): Promise<{ logits: Float32Array; probes?: Float32Array[] }> {
  if (engine === "layers") {
    const probe = tf.model({
      inputs: model.inputs,
      outputs: [
        ...probes.map((name) => model.getLayer(name).output as tf.SymbolicTensor),
        model.outputs[0],
      ],
    });
    const outputs = probe.predict(x) as tf.Tensor[];
    const values = await Promise.all(outputs.map(async (t) => await t.data() as Float32Array));
    tf.dispose(outputs);
    return { logits: values.at(-1)!, probes: values.slice(0, -1) };
  }
  const predictor = engine === "eager" ? eagerPredictor(model) : graphPredictor(model);
  try {
    const logits = predictor.predict(x);
    const values = await logits.data() as Float32Array;
    logits.dispose();
    return { logits: values };
  } finally {
    predictor.dispose();
  }
}

/** Every Keras weight file × fixture case × engine, compared with Keras's outputs. */
export async function checkKerasParity(dir: string): Promise<ParityResult[]> {
  const fixture = JSON.parse(fs.readFileSync(path.join(dir, "fixture.json"), "utf8"));
  const results: ParityResult[] = [];
  for (const file of KERAS_PARITY_FILES.filter((f) => fs.existsSync(path.join(dir, f)))) {
    for (const c of fixture.cases as KerasCase[]) {
      const model = buildMobileNetV3Large({
        imageSize: c.size,
        numClasses: c.logits_shape[1],
        normalization: KERAS_NORMALIZATION,
        convention: "keras",
      });
      const x = tf.tensor4d(
        readF32(path.join(dir, c.input)),
        c.input_shape as [number, number, number, number],
      );
      try {
        await loadKerasWeights(model, path.join(dir, file), { classifier: "load" });
        const refLogits = readF32(path.join(dir, c.logits));
        const refFeatures = readF32(path.join(dir, c.features));
        for (const engine of parityEngines()) {
          const ours = await engineOutputs(model, x, engine, [LAYER.features]);
          const logitsError = relativeError(ours.logits, refLogits);
          const featuresError = ours.probes && relativeError(ours.probes[0], refFeatures);
          results.push({
            reference: "keras",
            file,
            size: c.size,
            engine,
            logitsError,
            ...(featuresError === undefined ? {} : { featuresError }),
            logitsAbsMax: refLogits.reduce((m, v) => Math.max(m, Math.abs(v)), 0),
            pass: logitsError <= PARITY_TOLERANCE &&
              (featuresError === undefined || featuresError <= PARITY_TOLERANCE),
          });
        }
      } finally {
        x.dispose();
        model.dispose();
      }
    }
  }
  return results;
}

interface TorchvisionCase {
  size: number;
  input: string;
  input_shape: number[];
  logits: string;
  logits_3class: string;
  pooled: string;
  pre_hardswish_1280: string;
}

/** The torchvision fixture's files: the 1000-class model (zip), the paper's 3-class (legacy). */
export const TORCHVISION_PARITY_FILES = [
  "mobilenet_v3_large_random.pth",
  "mobilenet_v3_large_random_3class_legacy_format.pt",
];

/** The torchvision fixture folder: the `flag` or the env var `COVID_CXR_TORCH_PARITY`. */
export function resolveTorchParityDir(flag?: string): string {
  const dir = flag ?? envValue("COVID_CXR_TORCH_PARITY");
  if (!dir) {
    throw new UserError(
      "No torchvision parity fixture: pass its folder or set COVID_CXR_TORCH_PARITY to the folder " +
        "holding fixture.json and mobilenet_v3_large_random.pth",
    );
  }
  if (!fs.existsSync(path.join(dir, "fixture.json"))) {
    throw new UserError(
      `Parity fixture "${dir}" has no fixture.json; is COVID_CXR_TORCH_PARITY right?`,
    );
  }
  return dir;
}

/**
 * Every torchvision state_dict (zip and legacy format) × fixture case × engine, compared with
 * torchvision's logits, 960 pooled features and 1280 features before their hard-swish.
 */
export async function checkTorchvisionParity(dir: string): Promise<ParityResult[]> {
  const fixture = JSON.parse(fs.readFileSync(path.join(dir, "fixture.json"), "utf8"));
  const results: ParityResult[] = [];
  for (const file of TORCHVISION_PARITY_FILES.filter((f) => fs.existsSync(path.join(dir, f)))) {
    const stateDict = readTorchFile(path.join(dir, file));
    const classes = stateDict.tensors.get("classifier.3.weight")!.shape[0];
    for (const c of fixture.cases as TorchvisionCase[]) {
      const model = buildMobileNetV3Large({
        imageSize: c.size,
        numClasses: classes,
        normalization: TORCHVISION_IMAGENET_NORMALIZATION,
        convention: "torchvision",
      });
      const x = tf.tensor4d(
        readF32(path.join(dir, c.input)),
        c.input_shape as [number, number, number, number],
      );
      try {
        loadTorchvisionWeights(model, path.join(dir, file), { classifier: "load", stateDict });
        const refLogits = readF32(path.join(dir, classes === 1000 ? c.logits : c.logits_3class));
        const refPooled = readF32(path.join(dir, c.pooled));
        const refFeatures = readF32(path.join(dir, c.pre_hardswish_1280));
        for (const engine of parityEngines()) {
          const ours = await engineOutputs(model, x, engine, ["avg_pool", LAYER.features]);
          const logitsError = relativeError(ours.logits, refLogits);
          const pooledError = ours.probes && relativeError(ours.probes[0], refPooled);
          const featuresError = ours.probes && relativeError(ours.probes[1], refFeatures);
          results.push({
            reference: "torchvision",
            file,
            size: c.size,
            engine,
            logitsError,
            ...(featuresError === undefined ? {} : { featuresError, pooledError }),
            logitsAbsMax: refLogits.reduce((m, v) => Math.max(m, Math.abs(v)), 0),
            pass: [logitsError, featuresError, pooledError].every((e) =>
              e === undefined || e <= PARITY_TOLERANCE
            ),
          });
        }
      } finally {
        x.dispose();
        model.dispose();
      }
    }
  }
  return results;
}

/** Parity results as a table: one row per file, size and engine. */
export function parityTable(results: readonly ParityResult[]): Table {
  return table(results.map((r) => ({
    reference: r.reference,
    "weight file": r.file,
    "input size": `${r.size} px`,
    engine: r.engine,
    "logits: max|ours − ref| / max|ref|": r.logitsError.toExponential(2),
    "features (1280, pre-activation)": r.featuresError?.toExponential(2) ?? "—",
    "pooled (960)": r.pooledError?.toExponential(2) ?? "—",
    tolerance: PARITY_TOLERANCE.toExponential(0),
    result: r.pass ? "pass" : "FAIL",
  })));
}
