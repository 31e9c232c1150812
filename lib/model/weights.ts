/**
 * Weights for MobileNetV3-Large: Keras's legacy HDF5 files (the layout of Keras's official
 * ImageNet files), the ImageNet download with its published hash, and the cache.
 *
 * Layers are matched by order and shape, not by name: the official file uses Keras 2 names
 * (`Conv`, `Conv/BatchNorm`, `expanded_conv/depthwise`, …) and Keras 3 writes new names for the
 * same tensors in the same order.
 */
import * as fs from "node:fs";
import * as path from "node:path";
import h5wasm from "h5wasm/node";
import { tf } from "../backend.ts";
import { UserError } from "../errors.ts";
import { hashFile } from "../files.ts";
import { userCacheDir } from "../paths.ts";
import { KERAS_NORMALIZATION, type NormalizationSpec } from "./normalization.ts";

/**
 * Keras's official MobileNetV3-Large ImageNet weights (float, with top), as Keras 3.15.1's
 * `keras/src/applications/mobilenet_v3.py` names them: `BASE_WEIGHT_PATH` + file name, checked
 * with the MD5 Keras publishes.
 */
export const IMAGENET_WEIGHTS = Object.freeze({
  url: "https://storage.googleapis.com/tensorflow/keras-applications/mobilenet_v3/" +
    "weights_mobilenet_v3_large_224_1.0_float.h5",
  fileName: "weights_mobilenet_v3_large_224_1.0_float.h5",
  md5: "59e551e166be033d707958cf9e29a6a7",
  classes: 1000,
  normalization: KERAS_NORMALIZATION,
});

/** Where the weights come from: `"imagenet"`, `"none"` (random) or a path to a Keras .h5 file. */
export type WeightsSource = string;

/** What a model's weights are, recorded in checkpoints. */
export interface WeightsInfo {
  /** "imagenet", "none" or "file". */
  kind: "imagenet" | "none" | "file";
  /** The file loaded (absent for "none"). */
  file?: string;
  /** The file's URL of origin, when downloaded. */
  url?: string;
  /** MD5 of the file (Keras's hash convention). */
  md5?: string;
  /** The input normalisation these weights expect. */
  normalization: NormalizationSpec;
}

/** A weights problem, with the file and the fix in the message. */
export class WeightsError extends UserError {
  override name = "WeightsError";
}

/** The ImageNet file's place in the user cache dir (like Keras's `~/.keras/models`). */
export function imagenetCachePath(cacheDir = userCacheDir()): string {
  return path.join(cacheDir, "weights", IMAGENET_WEIGHTS.fileName);
}

/**
 * Turn a weights source into a file to load (downloading ImageNet weights once) and its
 * description. Fails before any training when ImageNet weights are asked for and cannot be had.
 */
export async function resolveWeights(
  source: WeightsSource,
  opts: { cacheDir?: string; url?: string; md5?: string; quiet?: boolean } = {},
): Promise<WeightsInfo> {
  if (source === "none") return { kind: "none", normalization: KERAS_NORMALIZATION };
  if (source === "imagenet") {
    const url = opts.url ?? IMAGENET_WEIGHTS.url;
    const md5 = opts.md5 ?? IMAGENET_WEIGHTS.md5;
    const file = imagenetCachePath(opts.cacheDir);
    if (!fs.existsSync(file)) await download(url, file, md5, opts.quiet ?? false);
    const actual = await hashFile(file, "md5");
    if (actual !== md5) {
      throw new WeightsError(
        `Cannot use ImageNet weights "${file}": its MD5 is ${actual}, Keras publishes ${md5} for ` +
          `${IMAGENET_WEIGHTS.fileName}. The file is damaged or a different file: delete it and ` +
          `run again to download ${url}.`,
      );
    }
    return { kind: "imagenet", file, url, md5, normalization: IMAGENET_WEIGHTS.normalization };
  }
  if (!fs.existsSync(source)) {
    throw new WeightsError(
      `Cannot build model: unknown weights "${source}", valid: "imagenet", "none", or the path ` +
        "of an existing Keras .h5 weights file",
    );
  }
  return {
    kind: "file",
    file: path.resolve(source),
    md5: await hashFile(source, "md5"),
    normalization: KERAS_NORMALIZATION,
  };
}

async function download(url: string, file: string, md5: string, quiet: boolean): Promise<void> {
  const partial = `${file}.partial-${Deno.pid}`;
  const offlineHelp = () =>
    `Put Keras's MobileNetV3-Large float weights with top (MD5 ${md5}) at\n  ${file}\n` +
    `or train from random initialisation with --weights none (not comparable to the paper).`;
  let response: Response;
  try {
    response = await fetch(url);
  } catch (error) {
    throw new WeightsError(
      `Cannot get ImageNet weights: downloading ${url} failed (${(error as Error).message}).\n` +
        offlineHelp(),
    );
  }
  if (!response.ok || !response.body) {
    await response.body?.cancel();
    throw new WeightsError(
      `Cannot get ImageNet weights: ${url} answered HTTP ${response.status}.\n${offlineHelp()}`,
    );
  }
  fs.mkdirSync(path.dirname(file), { recursive: true });
  const total = Number(response.headers.get("content-length") ?? 0);
  const out = await Deno.open(partial, { write: true, create: true, truncate: true });
  let received = 0;
  let lastReport = 0;
  try {
    for await (const chunk of response.body) {
      await out.write(chunk);
      received += chunk.length;
      if (!quiet && performance.now() - lastReport > 1000) {
        lastReport = performance.now();
        const pct = total ? ` (${Math.round(100 * received / total)} %)` : "";
        console.error(
          `  downloading ${IMAGENET_WEIGHTS.fileName}: ${(received / 1e6).toFixed(1)} MB${pct}`,
        );
      }
    }
  } finally {
    out.close();
  }
  const actual = await hashFile(partial, "md5");
  if (actual !== md5) {
    fs.rmSync(partial, { force: true });
    throw new WeightsError(
      `Cannot use the download of ${url}: its MD5 is ${actual}, expected ${md5}. Nothing was ` +
        `cached; try again, or ${offlineHelp()}`,
    );
  }
  fs.renameSync(partial, file);
}

// ---------------------------------------------------------------------------------------------
// Keras legacy HDF5

/** One layer's tensors as stored in a Keras legacy HDF5 file. */
export interface StoredLayer {
  layer: string;
  weights: { name: string; shape: number[]; values: Float32Array }[];
}

const HDF5_SIGNATURE = [0x89, 0x48, 0x44, 0x46, 0x0d, 0x0a, 0x1a, 0x0a];

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

/**
 * Which weights a notebook can use here: the preferred source when it can be had, otherwise
 * "none", with the reason. For demonstrations only; training never falls back silently.
 */
export async function weightsAvailability(
  preferred: WeightsSource,
): Promise<{ use: WeightsSource; note: string }> {
  try {
    const info = await resolveWeights(preferred, { quiet: true });
    return {
      use: preferred,
      note: `using ${info.kind} weights${info.file ? ` from ${info.file}` : ""}`,
    };
  } catch (error) {
    if (!(error instanceof WeightsError)) throw error;
    return {
      use: "none",
      note: `"${preferred}" weights are not available here (${error.message.split("\n")[0]}); ` +
        "this notebook continues with random initialisation, which shows the structure but not " +
        "the pretrained behaviour",
    };
  }
}
