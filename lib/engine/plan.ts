/**
 * The one translator from a layers model to engine steps.
 *
 * RULE: this is the only code that switches on layer class. Every engine runs a plan made here:
 * the eager predictor (eager.ts) and the TensorFlow graphs (graph_def.ts emits a plan's steps for
 * the graph predictor and the graph training step). Adding a layer kind means editing the model
 * and `planStep` below, plus one case in each interpreter if it needs a new op. A layer this file
 * does not know fails here, at plan time, with its name and class.
 *
 * Two flavours of the same model:
 * - "inference": BatchNorm folded into the convolution before it (a convolution W then BatchNorm
 *   γ, β, moving mean μ, moving variance σ² equals one convolution with W·s and bias β − μ·s,
 *   where s = γ / √(σ² + ε), per output channel), a ReLU right after fused into it, dropout gone.
 * - "training": every layer as it is; BatchNorm normalises with the batch's statistics and updates
 *   its moving averages; dropout multiplies by a mask the caller supplies. Weights are referred to
 *   by their index in `model.weights`, so an engine can keep them as variables.
 */
import { tf } from "../backend.ts";
import type { NormalizationSpec } from "../model/mod.ts";

/**
 * A weight of a step: a model weight (`modelIndex` into `model.weights`) or a tensor derived from
 * model weights (folded BatchNorm), as host values.
 */
export interface WeightRef {
  shape: number[];
  /** Index into `model.weights` when this is a model weight as it stands. */
  modelIndex?: number;
  /** The values (a copy; read when called). */
  values(): Float32Array;
}

/** What one step computes. */
export type Op =
  | { kind: "normalize"; spec: NormalizationSpec }
  | {
    kind: "conv";
    depthwise: boolean;
    kernel: WeightRef;
    bias?: WeightRef;
    strides: [number, number];
    padding: "same" | "valid";
    relu: boolean;
    /**
     * A 1×1 convolution of one position per image (squeeze-excite's pooled vector, [B, 1, 1, C]):
     * the graphs compute it as a matrix product (graph_def.ts), which oneDNN's convolutions,
     * forward and backward, took about half a millisecond a call to do.
     */
    pooled: boolean;
  }
  /** Training flavour: batch statistics, moving averages updated with `momentum` (Keras's). */
  | ({ kind: "batchNorm" } & TrainingBatchNorm)
  /**
   * Training flavour with the fused kernels (kernels.ts): a batchNorm and the activation right
   * after it as one op, CxrBatchNormAct (native/cxr_kernels.c), with its own gradient op.
   */
  | ({ kind: "batchNormAct"; activation: FusedActivation } & TrainingBatchNorm)
  /**
   * With the fused kernels: a depthwise convolution (channel multiplier 1) with its zero padding
   * inside (a ZeroPadding2D before it absorbed, or "same" at stride 1). Training: CxrDepthwiseConv,
   * with its own gradient op; inference: CxrDepthwiseConvBiasAct, the BatchNorm after it folded
   * in (as for "conv") and the ReLU or hard-swish after that applied before the output is written
   * (native/cxr_kernels.c).
   */
  | {
    kind: "depthwise";
    kernel: WeightRef;
    bias?: WeightRef;
    activation: FusedActivation;
    stride: number;
    /** [[top, bottom], [left, right]] */
    padding: [[number, number], [number, number]];
    /** [height, width] of its input (before the padding): the input gradient op's output size. */
    inputSize: [number, number];
  }
  /** Inference flavour: a BatchNorm that follows no convolution, as `x · scale + shift`. */
  | { kind: "scaleShift"; scale: Float32Array; shift: Float32Array }
  | { kind: "hardSwish" }
  | { kind: "hardSigmoid" }
  | { kind: "relu"; max?: number }
  | { kind: "pad"; padding: [[number, number], [number, number]] }
  /** `size`: the input's [height, width] (the gradient spreads dy over them). */
  | { kind: "globalMean"; size: [number, number] }
  | { kind: "reshape"; target: number[] }
  /** `sameShapes`: no broadcasting (a residual connection), so each input's gradient is dy. */
  | { kind: "add"; sameShapes: boolean }
  /**
   * `perChannel`: which input is one value per image and channel ([B, 1, 1, C], squeeze-excite's
   * gate) scaling the other ([B, H, W, C]); absent for any other product.
   */
  | { kind: "mul"; perChannel?: 0 | 1 }
  | { kind: "dense"; kernel: WeightRef; bias?: WeightRef; relu: boolean }
  /** Training flavour: multiply by a [B, units] mask (0 or 1 / (1 − rate)) fed per step. */
  | { kind: "dropout"; rate: number; units: number; seed: number };

/** A BatchNorm layer in training mode: its weights and settings. */
export interface TrainingBatchNorm {
  gamma: WeightRef;
  beta: WeightRef;
  movingMean: WeightRef;
  movingVariance: WeightRef;
  epsilon: number;
  momentum: number;
}

/** The activations CxrBatchNormAct applies after normalising (its `activation` attribute). */
export type FusedActivation = "identity" | "relu" | "hard_swish";

/** One step: `op` applied to the outputs of the steps (or the input) named in `inputs`. */
export interface Step {
  name: string;
  inputs: string[];
  op: Op;
}

export type Flavour = "inference" | "training";

/** A model as steps in execution order. Plain data: nothing to dispose. */
export interface Plan {
  flavour: Flavour;
  /** The name that stands for the model's input in `inputs`. */
  input: string;
  /** [height, width, channels] of one input image. */
  inputShape: [number, number, number];
  /** The step whose output is the model's output (logits). */
  output: string;
  outputUnits: number;
  steps: Step[];
}

/** A model the plan cannot translate; names the layer and its class. */
export class PlanError extends Error {
  override name = "PlanError";
}

/** A TF.js layer with its (untyped) internals: inbound nodes, weights, config fields. */
// deno-lint-ignore no-explicit-any
type AnyLayer = any;

/** The layers whose outputs feed `layer`. */
function inboundLayers(layer: AnyLayer): AnyLayer[] {
  return layer.inboundNodes?.[0]?.inboundLayers ?? [];
}

/** The shapes of the tensors `layer` reads (the batch dimension null). */
function inputShapes(layer: AnyLayer): (number | null)[][] {
  return (layer.inboundNodes?.[0]?.inputTensors ?? []).map((t: tf.SymbolicTensor) => t.shape);
}

/** Names of the layers whose outputs feed `layer`. */
function inboundNames(layer: AnyLayer): string[] {
  return inboundLayers(layer).map((l: AnyLayer) => l.name);
}

/** The activation of a Conv2D/Dense/Activation layer's config, as an op or "identity". */
function activationOf(layer: AnyLayer): "identity" | "relu" | "relu6" {
  const name = layer.getConfig().activation ?? "linear";
  if (name === "linear") return "identity";
  if (name === "relu" || name === "relu6") return name;
  throw new PlanError(
    `Cannot plan layer "${layer.name}" (${layer.getClassName()}): activation "${name}" has no ` +
      "rule (known: linear, relu, relu6); add one in lib/engine/plan.ts",
  );
}

/** Lookups on a model's layer graph that the planning rules need. */
class ModelView {
  readonly layers: AnyLayer[];
  readonly #weightIndex: Map<unknown, number>;
  readonly #consumers = new Map<string, string[]>();
  readonly #byName: Map<string, AnyLayer>;

  constructor(model: tf.LayersModel) {
    this.layers = model.layers as AnyLayer[];
    this.#weightIndex = new Map(model.weights.map((w, i) => [w, i]));
    for (const l of this.layers) {
      for (const n of inboundNames(l)) {
        this.#consumers.set(n, [...(this.#consumers.get(n) ?? []), l.name]);
      }
    }
    this.#byName = new Map(this.layers.map((l) => [l.name, l]));
  }

  /** A layer weight as a reference to the model's weight. */
  weight(w: tf.LayerVariable): WeightRef {
    const index = this.#weightIndex.get(w);
    if (index === undefined) throw new PlanError(`weight ${w.name} is not one of the model's`);
    return { shape: w.shape as number[], modelIndex: index, values: () => floats(w.read()) };
  }

  /** The single layer reading `name`'s output, if exactly one does. */
  onlyConsumer(name: string): AnyLayer | undefined {
    const c = this.#consumers.get(name);
    return c?.length === 1 ? this.#byName.get(c[0]) : undefined;
  }
}

/** What one layer becomes: nothing (the input), the identity, or a step that may absorb layers. */
type Planned = "input" | "identity" | { op: Op; absorbs?: string[] };

/**
 * Turn `model` (as built by buildMobileNetV3Large, or loaded from a checkpoint) into steps.
 * Throws {@link PlanError} for a layer it has no rule for.
 */
export function planModel(
  model: tf.LayersModel,
  flavour: Flavour,
  opts: { fusedKernels?: boolean } = {},
): Plan {
  const view = new ModelView(model);
  const steps: Step[] = [];
  const alias = new Map<string, string>(); // an absorbed layer's output is its step's output
  const source = (name: string) => alias.get(name) ?? name;
  for (const layer of view.layers) {
    if (alias.has(layer.name)) continue;
    const inputs = inboundNames(layer).map(source);
    const planned = planLayer(layer, view, flavour, opts.fusedKernels ?? false);
    if (planned === "input") continue;
    if (planned === "identity") {
      alias.set(layer.name, inputs[0]);
      continue;
    }
    for (const name of planned.absorbs ?? []) alias.set(name, layer.name);
    steps.push({ name: layer.name, inputs, op: planned.op });
  }
  const shape = model.inputs[0].shape;
  if (shape.length !== 4 || shape.slice(1).some((d) => d == null)) {
    throw new PlanError(`Cannot plan: input shape ${JSON.stringify(shape)} is not [B, H, W, C]`);
  }
  return {
    flavour,
    input: (model.inputLayers[0] as AnyLayer).name,
    inputShape: shape.slice(1) as [number, number, number],
    output: source((model.outputLayers[0] as AnyLayer).name),
    outputUnits: model.outputs[0].shape.at(-1) as number,
    steps,
  };
}

/** The rule for each layer class: the only switch on layer class in the engines. */
function planLayer(
  layer: AnyLayer,
  view: ModelView,
  flavour: Flavour,
  fusedKernels: boolean,
): Planned {
  const cls = layer.getClassName();
  const weights = layer.weights as tf.LayerVariable[];
  switch (cls) {
    case "InputLayer":
      return "input";
    case "Normalize":
      return { op: { kind: "normalize", spec: { mean: layer.mean, std: layer.std } } };
    case "Conv2D":
    case "DepthwiseConv2D":
      if (fusedKernels && fusableDepthwise(layer, flavour)) {
        return planFusedDepthwise(layer, view, flavour);
      }
      return planConvolution(layer, view, flavour);
    case "BatchNorm": {
      if (flavour === "inference") return { op: { kind: "scaleShift", ...batchNormAffine(layer) } };
      const [gamma, beta, movingMean, movingVariance] = weights.map((w) => view.weight(w));
      const bn: TrainingBatchNorm = {
        gamma,
        beta,
        movingMean,
        movingVariance,
        epsilon: layer.epsilon,
        momentum: layer.momentum,
      };
      if (fusedKernels) return planFusedBatchNorm(layer, bn, view);
      return { op: { kind: "batchNorm", ...bn } };
    }
    case "HardSwish":
      return { op: { kind: "hardSwish" } };
    case "HardSigmoid":
      return { op: { kind: "hardSigmoid" } };
    case "ReLU":
    case "Activation": {
      const max = reluMax(layer);
      if (max === null) return { op: { kind: "relu" } };
      if (max !== undefined) return { op: { kind: "relu", max } };
      if (cls === "Activation" && activationOf(layer) === "identity") return "identity";
      throw unknown(layer);
    }
    case "ZeroPadding2D": {
      // With the fused kernels a depthwise convolution pads inside (planFusedDepthwise).
      const next = view.onlyConsumer(layer.name);
      if (fusedKernels && next && fusableDepthwise(next, flavour)) {
        return "identity";
      }
      return { op: { kind: "pad", padding: layer.padding } };
    }
    case "GlobalAveragePooling2D": {
      // Known: planning needs the model's input size (planModel), which fixes every layer's.
      const [, h, w] = inputShapes(layer)[0] ?? [];
      if (h == null || w == null) {
        throw new PlanError(
          `Cannot plan layer "${layer.name}" (${cls}): its input size is unknown`,
        );
      }
      return { op: { kind: "globalMean", size: [h, w] } };
    }
    case "Reshape":
      return { op: { kind: "reshape", target: layer.targetShape } };
    case "Add": {
      const shapes = inputShapes(layer).map((shape) => JSON.stringify(shape));
      return { op: { kind: "add", sameShapes: shapes.length > 1 && new Set(shapes).size === 1 } };
    }
    case "Multiply": {
      const shapes = inputShapes(layer);
      const gate = shapes.findIndex((g) =>
        g.length === 4 && g[1] === 1 && g[2] === 1 && g[3] !== null
      );
      const other = shapes[1 - gate];
      const perChannel = shapes.length === 2 && gate >= 0 && other?.length === 4 &&
        other[3] === shapes[gate][3] && !(other[1] === 1 && other[2] === 1);
      return { op: { kind: "mul", ...(perChannel ? { perChannel: gate as 0 | 1 } : {}) } };
    }
    case "Dense": {
      const activation = activationOf(layer);
      if (activation === "relu6") throw fusedRelu6(layer);
      return {
        op: {
          kind: "dense",
          kernel: view.weight(weights[0]),
          bias: layer.useBias ? view.weight(weights[1]) : undefined,
          relu: activation === "relu",
        },
      };
    }
    case "SeededDropout":
    case "Dropout":
      if (flavour === "inference" || layer.rate === 0) return "identity";
      if (cls === "Dropout") {
        throw new PlanError(
          `Cannot plan layer "${layer.name}" (Dropout) for training: its masks are not ` +
            "reproducible; use SeededDropout",
        );
      }
      return {
        op: {
          kind: "dropout",
          rate: layer.rate,
          units: (layer.outputShape as number[]).at(-1)!,
          seed: layer.seed,
        },
      };
    default:
      throw unknown(layer);
  }
}

/**
 * A convolution; in the inference flavour with the BatchNorm after it folded in and a plain ReLU
 * after that fused (both absorbed into the step).
 */
function planConvolution(layer: AnyLayer, view: ModelView, flavour: Flavour): Planned {
  const cls = layer.getClassName();
  const dilation = [layer.dilationRate].flat();
  if (dilation.some((d: number) => d !== 1) || layer.dataFormat !== "channelsLast") {
    throw new PlanError(
      `Cannot plan layer "${layer.name}" (${cls}): only undilated channels-last convolutions`,
    );
  }
  const weights = layer.weights as tf.LayerVariable[];
  let kernel = view.weight(weights[0]);
  let bias = layer.useBias ? view.weight(weights[1]) : undefined;
  const activation = activationOf(layer);
  if (activation === "relu6") throw fusedRelu6(layer);
  let relu = activation === "relu";
  const absorbs: string[] = [];
  if (flavour === "inference" && !relu) {
    const folded = foldFollowingBatchNorm(layer, view, kernel, bias);
    ({ kernel, bias } = folded);
    absorbs.push(...folded.absorbs);
    if (folded.next && reluMax(folded.next) === null) {
      relu = true;
      absorbs.push(folded.next.name);
    }
  }
  const [kh, kw] = kernel.shape;
  const [, height, width] = inputShapes(layer)[0] ?? [];
  return {
    op: {
      kind: "conv",
      depthwise: cls === "DepthwiseConv2D",
      kernel,
      bias,
      strides: layer.strides as [number, number],
      padding: layer.padding as "same" | "valid",
      relu,
      // One input position gives one output position whatever the stride or padding.
      pooled: cls === "Conv2D" && kh === 1 && kw === 1 && height === 1 && width === 1,
    },
    absorbs,
  };
}

/**
 * Whether the fused kernels compute `layer`: a DepthwiseConv2D with multiplier 1, no activation,
 * equal strides, at least 8 channels (the kernel's vector width), "valid" padding or "same" at
 * stride 1 with an odd kernel (its padding then does not depend on the size), and no bias in
 * training (the gradient op has no bias gradient).
 */
function fusableDepthwise(layer: AnyLayer, flavour: Flavour): boolean {
  if (layer.getClassName() !== "DepthwiseConv2D") return false;
  const [sh, sw] = layer.strides as number[];
  const [kh, kw] = layer.kernelSize as number[];
  const dilation = [layer.dilationRate].flat();
  const channels = (layer.weights as tf.LayerVariable[])[0].shape[2] as number;
  return layer.depthMultiplier === 1 && (flavour === "inference" || !layer.useBias) &&
    activationOf(layer) === "identity" &&
    sh === sw && kh === kw && dilation.every((d: number) => d === 1) &&
    layer.dataFormat === "channelsLast" && channels >= 8 &&
    (layer.padding === "valid" || (layer.padding === "same" && sh === 1 && kh % 2 === 1));
}

/**
 * A depthwise convolution with its padding inside (fused kernels): a ZeroPadding2D right before it
 * (planLayer made that the identity) or "same" padding's (k − 1) / 2. In the inference flavour
 * the BatchNorm after it is folded in and a ReLU or hard-swish after that absorbed.
 */
function planFusedDepthwise(layer: AnyLayer, view: ModelView, flavour: Flavour): Planned {
  const k = (layer.kernelSize as number[])[0];
  const before = inboundLayers(layer)[0];
  let padding: [[number, number], [number, number]];
  let input = layer;
  if (layer.padding === "same") {
    const p = (k - 1) / 2;
    padding = [[p, p], [p, p]];
  } else if (
    before?.getClassName() === "ZeroPadding2D" && view.onlyConsumer(before.name) === layer
  ) {
    padding = before.padding;
    input = before;
  } else padding = [[0, 0], [0, 0]];
  const [, height, width] = inputShapes(input)[0] ?? [];
  if (!height || !width) {
    throw new PlanError(`Cannot plan ${layer.name}: its input's height and width are not fixed`);
  }
  const weights = layer.weights as tf.LayerVariable[];
  let kernel = view.weight(weights[0]);
  let bias = layer.useBias ? view.weight(weights[1]) : undefined;
  let activation: FusedActivation = "identity";
  const absorbs: string[] = [];
  if (flavour === "inference") {
    const folded = foldFollowingBatchNorm(layer, view, kernel, bias);
    ({ kernel, bias } = folded);
    absorbs.push(...folded.absorbs);
    const after = folded.next;
    if (after?.getClassName() === "HardSwish") activation = "hard_swish";
    else if (after && reluMax(after) === null) activation = "relu";
    if (activation !== "identity") absorbs.push(after.name);
  }
  return {
    op: {
      kind: "depthwise",
      kernel,
      bias,
      activation,
      stride: (layer.strides as number[])[0],
      padding,
      inputSize: [height, width],
    },
    absorbs,
  };
}

/**
 * A training-mode BatchNorm as one fused op, with the activation after it absorbed when it is
 * the BatchNorm's only reader and a plain ReLU or a hard-swish.
 */
function planFusedBatchNorm(layer: AnyLayer, bn: TrainingBatchNorm, view: ModelView): Planned {
  const next = view.onlyConsumer(layer.name);
  const activation: FusedActivation = next?.getClassName() === "HardSwish"
    ? "hard_swish"
    : next && reluMax(next) === null
    ? "relu"
    : "identity";
  return {
    op: { kind: "batchNormAct", ...bn, activation },
    absorbs: activation === "identity" ? [] : [next!.name],
  };
}

function unknown(layer: AnyLayer): PlanError {
  return new PlanError(
    `Cannot plan layer "${layer.name}" (${layer.getClassName()}): no rule for this layer kind; ` +
      "add one in lib/engine/plan.ts",
  );
}

function fusedRelu6(layer: AnyLayer): PlanError {
  return new PlanError(
    `Cannot plan layer "${layer.name}" (${layer.getClassName()}): a relu6 activation inside the ` +
      "layer has no rule; put a ReLU layer (maxValue 6) after it",
  );
}

/**
 * For a ReLU-like layer: null for a plain ReLU, the cap for a capped one (ReLU6: 6), undefined
 * when the layer is not a ReLU at all.
 */
function reluMax(layer: AnyLayer): number | null | undefined {
  const cls = layer.getClassName();
  if (cls === "ReLU") return layer.maxValue ?? null;
  if (cls === "Activation") {
    const a = layer.getConfig().activation;
    return a === "relu" ? null : a === "relu6" ? 6 : undefined;
  }
  return undefined;
}

function floats(t: tf.Tensor): Float32Array {
  return Float32Array.from(t.dataSync() as Float32Array);
}

/** A BatchNorm layer in inference mode as `x · scale + shift` per channel. */
function batchNormAffine(bn: AnyLayer): { scale: Float32Array; shift: Float32Array } {
  const [gamma, beta, mean, variance] = (bn.weights as tf.LayerVariable[]).map((w) =>
    floats(w.read())
  );
  const scale = gamma.map((g, c) => g / Math.sqrt(variance[c] + bn.epsilon));
  const shift = beta.map((b, c) => b - mean[c] * scale[c]);
  return { scale, shift };
}

/**
 * Inference: the BatchNorm reading only `layer`'s output folded into `layer`'s kernel and bias (when
 * there is one), and `next`, the single layer reading the result, for the caller to absorb an
 * activation.
 */
function foldFollowingBatchNorm(
  layer: AnyLayer,
  view: ModelView,
  kernel: WeightRef,
  bias: WeightRef | undefined,
): { kernel: WeightRef; bias?: WeightRef; absorbs: string[]; next?: AnyLayer } {
  const bn = view.onlyConsumer(layer.name);
  if (bn?.getClassName() !== "BatchNorm") return { kernel, bias, absorbs: [], next: bn };
  return {
    ...foldBatchNorm(kernel, bias, bn),
    absorbs: [bn.name],
    next: view.onlyConsumer(bn.name),
  };
}

/** Fold the BatchNorm `bn` into the convolution before it (see the header). */
function foldBatchNorm(
  kernel: WeightRef,
  bias: WeightRef | undefined,
  bn: AnyLayer,
): { kernel: WeightRef; bias: WeightRef } {
  const { scale, shift } = batchNormAffine(bn);
  // Row-major kernels: [k, k, in, out], and depthwise [k, k, C, multiplier] whose output channel
  // is c · multiplier + m; either way the output channel of flat index i is i mod channels.
  const channels = scale.length;
  const values = () => {
    const k = kernel.values();
    for (let i = 0; i < k.length; i++) k[i] *= scale[i % channels];
    return k;
  };
  const biasValues = () => {
    const b0 = bias?.values();
    return shift.map((t, c) => t + (b0 ? b0[c] * scale[c] : 0));
  };
  return {
    kernel: { shape: kernel.shape, values },
    bias: { shape: [channels], values: biasValues },
  };
}

/**
 * For each step, the index of the last step that reads its output (so an interpreter can free it
 * then). The plan's input and output are never freed.
 */
export function lastUses(plan: Plan): Map<string, number> {
  const last = new Map<string, number>();
  plan.steps.forEach((s, i) => s.inputs.forEach((n) => last.set(n, i)));
  return last;
}

/** For each step (and the input), the steps that read its output, in plan order. */
export function readersOf(plan: Plan): Map<string, Step[]> {
  const readers = new Map<string, Step[]>();
  for (const s of plan.steps) {
    for (const i of s.inputs) readers.set(i, [...readers.get(i) ?? [], s]);
  }
  return readers;
}
