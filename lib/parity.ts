/**
 * Proof that our MobileNetV3-Large with weights from a Keras HDF5 file computes what Keras does:
 * the parity fixture holds a randomised Keras MobileNetV3-Large in the layout of Keras's ImageNet
 * file, two X-rays at 224 and 446 px, and Keras's logits and `conv_2` features for them.
 */
import * as fs from "node:fs";
import * as path from "node:path";
import { tf } from "./backend.ts";
import { buildMobileNetV3Large, LAYER } from "./model.ts";
import { KERAS_NORMALIZATION, loadKerasWeights } from "./weights.ts";
import { compileForInference } from "./inference.ts";
import { nativeBackend } from "./native_ops.ts";
import { graphPredictor } from "./saved_model.ts";
import { type Table, table } from "./tables.ts";

/** The largest relative deviation the parity check accepts: max|ours − keras| / max|keras|. */
export const PARITY_TOLERANCE = 1e-4;

interface FixtureCase {
  size: number;
  input: string;
  input_shape: number[];
  logits: string;
  logits_shape: number[];
  features: string;
  features_shape: number[];
}

export interface ParityResult {
  size: number;
  /** max|ours − keras| / max|keras| over the logits. */
  logitsError: number;
  /** The same over the 1280 `conv_2` features (before their hard-swish). */
  featuresError: number;
  logitsAbsMax: number;
  /** The same for the compiled predictor (BatchNorm folded into the convolutions). */
  compiledLogitsError: number;
  /** The same for the model run as one TensorFlow graph (native backend only). */
  graphLogitsError?: number;
  pass: boolean;
}

/** The fixture folder: `--parity DIR` (passed in) or the env var `COVID_CXR_PARITY`. */
export function resolveParityDir(flag?: string): string {
  const dir = flag ?? Deno.env.get("COVID_CXR_PARITY");
  if (!dir) {
    throw new Error(
      "No parity fixture: pass its folder or set COVID_CXR_PARITY to the folder holding " +
        "fixture.json and mobilenet_v3_large_random_legacy.h5",
    );
  }
  if (!fs.existsSync(path.join(dir, "fixture.json"))) {
    throw new Error(`Parity fixture "${dir}" has no fixture.json; is COVID_CXR_PARITY right?`);
  }
  return dir;
}

function readF32(file: string): Float32Array {
  const bytes = fs.readFileSync(file);
  return new Float32Array(
    bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength),
  );
}

function relativeError(ours: Float32Array, ref: Float32Array): number {
  let diff = 0, scale = 0;
  for (let i = 0; i < ref.length; i++) {
    diff = Math.max(diff, Math.abs(ours[i] - ref[i]));
    scale = Math.max(scale, Math.abs(ref[i]));
  }
  return diff / scale;
}

/** Run every case of the fixture through the real loader and compare with Keras's outputs. */
export async function checkParity(dir: string): Promise<ParityResult[]> {
  const fixture = JSON.parse(fs.readFileSync(path.join(dir, "fixture.json"), "utf8"));
  const weightsFile = path.join(dir, "mobilenet_v3_large_random_legacy.h5");
  const results: ParityResult[] = [];
  for (const c of fixture.cases as FixtureCase[]) {
    const model = buildMobileNetV3Large({
      imageSize: c.size,
      numClasses: c.logits_shape[1],
      normalization: KERAS_NORMALIZATION,
    });
    try {
      await loadKerasWeights(model, weightsFile, { classifier: "load" });
      const probe = tf.model({
        inputs: model.inputs,
        outputs: [model.getLayer(LAYER.features).output as tf.SymbolicTensor, model.outputs[0]],
      });
      const x = tf.tensor4d(
        readF32(path.join(dir, c.input)),
        c.input_shape as [number, number, number, number],
      );
      const [features, logits] = probe.predict(x) as tf.Tensor[];
      const predictor = compileForInference(model);
      const compiled = predictor.predict(x);
      const graph = nativeBackend() ? graphPredictor(model) : undefined;
      const graphLogits = graph?.predict(x);
      const ours = {
        logits: await logits.data() as Float32Array,
        features: await features.data() as Float32Array,
        compiled: await compiled.data() as Float32Array,
        graph: await graphLogits?.data() as Float32Array | undefined,
      };
      predictor.dispose();
      graph?.dispose();
      tf.dispose([x, features, logits, compiled, ...(graphLogits ? [graphLogits] : [])]);
      const refLogits = readF32(path.join(dir, c.logits));
      const logitsError = relativeError(ours.logits, refLogits);
      const featuresError = relativeError(ours.features, readF32(path.join(dir, c.features)));
      const compiledLogitsError = relativeError(ours.compiled, refLogits);
      const graphLogitsError = ours.graph ? relativeError(ours.graph, refLogits) : undefined;
      results.push({
        size: c.size,
        logitsError,
        featuresError,
        logitsAbsMax: refLogits.reduce((m, v) => Math.max(m, Math.abs(v)), 0),
        compiledLogitsError,
        graphLogitsError,
        pass: logitsError <= PARITY_TOLERANCE && featuresError <= PARITY_TOLERANCE &&
          compiledLogitsError <= PARITY_TOLERANCE &&
          (graphLogitsError === undefined || graphLogitsError <= PARITY_TOLERANCE),
      });
    } finally {
      model.dispose();
    }
  }
  return results;
}

/** Parity results as a table (relative errors against the tolerance). */
export function parityTable(results: readonly ParityResult[]): Table {
  return table(results.map((r) => ({
    "input size": `${r.size} px`,
    "logits: max|ours − keras| / max|keras|": r.logitsError.toExponential(2),
    "conv_2 features: same": r.featuresError.toExponential(2),
    "logits, BatchNorm folded": r.compiledLogitsError.toExponential(2),
    "logits, one TF graph": r.graphLogitsError?.toExponential(2) ?? "(needs native backend)",
    tolerance: PARITY_TOLERANCE.toExponential(0),
    "max |logit| (Keras)": r.logitsAbsMax.toFixed(1),
    result: r.pass ? "pass" : "FAIL",
  })));
}
