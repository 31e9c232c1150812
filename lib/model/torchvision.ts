/**
 * torchvision's MobileNetV3-Large state_dict and our layers model, tensor for tensor: the names
 * (`features.<i>.block.<j>…`, `classifier.<k>…`), the layouts (PyTorch's [out, in, kh, kw]
 * convolutions, [C, 1, kh, kw] depthwise and [out, in] linear weights against TF's
 * [kh, kw, in, out], [kh, kw, C, 1] and [in, out]), loading a state_dict into a model and writing
 * a model as one.
 */
import { tf } from "../backend.ts";
import { LARGE_BLOCKS } from "./mobilenet_v3.ts";
import {
  float32Values,
  readTorchFile,
  type TorchStateDict,
  type TorchTensor,
  writeTorchStateDict,
} from "./torch_file.ts";
import { WeightsError } from "./errors.ts";

/** How a PyTorch tensor's layout becomes ours. */
type Layout = "conv" | "depthwise" | "linear" | "vector";

/** One tensor of the state_dict: its name, and which weight of which of our layers it is. */
export interface TorchvisionTensor {
  name: string;
  layer: string;
  /** Index into the layer's weights (BatchNorm: gamma, beta, moving mean, moving variance). */
  weight: number;
  layout: Layout;
}

/** The tensors of torchvision's `mobilenet_v3_large()`, in its state_dict order (no counters). */
export function torchvisionTensors(): TorchvisionTensor[] {
  const out: TorchvisionTensor[] = [];
  const conv = (torch: string, layer: string, layout: Layout = "conv") =>
    out.push({ name: `${torch}.weight`, layer, weight: 0, layout });
  const bn = (torch: string, layer: string) =>
    ["weight", "bias", "running_mean", "running_var"].forEach((w, i) =>
      out.push({ name: `${torch}.${w}`, layer, weight: i, layout: "vector" })
    );
  const convBn = (torch: string, layer: string, layout: Layout = "conv") => {
    conv(`${torch}.0`, layer, layout);
    bn(`${torch}.1`, `${layer}_bn`);
  };
  convBn("features.0", "conv");
  LARGE_BLOCKS.forEach((b, id) => {
    const prefix = id === 0 ? "expanded_conv_" : `expanded_conv_${id}_`;
    const block = `features.${id + 1}.block`;
    let j = 0;
    if (id > 0) convBn(`${block}.${j++}`, `${prefix}expand`);
    convBn(`${block}.${j++}`, `${prefix}depthwise`, "depthwise");
    if (b.squeezeExcite) {
      const se = `${block}.${j++}`;
      for (
        const [fc, layer] of [["fc1", "squeeze_excite_conv"], ["fc2", "squeeze_excite_conv_1"]]
      ) {
        out.push({ name: `${se}.${fc}.weight`, layer: prefix + layer, weight: 0, layout: "conv" });
        out.push({ name: `${se}.${fc}.bias`, layer: prefix + layer, weight: 1, layout: "vector" });
      }
    }
    convBn(`${block}.${j++}`, `${prefix}project`);
  });
  convBn("features.16", "conv_1");
  for (const [k, layer] of [["0", "conv_2"], ["3", "logits"]]) {
    out.push({ name: `classifier.${k}.weight`, layer, weight: 0, layout: "linear" });
    out.push({ name: `classifier.${k}.bias`, layer, weight: 1, layout: "vector" });
  }
  return out;
}

/** The permutation taking a PyTorch layout to ours (its inverse goes back). */
const TO_OURS: Record<Layout, number[]> = {
  conv: [2, 3, 1, 0], // [out, in, kh, kw] → [kh, kw, in, out]
  depthwise: [2, 3, 0, 1], // [C, 1, kh, kw] → [kh, kw, C, 1]
  linear: [1, 0], // [out, in] → [in, out]
  vector: [0],
};

/** Transpose row-major `values` of `shape` by `perm` (out axis i is in axis perm[i]). */
export function transpose(
  values: Float32Array,
  shape: number[],
  perm: number[],
): { values: Float32Array; shape: number[] } {
  const outShape = perm.map((p) => shape[p]);
  if (perm.every((p, i) => p === i)) return { values, shape: outShape };
  const inStrides = shape.map((_, d) => shape.slice(d + 1).reduce((a, b) => a * b, 1));
  const out = new Float32Array(values.length);
  const index = new Array(outShape.length).fill(0);
  for (let i = 0; i < out.length; i++) {
    let at = 0;
    for (let d = 0; d < perm.length; d++) at += index[d] * inStrides[perm[d]];
    out[i] = values[at];
    for (let d = outShape.length - 1; d >= 0; d--) {
      if (++index[d] < outShape[d]) break;
      index[d] = 0;
    }
  }
  return { values: out, shape: outShape };
}

const inverse = (perm: number[]) => perm.map((_, i) => perm.indexOf(i));

/** What a state_dict is, against torchvision's MobileNetV3-Large. */
export interface StateDictCheck {
  /** Number of classes of its classifier (classifier.3). */
  classes?: number;
  missing: string[];
  unexpected: string[];
}

/** Compare a state_dict's names with torchvision's MobileNetV3-Large (counters ignored). */
export function checkStateDict(sd: TorchStateDict): StateDictCheck {
  const expected = new Set(torchvisionTensors().map((t) => t.name));
  const names = [...sd.tensors.keys()].filter((n) => !n.endsWith("num_batches_tracked"));
  const head = sd.tensors.get("classifier.3.weight");
  return {
    classes: head?.shape.length === 2 ? head.shape[0] : undefined,
    missing: [...expected].filter((n) => !sd.tensors.has(n)),
    unexpected: names.filter((n) => !expected.has(n)),
  };
}

const listed = (names: string[], max = 6) =>
  names.slice(0, max).join(", ") + (names.length > max ? `, … (${names.length} in all)` : "");

/**
 * Load a torchvision MobileNetV3-Large state_dict (a .pth/.pt file, zip or legacy format) into a
 * model built with the torchvision convention. The classifier is loaded when its number of classes
 * is the model's; otherwise (1000 ImageNet classes into a 3-class model) the model keeps its new
 * classifier, the paper's head swap. `classifier: "load"` makes a mismatch an error instead.
 */
export function loadTorchvisionWeights(
  model: tf.LayersModel,
  file: string,
  opts: { classifier?: "auto" | "load"; stateDict?: TorchStateDict } = {},
): { tensors: number; classifierLoaded: boolean; fileClasses?: number } {
  const sd = opts.stateDict ?? readTorchFile(file);
  const check = checkStateDict(sd);
  const known = torchvisionTensors().length - check.missing.length;
  if (check.missing.length > 0 || check.unexpected.length > 0) {
    const what = known < torchvisionTensors().length / 2
      ? "its tensors are not torchvision's mobilenet_v3_large (another architecture?)"
      : "it differs from torchvision's mobilenet_v3_large";
    throw new WeightsError(
      `Cannot load "${file}": ${what}. ` +
        (check.missing.length ? `Missing keys: ${listed(check.missing)}. ` : "") +
        (check.unexpected.length ? `Unexpected keys: ${listed(check.unexpected)}. ` : "") +
        "Expected a state_dict of torchvision.models.mobilenet_v3_large(), saved with " +
        "`torch.save(model.state_dict(), path)`.",
    );
  }
  const layerOf = new Map(model.layers.map((l) => [l.name, l]));
  const classes = model.outputs[0].shape.at(-1) as number;
  const loadClassifier = check.classes === classes || opts.classifier === "load";
  const pending = new Map<tf.layers.Layer, tf.Tensor[]>();
  try {
    for (const t of torchvisionTensors()) {
      if (t.layer === "logits" && !loadClassifier) continue;
      const layer = layerOf.get(t.layer);
      if (!layer) throw new Error(`loadTorchvisionWeights: the model has no layer ${t.layer}`);
      const source = sd.tensors.get(t.name)!;
      const ours = transpose(float32Values(source), source.shape, TO_OURS[t.layout]);
      const expected = layer.weights[t.weight].shape as number[];
      if (ours.shape.join() !== expected.join()) {
        throw new WeightsError(
          `Cannot load "${file}": ${t.name} has shape [${source.shape}] (as ours [${ours.shape}]), ` +
            `layer "${t.layer}" expects [${expected}]` +
            (t.layer === "logits" ? ` (the file has ${check.classes} classes)` : ""),
        );
      }
      const list = pending.get(layer) ?? layer.getWeights().map((w) => tf.clone(w));
      tf.dispose(list[t.weight]);
      list[t.weight] = tf.tensor(ours.values, ours.shape, "float32");
      pending.set(layer, list);
    }
    // Only assign once every tensor matched: a failed load leaves the model as it was.
    for (const [layer, values] of pending) layer.setWeights(values);
  } finally {
    for (const values of pending.values()) tf.dispose(values);
  }
  return {
    tensors: torchvisionTensors().length - (loadClassifier ? 0 : 2),
    classifierLoaded: loadClassifier,
    fileClasses: check.classes,
  };
}

/**
 * The model's weights as torchvision's state_dict, in its order, with BatchNorm's
 * `num_batches_tracked` counters (int64) as `load_state_dict(strict=True)` expects.
 */
export function torchvisionStateDict(model: tf.LayersModel): [string, TorchTensor][] {
  const layerOf = new Map(model.layers.map((l) => [l.name, l]));
  const out: [string, TorchTensor][] = [];
  for (const t of torchvisionTensors()) {
    const layer = layerOf.get(t.layer);
    if (!layer) throw new Error(`torchvisionStateDict: the model has no layer ${t.layer}`);
    const w = layer.getWeights()[t.weight];
    const values = transpose(w.dataSync() as Float32Array, w.shape, inverse(TO_OURS[t.layout]));
    out.push([t.name, { dtype: "float32", shape: values.shape, values: values.values }]);
    if (t.name.endsWith(".running_var")) {
      out.push([t.name.replace(/running_var$/, "num_batches_tracked"), {
        dtype: "int64",
        shape: [],
        values: BigInt64Array.of(0n),
      }]);
    }
  }
  return out;
}

/** Write the model as a torchvision state_dict (zip format) to `file`. */
export function exportTorchvisionStateDict(model: tf.LayersModel, file: string): number {
  const tensors = torchvisionStateDict(model);
  writeTorchStateDict(file, tensors);
  return tensors.length;
}
