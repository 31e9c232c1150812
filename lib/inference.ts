/**
 * Fast inference for a trained MobileNetV3 layers model. `planInference` turns the model into a
 * list of steps with BatchNorm folded into the convolution before it and ReLU fused into the
 * convolution; the plan then runs either as one TensorFlow graph (lib/saved_model.ts, native
 * backend) or op by op as plain TF.js operations without the layers API's per-layer bookkeeping.
 * Both compute what `model.predict` does (tests compare them, and the parity check against Keras
 * covers both); measured at 446 px, batch 1: see the README's speed table.
 *
 * Folding: a convolution W then BatchNorm (γ, β, moving mean μ, moving variance σ²) equals one
 * convolution with W·s and bias β − μ·s, where s = γ / √(σ² + ε), per output channel.
 */
import { tf } from "./backend.ts";
import { BatchNorm, HardSigmoid, HardSwish, Normalize, SeededDropout } from "./layers.ts";
import { normalize } from "./preprocess.ts";
import { nativeBackend } from "./native_ops.ts";
import { graphPredictor } from "./saved_model.ts";
import type { NormalizationSpec } from "./layers.ts";

/**
 * Add a per-channel bias: TF's BiasAdd kernel with the native backend (made for exactly this;
 * TF.js's `add` goes through general broadcasting), TF.js's `add` otherwise.
 */
function biasAdd(x: tf.Tensor, bias: tf.Tensor): tf.Tensor {
  const b = nativeBackend();
  if (!b) return tf.add(x, bias);
  return b.executeSingleOutput("BiasAdd", [
    { name: "T", type: b.binding.TF_ATTR_TYPE, value: b.binding.TF_FLOAT },
    { name: "data_format", type: b.binding.TF_ATTR_STRING, value: "NHWC" },
  ], [x, bias]);
}

/**
 * What one step of the compiled model computes. The weights are tensors owned by the plan
 * (already folded where BatchNorm was folded).
 */
export type Op =
  | { kind: "normalize"; spec: NormalizationSpec }
  | {
    kind: "conv";
    depthwise: boolean;
    kernel: tf.Tensor4D;
    bias?: tf.Tensor1D;
    strides: [number, number];
    padding: "same" | "valid";
    relu: boolean;
  }
  | {
    kind: "batchNorm";
    gamma: tf.Tensor1D;
    beta: tf.Tensor1D;
    mean: tf.Tensor1D;
    variance: tf.Tensor1D;
    epsilon: number;
  }
  | { kind: "hardSwish" }
  | { kind: "hardSigmoid" }
  | { kind: "relu"; max?: number }
  | { kind: "pad"; padding: [[number, number], [number, number]] }
  | { kind: "globalMean" }
  | { kind: "reshape"; target: number[] }
  | { kind: "add" }
  | { kind: "mul" }
  | { kind: "dense"; kernel: tf.Tensor2D; bias: tf.Tensor1D };

/** One step: `op` applied to the outputs of the steps (or the input) named in `inputs`. */
export interface Step {
  name: string;
  inputs: string[];
  op: Op;
}

/**
 * A model as a list of steps in execution order, with BatchNorm folded and ReLU fused.
 * `dispose()` frees the folded weights (the model's own weights are untouched).
 */
export interface InferencePlan {
  input: string;
  /** [height, width, channels] of one input image. */
  inputShape: [number, number, number];
  output: string;
  steps: Step[];
  dispose(): void;
}

/** A compiled model; `dispose()` frees what it holds. */
export interface Predictor {
  /** @param x Tensor4D [B, S, S, 3] RGB 0..255. @returns logits [B, classes]; caller disposes. */
  predict(x: tf.Tensor4D): tf.Tensor2D;
  dispose(): void;
  /** How it runs: "graph" (one TensorFlow session call), "eager" (op by op) or "layers". */
  engine: "graph" | "eager" | "layers";
}

/** A TF.js layer with its (untyped) internals: inbound nodes, weights, config fields. */
// deno-lint-ignore no-explicit-any
export type AnyLayer = any;

/** Names of the layers whose outputs feed `layer`. */
export function inboundNames(layer: AnyLayer): string[] {
  const node = layer.inboundNodes?.[0];
  return node ? node.inboundLayers.map((l: AnyLayer) => l.name) : [];
}

/**
 * Turn `model` (as built by buildMobileNetV3Large or loaded from a checkpoint) into steps.
 * Layer kinds it does not know make it throw; callers then use `model.predict`.
 */
export function planInference(model: tf.LayersModel): InferencePlan {
  const layers = model.layers as AnyLayer[];
  const consumers = new Map<string, string[]>();
  for (const l of layers) {
    for (const n of inboundNames(l)) consumers.set(n, [...(consumers.get(n) ?? []), l.name]);
  }
  const only = (
    name: string,
  ) => (consumers.get(name)?.length === 1 ? consumers.get(name)![0] : undefined);
  const byName = new Map(layers.map((l) => [l.name, l]));
  const owned: tf.Tensor[] = [];
  const keep = <T extends tf.Tensor>(t: T) => {
    owned.push(tf.keep(t));
    return t;
  };
  const steps: Step[] = [];
  const alias = new Map<string, string>(); // a folded-away layer's output is its fusion's output
  const source = (name: string) => alias.get(name) ?? name;
  const skip = new Set<string>();
  const add = (layer: AnyLayer, inputs: string[], op: Op) =>
    steps.push({ name: layer.name, inputs, op });

  try {
    for (const layer of layers) {
      if (skip.has(layer.name)) continue;
      const inputs = inboundNames(layer).map(source);
      const cls = layer.getClassName();
      if (cls === "InputLayer") continue;
      if (layer instanceof Normalize) {
        add(layer, inputs, { kind: "normalize", spec: { mean: layer.mean, std: layer.std } });
      } else if (cls === "Conv2D" || cls === "DepthwiseConv2D") {
        const depthwise = cls === "DepthwiseConv2D";
        const weights = layer.getWeights() as tf.Tensor[];
        let kernel = weights[0] as tf.Tensor4D;
        let bias = (layer.useBias ? weights[1] : undefined) as tf.Tensor1D | undefined;
        let outName = layer.name;
        const next = only(layer.name);
        const bn = next ? byName.get(next) : undefined;
        if (bn instanceof BatchNorm) {
          const [gamma, beta, mean, variance] = bn.getWeights();
          const folded = tf.tidy(() => {
            const s = tf.div(gamma, tf.sqrt(tf.add(variance, bn.epsilon)));
            // Depthwise kernels are [k, k, C, 1]: the channel axis is 2, not 3.
            const k = depthwise ? tf.mul(kernel, s.reshape([1, 1, -1, 1])) : tf.mul(kernel, s);
            const b0 = bias ? tf.mul(bias, s) : tf.zerosLike(s);
            return [k, tf.add(tf.sub(beta, tf.mul(mean, s)), b0)];
          });
          kernel = keep(folded[0] as tf.Tensor4D);
          bias = keep(folded[1] as tf.Tensor1D);
          skip.add(bn.name);
          alias.set(bn.name, layer.name);
          outName = bn.name;
        }
        // ReLU right after: fused into the convolution.
        let relu = false;
        const after = only(outName) ? byName.get(only(outName)!) : undefined;
        if (after && after.getClassName() === "ReLU" && after.maxValue == null) {
          relu = true;
          skip.add(after.name);
          alias.set(after.name, layer.name);
        }
        add(layer, inputs, {
          kind: "conv",
          depthwise,
          kernel,
          bias,
          strides: layer.strides as [number, number],
          padding: layer.padding as "same" | "valid",
          relu,
        });
      } else if (layer instanceof BatchNorm) {
        const [gamma, beta, mean, variance] = layer.getWeights() as tf.Tensor1D[];
        add(layer, inputs, {
          kind: "batchNorm",
          gamma,
          beta,
          mean,
          variance,
          epsilon: layer.epsilon,
        });
      } else if (layer instanceof HardSwish) {
        add(layer, inputs, { kind: "hardSwish" });
      } else if (layer instanceof HardSigmoid) {
        add(layer, inputs, { kind: "hardSigmoid" });
      } else if (cls === "ReLU") {
        add(layer, inputs, { kind: "relu", max: layer.maxValue ?? undefined });
      } else if (cls === "ZeroPadding2D") {
        add(layer, inputs, { kind: "pad", padding: layer.padding });
      } else if (cls === "GlobalAveragePooling2D") {
        add(layer, inputs, { kind: "globalMean" });
      } else if (cls === "Reshape") {
        add(layer, inputs, { kind: "reshape", target: layer.targetShape });
      } else if (cls === "Add") {
        add(layer, inputs, { kind: "add" });
      } else if (cls === "Multiply") {
        add(layer, inputs, { kind: "mul" });
      } else if (cls === "Dense") {
        const [kernel, bias] = layer.getWeights() as tf.Tensor[];
        if (layer.getConfig().activation !== "linear") {
          throw new Error(`planInference: dense layer ${layer.name} has an activation`);
        }
        add(layer, inputs, {
          kind: "dense",
          kernel: kernel as tf.Tensor2D,
          bias: bias as tf.Tensor1D,
        });
      } else if (layer instanceof SeededDropout || cls === "Dropout") {
        alias.set(layer.name, inputs[0]); // identity at inference
      } else {
        throw new Error(`planInference: no rule for layer ${layer.name} (${cls})`);
      }
    }
  } catch (error) {
    tf.dispose(owned);
    throw error;
  }
  const shape = model.inputs[0].shape;
  if (shape.length !== 4 || shape.slice(1).some((d) => d == null)) {
    tf.dispose(owned);
    throw new Error(`planInference: input shape ${JSON.stringify(shape)} is not [B, H, W, C]`);
  }
  return {
    input: (model.inputLayers[0] as AnyLayer).name,
    inputShape: shape.slice(1) as [number, number, number],
    output: source((model.outputLayers[0] as AnyLayer).name),
    steps,
    dispose: () => tf.dispose(owned),
  };
}

/** One step, eagerly, with TF.js operations. */
function runStep(op: Op, [x, y]: tf.Tensor[]): tf.Tensor {
  switch (op.kind) {
    case "normalize":
      return normalize(x, op.spec);
    case "conv": {
      const c = op.depthwise
        ? tf.depthwiseConv2d(x as tf.Tensor4D, op.kernel, op.strides, op.padding)
        : tf.conv2d(x as tf.Tensor4D, op.kernel, op.strides, op.padding);
      const biased = op.bias ? biasAdd(c, op.bias) : c;
      return op.relu ? tf.relu(biased) : biased;
    }
    case "batchNorm":
      return tf.batchNorm(x, op.mean, op.variance, op.beta, op.gamma, op.epsilon);
    case "hardSwish":
      return tf.mul(x, tf.div(tf.relu6(tf.add(x, 3)), 6));
    case "hardSigmoid":
      return tf.div(tf.relu6(tf.add(x, 3)), 6);
    case "relu":
      return op.max == null ? tf.relu(x) : tf.clipByValue(x, 0, op.max);
    case "pad": {
      const [[t, b], [l, r]] = op.padding;
      return tf.pad(x, [[0, 0], [t, b], [l, r], [0, 0]]);
    }
    case "globalMean":
      return tf.mean(x, [1, 2]);
    case "reshape":
      return tf.reshape(x, [x.shape[0], ...op.target]);
    case "add":
      return tf.add(x, y);
    case "mul":
      return tf.mul(x, y);
    case "dense":
      return tf.fused.matMul({ a: x as tf.Tensor2D, b: op.kernel, bias: op.bias });
  }
}

/**
 * Compile `model` for eager inference: the plan's steps run one TF.js operation at a time, each
 * intermediate result freed as soon as no later step needs it.
 */
export function compileForInference(model: tf.LayersModel): Predictor {
  const plan = planInference(model);
  const { steps, input, output } = plan;
  // When each intermediate result is last needed, so it can be freed right after.
  const lastUse = new Map<string, number>();
  steps.forEach((s, i) => s.inputs.forEach((n) => lastUse.set(n, i)));
  return {
    engine: "eager",
    predict: (x) =>
      tf.tidy(() => {
        const values = new Map<string, tf.Tensor>([[input, x]]);
        steps.forEach((step, i) => {
          // Each step in its own scope: a convolution's output before its bias and activation is
          // freed at once, not at the end of the whole pass.
          values.set(
            step.name,
            tf.tidy(() => runStep(step.op, step.inputs.map((n) => values.get(n)!))),
          );
          for (const n of step.inputs) {
            if (lastUse.get(n) === i && n !== input) {
              values.get(n)!.dispose();
              values.delete(n);
            }
          }
        });
        return values.get(output) as tf.Tensor2D;
      }),
    dispose: () => plan.dispose(),
  };
}

/**
 * The fastest predictor available for `model`: with the native backend, the whole model as one
 * TensorFlow graph (lib/saved_model.ts); otherwise compiled to eager TF.js operations; when a
 * layer is unknown (e.g. a model from elsewhere), `model.predict` itself.
 * `engine` forces one of them (benchmarks and tests compare them).
 */
export function predictorFor(
  model: tf.LayersModel,
  engine?: Predictor["engine"],
): Predictor {
  if (engine === "layers") return layersPredictor(model);
  if (engine === "eager") return compileForInference(model);
  if (engine === "graph") return graphPredictor(model);
  if (nativeBackend()) {
    try {
      return graphPredictor(model);
    } catch (error) {
      // Unexpected with the native backend: say so once, then run eagerly (same results, slower).
      if (!graphWarned) console.warn(`one-graph inference unavailable, running eagerly: ${error}`);
      graphWarned = true;
    }
  }
  try {
    return compileForInference(model);
  } catch {
    return layersPredictor(model);
  }
}

let graphWarned = false;

function layersPredictor(model: tf.LayersModel): Predictor {
  return {
    engine: "layers",
    predict: (x) => model.predict(x) as tf.Tensor2D,
    dispose: () => {},
  };
}
