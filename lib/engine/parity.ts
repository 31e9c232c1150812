/**
 * Proof that our MobileNetV3-Large, loading a reference implementation's weight file, computes what
 * that implementation computes, on every engine. A parity fixture holds a randomised model in the
 * layout of the official ImageNet file, two X-rays at 224 and 446 px, and the reference outputs.
 */
import * as fs from "node:fs";
import * as path from "node:path";
import { tf } from "../backend.ts";
import { UserError } from "../errors.ts";
import { type Table, table } from "../tables.ts";
import {
  buildMobileNetV3Large,
  KERAS_NORMALIZATION,
  LAYER,
  loadKerasWeights,
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
  reference: "keras";
  /** The weight file (its name in the fixture). */
  file: string;
  size: number;
  engine: Predictor["engine"];
  /** max|ours − reference| / max|reference| over the logits. */
  logitsError: number;
  /** The same over the 1280 features before their hard-swish (layers engine only). */
  featuresError?: number;
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
  const dir = flag ?? Deno.env.get("COVID_CXR_PARITY");
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
 * Logits of `model` for `x` on `engine`, and for the layers engine also the output of layer
 * `featuresLayer`.
 */
export async function engineOutputs(
  model: tf.LayersModel,
  x: tf.Tensor4D,
  engine: Predictor["engine"],
  featuresLayer: string,
): Promise<{ logits: Float32Array; features?: Float32Array }> {
  if (engine === "layers") {
    const probe = tf.model({
      inputs: model.inputs,
      outputs: [model.getLayer(featuresLayer).output as tf.SymbolicTensor, model.outputs[0]],
    });
    const [features, logits] = probe.predict(x) as tf.Tensor[];
    const out = {
      logits: await logits.data() as Float32Array,
      features: await features.data() as Float32Array,
    };
    tf.dispose([features, logits]);
    return out;
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
          const ours = await engineOutputs(model, x, engine, LAYER.features);
          const logitsError = relativeError(ours.logits, refLogits);
          const featuresError = ours.features && relativeError(ours.features, refFeatures);
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

/** Parity results as a table: one row per file, size and engine. */
export function parityTable(results: readonly ParityResult[]): Table {
  return table(results.map((r) => ({
    reference: r.reference,
    "weight file": r.file,
    "input size": `${r.size} px`,
    engine: r.engine,
    "logits: max|ours − ref| / max|ref|": r.logitsError.toExponential(2),
    "features (1280, pre-activation)": r.featuresError?.toExponential(2) ?? "—",
    tolerance: PARITY_TOLERANCE.toExponential(0),
    result: r.pass ? "pass" : "FAIL",
  })));
}
