/**
 * Keras's legacy HDF5 weight files (the layout of Keras's official ImageNet files), read with
 * h5wasm and loaded into our layers model by order and shape, not by name: the official file uses
 * Keras 2 names (`Conv`, `Conv/BatchNorm`, `expanded_conv/depthwise`, …) and Keras 3 writes new
 * names for the same tensors in the same order.
 */
import * as fs from "node:fs";
import h5wasm from "h5wasm/node";
import { tf } from "../backend.ts";
import { WeightsError } from "./errors.ts";

/** The HDF5 signature: every HDF5 file starts with these 8 bytes. */
export const HDF5_SIGNATURE = [0x89, 0x48, 0x44, 0x46, 0x0d, 0x0a, 0x1a, 0x0a];

/** One layer's tensors as stored in a Keras legacy HDF5 file. */
export interface StoredLayer {
  layer: string;
  weights: { name: string; shape: number[]; values: Float32Array }[];
}

/**
 * Check that a file is a complete HDF5 file before handing it to the HDF5 library (which, on a
 * truncated file, only prints diagnostics): the signature, then the end-of-file address recorded
 * in the superblock against the real size.
 */
export function checkHdf5File(file: string): void {
  let fd: number;
  try {
    fd = fs.openSync(file, "r");
  } catch {
    throw new WeightsError(`Cannot load weights "${file}": file not found`);
  }
  try {
    const head = new Uint8Array(64);
    const n = fs.readSync(fd, head, 0, 64, 0);
    if (n < 48 || !HDF5_SIGNATURE.every((b, i) => head[i] === b)) {
      throw new WeightsError(
        `Cannot load weights "${file}": not an HDF5 file (Keras .h5 weights expected)`,
      );
    }
    const view = new DataView(head.buffer);
    const version = head[8];
    // Superblock v0/v1: EOF address after base and free-space addresses; v2/v3: after base
    // and extension addresses (HDF5 File Format Specification, section II.A).
    const sizeOfOffsets = version <= 1 ? head[13] : head[9];
    if (sizeOfOffsets !== 8) return; // unusual layout; let the library judge
    const eofAt = version === 0 ? 40 : version === 1 ? 44 : 28;
    const eof = Number(view.getBigUint64(eofAt, true));
    const size = fs.fstatSync(fd).size;
    if (size < eof) {
      throw new WeightsError(
        `Cannot load weights "${file}": the file is truncated (${size} of ${eof} bytes); ` +
          "download it again",
      );
    }
  } finally {
    fs.closeSync(fd);
  }
}

let h5Ready: Promise<unknown> | undefined;

function asStrings(value: unknown): string[] {
  if (value === null || value === undefined) return [];
  const items = Array.isArray(value)
    ? value
    : typeof value === "string"
    ? [value]
    : [...(value as Iterable<unknown>)];
  return items.map((v) => (v instanceof Uint8Array ? new TextDecoder().decode(v) : String(v)));
}

/** Read every layer that has weights, in the file's order. */
export async function readKerasH5(file: string): Promise<StoredLayer[]> {
  checkHdf5File(file);
  h5Ready ??= h5wasm.ready;
  await h5Ready;
  const h5 = new h5wasm.File(file, "r");
  try {
    const attrs = h5.attrs as Record<string, { value: unknown }>;
    if (!attrs["layer_names"]) {
      const hint = h5.keys().includes("layers")
        ? " It looks like a Keras 3 `.weights.h5` file; save with the legacy format " +
          "(`model.save_weights('x.h5')` in Keras 2, or keras.src.legacy.saving in Keras 3)."
        : "";
      throw new WeightsError(
        `Cannot load weights "${file}": no "layer_names" attribute, so not a Keras legacy HDF5 ` +
          `weights file.${hint}`,
      );
    }
    const layers: StoredLayer[] = [];
    for (const layer of asStrings(attrs["layer_names"].value)) {
      // deno-lint-ignore no-explicit-any
      const group = h5.get(layer) as any;
      const names = asStrings(group?.attrs?.["weight_names"]?.value);
      if (names.length === 0) continue;
      const weights = names.map((name) => {
        // deno-lint-ignore no-explicit-any
        const ds = (h5.get(`${layer}/${name}`) ?? group.get(name)) as any;
        if (!ds) {
          throw new WeightsError(`Cannot load weights "${file}": missing dataset ${layer}/${name}`);
        }
        const raw = ds.value as ArrayLike<number>;
        return { name, shape: [...ds.shape] as number[], values: Float32Array.from(raw) };
      });
      layers.push({ layer, weights });
    }
    return layers;
  } finally {
    h5.close();
  }
}

function sameShape(a: readonly number[], b: readonly number[]): boolean {
  return a.length === b.length && a.every((v, i) => v === b[i]);
}

/**
 * Load a Keras legacy HDF5 file into a model built by `buildMobileNetV3Large`, by order and shape.
 * A 1x1-conv kernel `[1, 1, in, out]` loads into a dense layer's `[in, out]`.
 *
 * The classifier (the last layer with weights, Keras's `logits`) is loaded when its shape matches
 * the model's. When it does not (1000 ImageNet classes into a 3-class model) it is skipped and the
 * model keeps its fresh classifier: the paper's head swap. `classifier: "load"` makes a mismatch an
 * error instead.
 */
export async function loadKerasWeights(
  model: tf.LayersModel,
  file: string,
  opts: { classifier?: "auto" | "load" } = {},
): Promise<{ layers: number; tensors: number; classifierLoaded: boolean }> {
  const stored = await readKerasH5(file);
  const targets = model.layers.filter((l) => l.weights.length > 0);
  if (targets.length !== stored.length) {
    throw new WeightsError(
      `Cannot load weights "${file}": the model has ${targets.length} layers with weights, ` +
        `the file ${stored.length}`,
    );
  }
  const last = targets.length - 1;
  const classifierMatches = targets[last].weights.every((w, j) =>
    matchShape(w.shape as number[], stored[last].weights[j]?.shape ?? []) !== undefined
  );
  const loadClassifier = classifierMatches || opts.classifier === "load";
  const count = loadClassifier ? targets.length : last;
  const pending: { layer: tf.layers.Layer; values: tf.Tensor[] }[] = [];
  try {
    for (let i = 0; i < count; i++) {
      const layer = targets[i];
      const src = stored[i];
      if (layer.weights.length !== src.weights.length) {
        throw new WeightsError(
          `Cannot load weights "${file}": layer ${i} "${layer.name}" has ${layer.weights.length} ` +
            `tensors, file layer "${src.layer}" has ${src.weights.length}`,
        );
      }
      const values = layer.weights.map((w, j) => {
        const expected = w.shape as number[];
        const found = src.weights[j].shape;
        const shape = matchShape(expected, found);
        if (!shape) {
          throw new WeightsError(
            `Cannot load weights "${file}": layer ${i} "${layer.name}" expects ` +
              `[${expected}], file has [${found}] ("${src.layer}/${src.weights[j].name}")`,
          );
        }
        return tf.tensor(src.weights[j].values, shape, "float32");
      });
      pending.push({ layer, values });
    }
    // Only assign once every layer matched: a failed load leaves the model as it was.
    for (const { layer, values } of pending) layer.setWeights(values);
    return {
      layers: pending.length,
      tensors: pending.reduce((s, p) => s + p.values.length, 0),
      classifierLoaded: loadClassifier,
    };
  } finally {
    for (const p of pending) tf.dispose(p.values);
  }
}

/** The shape to load `found` as, or undefined when it cannot fill `expected`. */
function matchShape(expected: number[], found: number[]): number[] | undefined {
  if (sameShape(expected, found)) return expected;
  // Keras's 1x1 convolution on pooled features is our dense layer: [1, 1, in, out] -> [in, out].
  const pointwise = found.length === 4 && found[0] === 1 && found[1] === 1 &&
    sameShape(expected, found.slice(2));
  return pointwise ? expected : undefined;
}
