/**
 * Fast inference for a trained MobileNetV3 layers model: BatchNorm folded into the convolution
 * before it, ReLU fused into the convolution, and the graph run as plain TF.js operations without
 * the layers API's per-layer bookkeeping. Same function as `model.predict` (a test compares them);
 * measured at 446 px, batch 1: see the README's speed table.
 *
 * Folding: a convolution W then BatchNorm (γ, β, moving mean μ, moving variance σ²) equals one
 * convolution with W·s and bias β − μ·s, where s = γ / √(σ² + ε), per output channel.
 */
import { tf } from "./backend.ts";
import { BatchNorm, HardSigmoid, HardSwish, Normalize, SeededDropout } from "./layers.ts";
import { normalize } from "./preprocess.ts";
import { nativeBackend } from "./native_ops.ts";

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

/** One step of the compiled graph. */
interface Step {
  name: string;
  inputs: string[];
  run: (inputs: tf.Tensor[]) => tf.Tensor;
}

/** A compiled model; `dispose()` frees the folded weights. */
export interface Predictor {
  /** @param x Tensor4D [B, S, S, 3] RGB 0..255. @returns logits [B, classes]; caller disposes. */
  predict(x: tf.Tensor4D): tf.Tensor2D;
  dispose(): void;
}

// deno-lint-ignore no-explicit-any
type AnyLayer = any;

function inboundNames(layer: AnyLayer): string[] {
  const node = layer.inboundNodes?.[0];
  return node ? node.inboundLayers.map((l: AnyLayer) => l.name) : [];
}

/**
 * Compile `model` (as built by buildMobileNetV3Large or loaded from a checkpoint) for inference.
 * Layer kinds it does not know make it throw; callers then use `model.predict`.
 */
export function compileForInference(model: tf.LayersModel): Predictor {
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

  try {
    for (const layer of layers) {
      if (skip.has(layer.name)) continue;
      const inputs = inboundNames(layer).map(source);
      const cls = layer.getClassName();
      if (cls === "InputLayer") continue;
      if (layer instanceof Normalize) {
        const spec = { mean: layer.mean, std: layer.std };
        steps.push({ name: layer.name, inputs, run: ([x]) => normalize(x, spec) });
      } else if (cls === "Conv2D" || cls === "DepthwiseConv2D") {
        const depthwise = cls === "DepthwiseConv2D";
        const weights = layer.getWeights() as tf.Tensor[];
        let kernel = weights[0];
        let bias: tf.Tensor | undefined = layer.useBias ? weights[1] : undefined;
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
          kernel = keep(folded[0]);
          bias = keep(folded[1]);
          skip.add(bn.name);
          alias.set(bn.name, layer.name);
          outName = bn.name;
        }
        // ReLU right after: fused into the convolution.
        let activation: "linear" | "relu" = "linear";
        const after = only(outName) ? byName.get(only(outName)!) : undefined;
        if (after && after.getClassName() === "ReLU" && after.maxValue == null) {
          activation = "relu";
          skip.add(after.name);
          alias.set(after.name, layer.name);
        }
        const strides = layer.strides as [number, number];
        const pad = layer.padding as "same" | "valid";
        const [k, b] = [kernel, bias];
        steps.push({
          name: layer.name,
          inputs,
          run: ([x]) => {
            const y = depthwise
              ? tf.depthwiseConv2d(x as tf.Tensor4D, k as tf.Tensor4D, strides, pad)
              : tf.conv2d(x as tf.Tensor4D, k as tf.Tensor4D, strides, pad);
            const biased = b ? biasAdd(y, b) : y;
            return activation === "relu" ? tf.relu(biased) : biased;
          },
        });
      } else if (layer instanceof BatchNorm) {
        const [gamma, beta, mean, variance] = layer.getWeights();
        const eps = layer.epsilon;
        steps.push({
          name: layer.name,
          inputs,
          run: ([x]) => tf.batchNorm(x, mean, variance, beta, gamma, eps),
        });
      } else if (layer instanceof HardSwish) {
        steps.push({
          name: layer.name,
          inputs,
          run: ([x]) => tf.mul(x, tf.div(tf.relu6(tf.add(x, 3)), 6)),
        });
      } else if (layer instanceof HardSigmoid) {
        steps.push({ name: layer.name, inputs, run: ([x]) => tf.div(tf.relu6(tf.add(x, 3)), 6) });
      } else if (cls === "ReLU") {
        const max = layer.maxValue as number | undefined;
        steps.push({
          name: layer.name,
          inputs,
          run: ([x]) => (max == null ? tf.relu(x) : tf.clipByValue(x, 0, max)),
        });
      } else if (cls === "ZeroPadding2D") {
        const [[t, b], [l, r]] = layer.padding as [[number, number], [number, number]];
        steps.push({
          name: layer.name,
          inputs,
          run: ([x]) => tf.pad(x, [[0, 0], [t, b], [l, r], [0, 0]]),
        });
      } else if (cls === "GlobalAveragePooling2D") {
        steps.push({ name: layer.name, inputs, run: ([x]) => tf.mean(x, [1, 2]) });
      } else if (cls === "Reshape") {
        const target = layer.targetShape as number[];
        steps.push({
          name: layer.name,
          inputs,
          run: ([x]) => tf.reshape(x, [x.shape[0], ...target]),
        });
      } else if (cls === "Add") {
        steps.push({ name: layer.name, inputs, run: ([a, b]) => tf.add(a, b) });
      } else if (cls === "Multiply") {
        steps.push({ name: layer.name, inputs, run: ([a, b]) => tf.mul(a, b) });
      } else if (cls === "Dense") {
        const [kernel, bias] = layer.getWeights() as tf.Tensor[];
        steps.push({
          name: layer.name,
          inputs,
          run: ([x]) => tf.fused.matMul({ a: x as tf.Tensor2D, b: kernel as tf.Tensor2D, bias }),
        });
      } else if (layer instanceof SeededDropout || cls === "Dropout") {
        alias.set(layer.name, inputs[0]); // identity at inference
      } else {
        throw new Error(`compileForInference: no rule for layer ${layer.name} (${cls})`);
      }
    }
  } catch (error) {
    tf.dispose(owned);
    throw error;
  }
  const inputName = (model.inputLayers[0] as AnyLayer).name;
  const outputName = source((model.outputLayers[0] as AnyLayer).name);
  // When each intermediate result is last needed, so it can be freed right after.
  const lastUse = new Map<string, number>();
  steps.forEach((s, i) => s.inputs.forEach((n) => lastUse.set(n, i)));

  return {
    predict: (x) =>
      tf.tidy(() => {
        const values = new Map<string, tf.Tensor>([[inputName, x]]);
        steps.forEach((step, i) => {
          // Each step in its own scope: a convolution's output before its bias and activation is
          // freed at once, not at the end of the whole pass.
          values.set(step.name, tf.tidy(() => step.run(step.inputs.map((n) => values.get(n)!))));
          for (const n of step.inputs) {
            if (lastUse.get(n) === i && n !== inputName) {
              values.get(n)!.dispose();
              values.delete(n);
            }
          }
        });
        return values.get(outputName) as tf.Tensor2D;
      }),
    dispose: () => tf.dispose(owned),
  };
}

/**
 * The fastest predictor available for `model`: compiled when every layer is known, otherwise
 * `model.predict` itself (e.g. a model from elsewhere).
 */
export function predictorFor(model: tf.LayersModel): Predictor {
  try {
    return compileForInference(model);
  } catch {
    return { predict: (x) => model.predict(x) as tf.Tensor2D, dispose: () => {} };
  }
}
