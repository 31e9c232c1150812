/**
 * The eager interpreter: an inference plan (plan.ts) run one TF.js operation at a time, without
 * the layers API's per-layer bookkeeping, each intermediate freed as soon as no later step needs
 * it. Used where the graph engine is not available (no native backend).
 */
import { tf } from "../backend.ts";
import { biasAdd } from "../native_ops.ts";
import { hardSigmoid, hardSwish, normalize } from "../model/mod.ts";
import { lastUses, type Op, planModel, type WeightRef } from "./plan.ts";
import type { Predictor } from "./predictor.ts";

/** A compiled model; the weights are copied in now (later training does not change it). */
export function eagerPredictor(model: tf.LayersModel): Predictor {
  const plan = planModel(model, "inference");
  const owned: tf.Tensor[] = [];
  const tensor = (w: WeightRef) => {
    const t = tf.tensor(w.values(), w.shape, "float32");
    owned.push(t);
    return t;
  };
  // Each step with its weights as tensors, made once.
  const steps = plan.steps.map((step) => ({ ...step, run: stepFunction(step.op, tensor) }));
  const last = lastUses(plan);
  let disposed = false;
  return {
    engine: "eager",
    predict: (x) => {
      if (disposed) throw new Error("eager predictor: predict after dispose");
      return tf.tidy(() => {
        const values = new Map<string, tf.Tensor>([[plan.input, x]]);
        steps.forEach((step, i) => {
          // Each step in its own scope: a convolution's output before its bias and activation is
          // freed at once, not at the end of the whole pass.
          values.set(step.name, tf.tidy(() => step.run(step.inputs.map((n) => values.get(n)!))));
          for (const n of step.inputs) {
            if (last.get(n) === i && n !== plan.input && n !== plan.output) {
              values.get(n)!.dispose();
              values.delete(n);
            }
          }
        });
        return values.get(plan.output) as tf.Tensor2D;
      });
    },
    dispose: () => {
      if (disposed) return;
      disposed = true;
      tf.dispose(owned);
    },
  };
}

/** One step as a function of its inputs, with TF.js operations. */
function stepFunction(
  op: Op,
  tensor: (w: WeightRef) => tf.Tensor,
): (inputs: tf.Tensor[]) => tf.Tensor {
  switch (op.kind) {
    case "normalize":
      return ([x]) => normalize(x, op.spec);
    case "conv": {
      const kernel = tensor(op.kernel) as tf.Tensor4D;
      const bias = op.bias && tensor(op.bias);
      return ([x]) => {
        const c = op.depthwise
          ? tf.depthwiseConv2d(x as tf.Tensor4D, kernel, op.strides, op.padding)
          : tf.conv2d(x as tf.Tensor4D, kernel, op.strides, op.padding);
        const biased = bias ? biasAdd(c, bias) : c;
        return op.relu ? tf.relu(biased) : biased;
      };
    }
    case "scaleShift": {
      const scale = tensor({ shape: [op.scale.length], values: () => op.scale });
      const shift = tensor({ shape: [op.shift.length], values: () => op.shift });
      return ([x]) => tf.add(tf.mul(x, scale), shift);
    }
    case "hardSwish":
      return ([x]) => hardSwish(x);
    case "hardSigmoid":
      return ([x]) => hardSigmoid(x);
    case "relu":
      return ([x]) => (op.max === undefined ? tf.relu(x) : tf.clipByValue(x, 0, op.max));
    case "pad": {
      const [[t, b], [l, r]] = op.padding;
      return ([x]) => tf.pad(x, [[0, 0], [t, b], [l, r], [0, 0]]);
    }
    case "globalMean":
      return ([x]) => tf.mean(x, [1, 2]);
    case "reshape":
      return ([x]) => tf.reshape(x, [x.shape[0], ...op.target]);
    case "add":
      return ([x, y]) => tf.add(x, y);
    case "mul":
      return ([x, y]) => tf.mul(x, y);
    case "dense": {
      const kernel = tensor(op.kernel) as tf.Tensor2D;
      const bias = op.bias && tensor(op.bias);
      return ([x]) =>
        tf.fused.matMul({
          a: x as tf.Tensor2D,
          b: kernel,
          bias,
          activation: op.relu ? "relu" : "linear",
        });
    }
    case "batchNorm":
    case "batchNormAct":
    case "depthwise":
    case "dropout":
      // Training-flavour steps; the eager engine trains through the layers model itself.
      throw new Error(`eager predictor: "${op.kind}" is a training step`);
  }
}
