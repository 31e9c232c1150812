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
import { constantWeights, emitFusedConv, emitStep, GraphWriter } from "./graph_def.ts";
import { chooseKernels } from "./kernels.ts";
import { type Plan, planModel, readersOf, type Step } from "./plan.ts";
import type { Predictor } from "./predictor.ts";
import { GraphSession, type HostTensor, loadedLibrary } from "./tf_c.ts";
import { configProto, onednnEnabled, sessionSettings } from "./session_config.ts";

/**
 * The GraphDef of `model` in inference mode: input `x` [-1, H, W, C] (0..255), output `logits`;
 * with `fusedKernels`, the fused kernels' ops (loaded by kernels.ts): hard-swish in one pass, and
 * depthwise convolutions with their padding, folded BatchNorm and activation in one op; and the
 * other convolutions with their bias and ReLU or hard-swish as TensorFlow's _FusedConv2D.
 */
export function inferenceGraph(model: tf.LayersModel, fusedKernels = false): Uint8Array {
  const plan = planModel(model, "inference", { fusedKernels });
  const g = new GraphWriter();
  const nodeOf = new Map<string, string>([[
    plan.input,
    g.placeholder("x", [-1, ...plan.inputShape]),
  ]]);
  const ctx = {
    ...constantWeights,
    fusedHardSwish: fusedKernels,
    fusedScaleShift: fusedKernels,
    fusedConvolutions: fusedKernels,
  };
  // _FusedHardSwish is oneDNN's: not TensorFlow's plain CPU kernels' nor its GPU kernels'.
  const withHardSwish =
    fusedKernels && onednnEnabled() && !loadedLibrary().includes("tfjs-node-gpu")
      ? convolutionsBeforeHardSwish(plan)
      : [];
  const inputsOf = (step: Step) =>
    step.inputs.map((n) => {
      const node = nodeOf.get(n);
      if (!node) throw new Error(`inferenceGraph: step ${step.name} reads unknown ${n}`);
      return node;
    });
  for (const step of plan.steps) {
    const conv = withHardSwish.find((c) => c.hardSwish === step);
    if (conv) {
      // The convolution's step emitted nothing (below): the two as one node, named as this one.
      const op = conv.conv.op as Extract<Step["op"], { kind: "conv" }>;
      const [x] = inputsOf(conv.conv);
      const name = `model/${step.name}`;
      const kernel = ctx.weight(g, `${name}/kernel`, op.kernel);
      nodeOf.set(step.name, emitFusedConv(g, name, op, x, kernel, ctx, "_FusedHardSwish"));
    } else if (!withHardSwish.some((c) => c.conv === step)) {
      nodeOf.set(step.name, emitStep(g, `model/${step.name}`, step.op, inputsOf(step), ctx));
    }
  }
  g.op("logits", "Identity", [nodeOf.get(plan.output)!]);
  return g.bytes();
}

/**
 * The convolutions (with a bias: the BatchNorm after them folded in) whose output only a
 * hard-swish reads: the graph predictor emits each pair as one of oneDNN's fused convolutions
 * (emitFusedConv), so the hard-swish is not a pass of its own over the output. Measured at 446 px
 * with the ReLU fusion (emitStep), two predictors alternating in one process, both orders, median
 * ms per image: batch 1 29.2 → 26.8 and 28.5 → 27.2; batch 4 25.2 → 24.1 and 20.3 → 18.7;
 * batch 16 22.1 → 18.4 and 20.2 → 17.7.
 */
export function convolutionsBeforeHardSwish(plan: Plan): { conv: Step; hardSwish: Step }[] {
  const readers = readersOf(plan);
  return plan.steps.flatMap((conv) => {
    const op = conv.op;
    const [next, ...others] = readers.get(conv.name) ?? [];
    return op.kind === "conv" && !op.depthwise && !op.pooled && op.bias && !op.relu &&
        next?.op.kind === "hardSwish" && others.length === 0 && conv.name !== plan.output
      ? [{ conv, hardSwish: next }]
      : [];
  });
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
