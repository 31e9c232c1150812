/**
 * Inference as one TensorFlow graph: an inference plan (plan.ts) written as a GraphDef with the
 * weights as constants (graph_def.ts) and run by a TensorFlow session through the C API (tf_c.ts).
 *
 * Why: TF.js executes a model one kernel at a time from JavaScript. At batch 1 that dispatch
 * dominates (~250 kernels per image), and each kernel runs on its own. A session runs the whole
 * graph in C++, and TensorFlow's graph optimiser (grappler, with oneDNN) fuses convolution + bias
 * + activation chains that the eager API cannot express. Measured at 446 px: see the README's
 * speed table.
 */
import { tf } from "../backend.ts";
import { constantWeights, emitStep, GraphWriter } from "./graph_def.ts";
import { chooseKernels } from "./kernels.ts";
import { planModel } from "./plan.ts";
import type { Predictor } from "./predictor.ts";
import { GraphSession, type HostTensor } from "./tf_c.ts";
import { configProto, sessionSettings } from "./session_config.ts";

/**
 * The GraphDef of `model` in inference mode: input `x` [-1, H, W, C] (0..255), output `logits`;
 * with `fusedKernels`, the fused kernels' ops (loaded by kernels.ts): hard-swish in one pass, and
 * depthwise convolutions with their padding, folded BatchNorm and activation in one op.
 */
export function inferenceGraph(model: tf.LayersModel, fusedKernels = false): Uint8Array {
  const plan = planModel(model, "inference", { fusedKernels });
  const g = new GraphWriter();
  const nodeOf = new Map<string, string>([[
    plan.input,
    g.placeholder("x", [-1, ...plan.inputShape]),
  ]]);
  for (const step of plan.steps) {
    const inputs = step.inputs.map((n) => {
      const node = nodeOf.get(n);
      if (!node) throw new Error(`inferenceGraph: step ${step.name} reads unknown ${n}`);
      return node;
    });
    nodeOf.set(
      step.name,
      emitStep(g, `model/${step.name}`, step.op, inputs, {
        ...constantWeights,
        fusedHardSwish: fusedKernels,
        fusedScaleShift: fusedKernels,
      }),
    );
  }
  g.op("logits", "Identity", [nodeOf.get(plan.output)!]);
  return g.bytes();
}

/** Float32 values of a tensor for feeding a session. */
export function hostTensor(x: tf.Tensor): HostTensor {
  const values = x.dtype === "float32"
    ? x.dataSync() as Float32Array
    : Float32Array.from(x.dataSync());
  return { values, shape: x.shape };
}

/**
 * A predictor that runs `model` as one TensorFlow graph. The model's current weights are copied
 * into the graph: later training does not change this predictor.
 */
export function graphPredictor(
  model: tf.LayersModel,
  opts: { kernels?: "auto" | "fused" | "standard" } = {},
): Predictor {
  const kernels = chooseKernels(opts.kernels);
  const bytes = inferenceGraph(model, kernels.kind === "fused");
  const session = new GraphSession();
  try {
    session.import(bytes);
    session.start(configProto(sessionSettings()));
  } catch (error) {
    session.close();
    throw error;
  }
  const feed = session.output("x");
  const fetch = session.output("logits");
  let disposed = false;
  return {
    engine: "graph",
    kernels,
    predict: (x) => {
      if (disposed) throw new Error("graph predictor: predict after dispose");
      const [logits] = session.run([[feed, hostTensor(x)]], [fetch]);
      return tf.tensor2d(logits.values as Float32Array, logits.shape as [number, number]);
    },
    dispose: () => {
      disposed = true;
      session.close();
    },
  };
}
