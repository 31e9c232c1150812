/**
 * The training step as one TensorFlow graph, run by a TensorFlow session through the C API
 * (tf_c.ts): the training-flavour plan of the model (plan.ts) in training mode, cross-entropy,
 * TensorFlow's own gradients (TF_AddGradients), the SGD-with-momentum update and the BatchNorm
 * moving averages — one call per batch instead of ~2,400 kernels dispatched one by one.
 *
 * Same maths as the eager step (eager_train.ts; a test compares one step of each): the same
 * FusedBatchNormV3 kernel with Keras's moving-average convention, the same dropout masks (drawn
 * with TF.js's seeded generator and fed in), TF's ApplyMomentum with TF.js's momentum rule
 * (accum = m·accum + g; w −= lr·accum), the mean cross-entropy over the batch.
 *
 * One source of truth for the weights: while the engine lives they are the session's variables,
 * and the layers model's weights are guarded. Any read of them (predict, save, getWeights, a
 * checkpoint, Grad-CAM) first copies the current values out of the session when a step has run
 * since the last copy; a write is refused. `dispose()` leaves the last weights in the model.
 */
import { tf } from "../backend.ts";
import { argmaxRows } from "../maths.ts";
import {
  type Attr,
  depthwiseAttrs,
  emitBatchNormMoments,
  type EmitContext,
  emitDepthwiseOfBatchNorm,
  emitStep,
  fusedAttrs,
  GraphWriter,
} from "./graph_def.ts";
import { hostTensor } from "./graph_predictor.ts";
import { chooseKernels, type KernelChoice } from "./kernels.ts";
import { type Plan, planModel, readersOf, type Step } from "./plan.ts";
import type { NamedTensor, StepEngine, StepEngineOptions, StepResult } from "./step.ts";
import {
  DT_FLOAT,
  DT_INT32,
  DT_RESOURCE,
  GraphSession,
  type HostTensor,
  type Output,
} from "./tf_c.ts";
import { configProto, sessionSettings, tracingRunOptions } from "./session_config.ts";
import { POINTWISE_INPUT_PRODUCT, POINTWISE_KERNEL_PRODUCT } from "./profile.ts";

/** One plan step as emitted: its output and input tensors and the trainable weights it reads. */
interface EmittedStep {
  node: string;
  output: string;
  inputs: string[];
  /**
   * With fused kernels, what the step's ops read instead of each input: an Identity of its own,
   * so that TF_AddGradients from the step's output stops at the step (see chainedGradients).
   */
  cuts: string[];
  weights: number[];
  op: Step["op"];
  /** A fused BatchNorm's batch mean and 1/std (outputs of its op), which its gradients read. */
  stats?: { mean: string; invStd: string };
}

interface TrainingGraph {
  bytes: Uint8Array;
  /** The steps in order (the backward pass walks them in reverse when kernels are fused). */
  steps: EmittedStep[];
  kernels: KernelChoice;
  /** Gradients written step by step (chainedGradients): always with fused kernels. */
  chained: boolean;
  /** model.weights index of each trainable variable "var/i". */
  trainable: number[];
  logits: string;
  dropouts: { placeholder: string; units: number; rate: number; seed: number }[];
}

/**
 * The forward graph in training mode, its loss and the ops that set and read the variables.
 * Node names: `x`, `labels`, `lr`, `var/i` for model.weights[i] (with `var_read/i`, `var_init/i`,
 * `var_assign/i`), `accum/i` for its momentum buffer (same family), `loss`, and `bn_update` (a
 * NoOp that runs the moving-average assignments).
 */
function trainingGraph(
  model: tf.LayersModel,
  numClasses: number,
  tag: string,
  kernels: KernelChoice,
  chained: boolean,
): TrainingGraph {
  const plan = planModel(model, "training", { fusedKernels: kernels.kind === "fused" });
  const g = new GraphWriter();
  const weights = model.weights;
  const trainable = weights.map((w, i) => (w.trainable ? i : -1)).filter((i) => i >= 0);
  const variable = (prefix: string, i: number, shape: number[]) => {
    const handle = g.node(`${prefix}/${i}`, "VarHandleOp", [], {
      dtype: { type: DT_FLOAT },
      shape: { shape },
      shared_name: { s: `${tag}/${prefix}/${i}` },
      container: { s: "" },
    });
    g.node(`${prefix}_read/${i}`, "ReadVariableOp", [handle], { dtype: { type: DT_FLOAT } });
    g.placeholder(`${prefix}_init/${i}`, shape);
    g.node(`${prefix}_assign/${i}`, "AssignVariableOp", [handle, `${prefix}_init/${i}`], {
      dtype: { type: DT_FLOAT },
    });
  };
  weights.forEach((w, i) => variable("var", i, w.shape as number[]));
  trainable.forEach((i) => variable("accum", i, weights[i].shape as number[]));

  const bnAssigns: string[] = [];
  const dropouts: TrainingGraph["dropouts"] = [];
  let stepWeights: number[] = [];
  const ctx: EmitContext = {
    // The one scale-and-shift step is the input's normalisation, whose input needs no gradient.
    fusedScaleShift: kernels.kind === "fused",
    weight: (_g, name, w) => {
      if (w.modelIndex === undefined) throw new Error(`graph training: ${name} is not a weight`);
      if (weights[w.modelIndex].trainable) stepWeights.push(w.modelIndex);
      return `var_read/${w.modelIndex}`;
    },
    assign: (g, name, w, value) => {
      bnAssigns.push(g.node(name, "AssignVariableOp", [`var/${w.modelIndex}`, value], {
        dtype: { type: DT_FLOAT },
      }));
    },
    mask: (g, name, units, op) => {
      dropouts.push({
        placeholder: g.placeholder(name, [-1, units]),
        units,
        rate: op.rate,
        seed: op.seed,
      });
      return name;
    },
  };
  const nodeOf = new Map([[plan.input, g.placeholder("x", [-1, ...plan.inputShape])]]);
  g.placeholder("labels", [-1, numClasses]);
  g.placeholder("lr", []);
  const steps: EmittedStep[] = [];
  const unwritten = kernels.kind === "fused" ? batchNormsIntoDepthwise(plan) : new Set<string>();
  // Each unwritten output's BatchNorm: its settings, and its input, gamma, beta, mean and 1/std.
  const madeBy = new Map<
    string,
    { op: Extract<Step["op"], { kind: "batchNormAct" }>; reads: string[] }
  >();
  for (const step of plan.steps) {
    const inputs = step.inputs.map((n) => nodeOf.get(n)!);
    stepWeights = [];
    const node = `model/${step.name}`;
    // A depthwise convolution of a BatchNorm's output that is never written out reads the
    // BatchNorm's input, weights and statistics instead (emitDepthwiseOfBatchNorm).
    const ofBatchNorm = step.op.kind === "depthwise" ? madeBy.get(inputs[0]) : undefined;
    const cuts = chained && !ofBatchNorm
      ? inputs.map((t, j) => g.op(`${node}/in${j}`, "Identity", [t]))
      : inputs;
    let output: string, stats: EmittedStep["stats"];
    if (step.op.kind === "batchNormAct" && unwritten.has(step.name)) {
      const { gamma, beta, mean, invStd } = emitBatchNormMoments(g, node, step.op, cuts[0], ctx);
      stats = { mean, invStd };
      // Not a tensor of the graph: what stands for the output the convolution makes as it goes.
      output = `${node}/unwritten`;
      madeBy.set(output, { op: step.op, reads: [cuts[0], gamma, beta, mean, invStd] });
    } else if (ofBatchNorm) {
      output = emitDepthwiseOfBatchNorm(
        g,
        node,
        step.op as Extract<Step["op"], { kind: "depthwise" }>,
        ofBatchNorm.op,
        ofBatchNorm.reads,
        ctx,
      );
    } else {
      output = emitStep(g, node, step.op, cuts, ctx);
      if (step.op.kind === "batchNormAct") stats = { mean: `${node}:3`, invStd: `${node}:4` };
    }
    nodeOf.set(step.name, output);
    steps.push({ node, output, inputs, cuts, weights: stepWeights, op: step.op, stats });
  }
  const logits = nodeOf.get(plan.output)!;
  g.op("xent", "SoftmaxCrossEntropyWithLogits", [logits, "labels"]);
  const axes = g.intConst("loss/axes", [1], [0]);
  g.op("loss", "Mean", ["xent:0", axes], { Tidx: { type: DT_INT32 }, keep_dims: { b: false } });
  g.node("bn_update", "NoOp", bnAssigns.map((a) => `^${a}`), {});
  return { bytes: g.bytes(), steps, kernels, chained, trainable, logits, dropouts };
}

/**
 * The fused BatchNorm steps whose output a depthwise step alone reads (the expand layers'): the
 * graph never writes those outputs out (emitBatchNormMoments, emitDepthwiseOfBatchNorm). They are
 * the step's largest tensors, and the backward pass makes them again only row by row
 * (CxrDepthwiseConvFilterGradOfBatchNorm).
 */
function batchNormsIntoDepthwise(plan: Plan): Set<string> {
  const readers = readersOf(plan);
  return new Set(
    plan.steps.filter((s) => {
      const r = readers.get(s.name) ?? [];
      return s.op.kind === "batchNormAct" && s.name !== plan.output && r.length === 1 &&
        r[0].op.kind === "depthwise";
    }).map((s) => s.name),
  );
}

/** The optimizer's nodes, imported after the gradients exist (they read them via input maps). */
function optimizerGraph(trainable: number[], momentum: number): Uint8Array {
  const g = new GraphWriter();
  // Stand-ins that the import maps onto the gradients, variables and learning rate.
  const lr = g.standIn("opt/lr", DT_FLOAT);
  const m = g.floatConst("opt/momentum", [], Float32Array.of(momentum));
  const applies = trainable.map((i) =>
    g.node(`opt/apply/${i}`, "ResourceApplyMomentum", [
      g.standIn(`opt/var/${i}`, DT_RESOURCE),
      g.standIn(`opt/accum/${i}`, DT_RESOURCE),
      lr,
      g.standIn(`opt/grad/${i}`, DT_FLOAT),
      m,
    ], {
      T: { type: DT_FLOAT },
      use_locking: { b: false },
      use_nesterov: { b: false },
    })
  );
  g.node("opt/train", "NoOp", applies.map((a) => `^${a}`), {});
  return g.bytes();
}

let engines = 0;

/**
 * A graph-mode step engine for `model` (its weights copied in now). `chainedGradients` writes the
 * gradients step by step even with TensorFlow's own kernels (tests compare the two ways).
 */
export function graphStepEngine(
  model: tf.LayersModel,
  opts: StepEngineOptions,
  { chainedGradients = false } = {},
): GraphStepEngine {
  const kernels = chooseKernels(opts.kernels);
  const built = trainingGraph(
    model,
    opts.numClasses,
    `s${Deno.pid}_${++engines}`,
    kernels,
    chainedGradients || kernels.kind === "fused",
  );
  const session = new GraphSession();
  try {
    return startEngine(model, opts, built, session);
  } catch (error) {
    // Whatever failed after the graph existed (import, gradients, a bad saved state): free it.
    session.close();
    throw error;
  }
}

/** The graph engine: a step engine that can also trace a step (engine/profile.ts). */
export interface GraphStepEngine extends StepEngine {
  /** The whole training graph as a serialised GraphDef (tests read which op reads what). */
  graphDef(): Uint8Array;
  /** One step with TensorFlow's tracing on; also returns the serialised RunMetadata. */
  traceStep(
    x: tf.Tensor4D,
    labels: tf.Tensor1D,
    globalStep: number,
  ): Promise<StepResult & { metadata: Uint8Array }>;
}

/**
 * The forward graph, TensorFlow's gradients of the loss and the SGD-momentum update, in one
 * session, started with the run's session settings.
 */
function buildSession(session: GraphSession, built: TrainingGraph, momentum: number): void {
  session.import(built.bytes);
  const loss = session.output("loss");
  const grads = built.chained ? chainedGradients(session, built) : session.addGradients(
    "grad",
    [loss],
    built.trainable.map((i) => session.output(`var_read/${i}`)),
  );
  grads.forEach((g, k) => {
    if (!g.op) throw new Error(`graph training: no gradient for weight ${built.trainable[k]}`);
  });
  const map: [string, Output][] = [["opt/lr", session.output("lr")]];
  built.trainable.forEach((i, k) => {
    map.push([`opt/var/${i}`, session.output(`var/${i}`)]);
    map.push([`opt/accum/${i}`, session.output(`accum/${i}`)]);
    map.push([`opt/grad/${i}`, grads[k]]);
  });
  session.import(optimizerGraph(built.trainable, momentum), map);
  session.start(configProto(sessionSettings()));
}

/**
 * The loss's gradients for the trainable weights, written step by step from the output back:
 * TensorFlow's own gradients (TF_AddGradients) for each standard step, given the gradient flowing
 * into its output, and our gradient ops for each fused one, CxrBatchNormActGrad or
 * CxrDepthwiseConvInputGrad and …FilterGrad (TensorFlow's C API cannot register a gradient for an
 * op, so TF_AddGradients cannot go through it); a pointwise convolution's kernel gradient is a
 * matrix product (pointwiseKernelGradient). Where a tensor feeds several steps (residual and
 * squeeze-excite branches) their contributions are summed before its producer is reached, which
 * reverse order guarantees. The same numbers as one TF_AddGradients over the whole graph, to
 * rounding (a test checks the training step against the eager one).
 *
 * TF_AddGradients gives total derivatives: asked for a step's output with respect to its inputs, it
 * would also follow every path between them (a squeeze-excite gate is computed from the tensor it
 * scales) and the fused ops on it. So each step reads its inputs through Identity nodes of its own
 * (`cuts`), which no other path reaches, and the gradients are taken with respect to those.
 */
function chainedGradients(session: GraphSession, built: TrainingGraph): Output[] {
  const out = (name: string) => session.output(name);
  // Tensors that depend on a trainable weight: only their gradients are needed.
  const needed = new Set<string>();
  for (const s of built.steps) {
    if (s.weights.length || s.inputs.some((i) => needed.has(i))) needed.add(s.output);
  }
  const pending = new Map<string, (Output | SqueezePart)[]>([
    [built.logits, session.addGradients("grad/loss", [out("loss")], [out(built.logits)])],
  ]);
  const weightGrads = new Map<number, Output>();
  const fused = built.kernels.kind === "fused";
  const recompute = recomputer(session, built.steps);
  built.steps.toReversed().forEach((step, k) => {
    const all = pending.get(step.output);
    if (!all) return;
    pending.delete(step.output);
    // A BatchNorm output read by exactly a squeeze-excite scaling and its pooling: their two
    // parts of its gradient go into the BatchNorm's gradient op as they are (SqueezePart).
    const scaledBy = all.find((p): p is SqueezePart => "gate" in p);
    const pooled = all.find((p): p is SqueezePart => "pooling" in p);
    const together = step.op.kind === "batchNormAct" && all.length === 2 && scaledBy && pooled
      ? { gate: scaledBy.gate!, pooled: pooled.dy }
      : undefined;
    const parts = together ? [] : all.map((p) => "dy" in p ? squeezeGradient(session, p) : p);
    const dy = together
      ? scaledBy!.dy
      : parts.length === 1
      ? parts[0]
      : sumOutputs(session, `grad/sum/${step.node}`, parts);
    let xs = step.inputs.map((input, j) => ({ input, cut: step.cuts[j] }))
      .filter((x) => needed.has(x.input));
    if (xs.length + step.weights.length === 0) return;
    let grads: (Output | SqueezePart)[];
    let y = step.output;
    let reads = step.cuts; // what the differentiated step reads, input by input
    // Steps whose gradients are written here (ops of our own, pointwise convolutions, residual
    // sums and, with the fused kernels, squeeze-excite's scaling and pooling), fed the inputs
    // directly.
    const pointwise = isPointwise(step.op) && step.weights.length === 1;
    // A residual sum passes dy to each input as it is. TensorFlow's gradient of a copy reading
    // the recomputed BatchNorm output took the inputs' shapes, so it recomputed that output (and
    // the sum) for nothing.
    const residual = step.op.kind === "add" && step.op.sameShapes;
    // Squeeze-excite's scaling by its gate and its pooling, with the fused kernels: gateGradient
    // and SqueezePart.
    const scaling = fused && step.op.kind === "mul" && step.op.perChannel !== undefined;
    const pooling = fused && step.op.kind === "globalMean";
    const own = step.op.kind === "batchNormAct" || step.op.kind === "depthwise" || pointwise ||
      residual || scaling || pooling;
    if (!own && recompute.can(step.output)) {
      // A step whose output is itself recomputed (a padding or squeeze-excite scaling of a
      // BatchNorm output): its recomputed copy is the one to differentiate.
      y = recompute.get(step.output, dy)!;
      reads = step.inputs.map((i, j) => recompute.get(i, dy) ?? step.cuts[j]);
      xs = xs.map((x) => ({ input: x.input, cut: reads[step.inputs.indexOf(x.input)] }));
    } else if (!own && step.inputs.some((i) => recompute.can(i))) {
      // Differentiate a copy that reads recomputed inputs, so that no gradient op reads (and
      // keeps alive) the forward pass's BatchNorm outputs.
      const copy = copyStep(
        session,
        `grad/copy/${step.node}`,
        step,
        step.inputs.map((i, j) => recompute.get(i, dy) ?? step.cuts[j]),
      );
      y = copy.output;
      reads = copy.inputs;
      xs = xs.map((x) => ({ input: x.input, cut: reads[step.inputs.indexOf(x.input)] }));
    }
    if (step.op.kind === "batchNormAct") {
      const g = fusedGradient(session, step, dy, together);
      const gx = xs.length ? [g[0]] : [];
      const byWeight = new Map([[step.op.gamma.modelIndex, g[1]], [step.op.beta.modelIndex, g[2]]]);
      grads = [...gx, ...step.weights.map((w) => byWeight.get(w)!)];
    } else if (step.op.kind === "depthwise") {
      // A BatchNorm output's filter gradient makes that output row by row as it goes; any other
      // input is read recomputed where it can be (so the forward one is not kept), else as it is.
      const x = recompute.batchNorm(step.inputs[0]) ?? recompute.get(step.inputs[0], dy) ??
        step.inputs[0];
      const { dx, dw } = depthwiseGradients(session, step, dy, x, xs.length > 0);
      grads = [...(dx ? [dx] : []), ...step.weights.map(() => dw)];
    } else if (residual) {
      grads = xs.map(() => dy);
    } else if (scaling) {
      const values = step.inputs.map((i, j) => recompute.get(i, dy) ?? step.cuts[j]);
      const gate = (step.op as Extract<Step["op"], { kind: "mul" }>).perChannel!;
      grads = xs.map(({ input }) =>
        step.inputs.indexOf(input) === gate
          ? gateGradient(session, step, dy, values[1 - gate])
          : { step, dy, gate: session.output(values[gate]) }
      );
    } else if (pooling) {
      grads = [{ step, dy, pooling: true }];
    } else if (pointwise) {
      // The input's gradient from dy and the kernel alone; the kernel's as one matrix product
      // with the recomputed input where there is one (below).
      const x = recompute.get(step.inputs[0], dy) ?? step.cuts[0];
      grads = [
        ...(xs.length ? [pointwiseInputGradient(session, `grad/${step.node}`, step, dy)] : []),
        pointwiseKernelGradient(session, `grad/${step.node}`, step, dy, x),
      ];
    } else {
      if (
        (step.op.kind === "normalize" || step.op.kind === "scaleShift") &&
        built.kernels.kind === "fused"
      ) {
        // CxrScaleShift (trainingGraph's fusedScaleShift) has no gradient op.
        throw new Error(`graph training: ${step.node} is a CxrScaleShift that needs a gradient`);
      }
      grads = session.addGradients(
        `grad/${k}`,
        [out(y)],
        [...xs.map((x) => out(x.cut)), ...step.weights.map((w) => out(`var_read/${w}`))],
        [dy],
      );
    }
    xs.forEach(({ input }, i) => pending.set(input, [...pending.get(input) ?? [], grads[i]]));
    step.weights.forEach((w, i) => {
      if (weightGrads.has(w)) throw new Error(`graph training: weight ${w} is read twice`);
      weightGrads.set(w, grads[xs.length + i] as Output);
    });
  });
  return built.trainable.map((i) => {
    const g = weightGrads.get(i);
    if (!g) throw new Error(`graph training: no gradient for weight ${i}`);
    return g;
  });
}

/**
 * The backward pass's copies of tensors the forward pass need not keep: each fused BatchNorm's
 * output (CxrBatchNormActApply from its input and batch statistics, which are kept anyway), a
 * padding of one, and a squeeze-excite scaling of one (the gate is small and kept). `can(t)`:
 * whether `t` is one; `get(t, after)`: its copy, added to the graph once, when first asked for,
 * made to wait for `after` (the gradient that first needs it).
 */
function recomputer(session: GraphSession, steps: EmittedStep[]) {
  const producer = new Map(steps.map((s) => [s.output, s]));
  const made = new Map<string, string>();
  const can = (tensor: string): boolean => {
    const s = producer.get(tensor);
    if (s?.op.kind === "batchNormAct") return true;
    // A padding of one, and squeeze-excite's scaling of one by its (small, kept) gate.
    return (s?.op.kind === "pad" || s?.op.kind === "mul") && s.inputs.some(can);
  };
  const get = (tensor: string, after: Output): string | undefined => {
    if (!can(tensor)) return undefined;
    const known = made.get(tensor);
    if (known) return known;
    const s = producer.get(tensor)!;
    let copy: string;
    if (s.op.kind === "batchNormAct") {
      copy = `grad/recompute/${s.node}`;
      // Not before the backward pass gets here (`after`): its inputs are ready early in the
      // forward pass, and TensorFlow runs an op as soon as they are, which would keep the copy as
      // long as the original (measured: no memory saved without this dependency).
      importOp(
        session,
        copy,
        "CxrBatchNormActApply",
        [
          session.output(s.inputs[0]),
          ...batchNormReads(session, s),
        ],
        fusedAttrs(s.op),
        { after },
      );
    } else {
      const inputs = s.inputs.map((i, j) => get(i, after) ?? s.cuts[j]);
      copy = copyStep(session, `grad/recompute/${s.node}`, s, inputs).output;
    }
    made.set(tensor, copy);
    return copy;
  };
  /** The fused BatchNorm step whose output `tensor` is, if it is one. */
  const batchNorm = (tensor: string): EmittedStep | undefined => {
    const s = producer.get(tensor);
    return s?.op.kind === "batchNormAct" ? s : undefined;
  };
  return { can, get, batchNorm };
}

/**
 * A copy of a standard step reading `inputs` (tensors already in the graph) and the same weights,
 * for the backward pass to differentiate: its forward ops run only where a gradient needs them.
 */
function copyStep(
  session: GraphSession,
  prefix: string,
  step: EmittedStep,
  inputs: string[],
): { output: string; inputs: string[] } {
  const g = new GraphWriter();
  const map: [string, Output][] = [];
  const placeholder = (name: string, source: string) => {
    map.push([g.standIn(name), session.output(source)]);
    return name;
  };
  const fed = inputs.map((t, j) => placeholder(`${prefix}/in${j}`, t));
  const output = emitStep(g, prefix, step.op, fed, {
    weight: (_g, name, w) => placeholder(`${name}/read`, `var_read/${w.modelIndex}`),
  });
  session.import(g.bytes(), map);
  return { output, inputs };
}

/**
 * The gradient of squeeze-excite's gate in y = x · gate (x [B, H, W, C], gate [B, 1, 1, C]): the
 * sums of dy · x over H and W in one pass (CxrChannelDot, `x` recomputed), where TensorFlow's
 * gradient wrote dy · x out whole, then summed it. The input's gradient, dy · gate, is a
 * SqueezePart.
 */
function gateGradient(session: GraphSession, step: EmittedStep, dy: Output, x: string): Output {
  return importOp(
    session,
    `grad/${step.node}/gate`,
    "CxrChannelDot",
    [dy, session.output(x)],
    {},
  )[0];
}

/**
 * The gradient of a global average pooling ([B, H, W, C] → [B, C]): dy / (H · W) at every
 * position. TensorFlow's gradient of the Mean took the input's shape from a copy of the Mean,
 * which the backward pass computed again (from the recomputed input) for that alone; here H and W
 * are the plan's, so nothing reads the input.
 */
function spreadGradient(session: GraphSession, step: EmittedStep, dy: Output): Output {
  const [h, w] = (step.op as Extract<Step["op"], { kind: "globalMean" }>).size;
  const g = new GraphWriter();
  const name = `grad/${step.node}/input`;
  const fed = g.standIn(`${name}/dy`);
  const int32 = { Tdim: { type: DT_INT32 } };
  let t = g.op(`${name}/rows`, "ExpandDims", [fed, g.intConst(`${name}/axis1`, [], [1])], int32);
  t = g.op(`${name}/columns`, "ExpandDims", [t, g.intConst(`${name}/axis2`, [], [2])], int32);
  t = g.op(`${name}/scaled`, "Mul", [
    t,
    g.floatConst(`${name}/scale`, [], Float32Array.of(1 / (h * w))),
  ]);
  g.op(name, "Tile", [t, g.intConst(`${name}/multiples`, [4], [1, h, w, 1])], {
    Tmultiples: { type: DT_INT32 },
  });
  session.import(g.bytes(), [[fed, dy]]);
  return session.output(name);
}

/**
 * CxrBatchNormActGrad for a fused step, fed the gradient `dy`: [dx, dgamma, dbeta]. With
 * `squeeze`, the step's output fed squeeze-excite's scaling by `gate` (whose gradient `dy` is)
 * and its pooling (whose gradient `pooled` is): CxrBatchNormActGradScaled makes the output's
 * gradient from those as it reads them (SqueezePart).
 */
function fusedGradient(
  session: GraphSession,
  step: EmittedStep,
  dy: Output,
  squeeze?: { gate: Output; pooled: Output },
): Output[] {
  const op = step.op as Extract<Step["op"], { kind: "batchNormAct" }>;
  return importOp(
    session,
    `grad/${step.node}`,
    squeeze ? "CxrBatchNormActGradScaled" : "CxrBatchNormActGrad",
    [
      dy,
      session.output(step.inputs[0]),
      ...batchNormReads(session, step),
      ...(squeeze ? [squeeze.gate, squeeze.pooled] : []),
    ],
    fusedAttrs(op),
    { outputs: 3 },
  );
}

/**
 * A fused BatchNorm step's gamma, beta, batch mean and 1/std: what every op that works from its
 * input in place of its output reads besides (its gradients, a recomputation, a depthwise filter
 * gradient that makes the output row by row).
 */
function batchNormReads(session: GraphSession, step: EmittedStep): Output[] {
  const op = step.op as Extract<Step["op"], { kind: "batchNormAct" }>;
  return [
    `var_read/${op.gamma.modelIndex}`,
    `var_read/${op.beta.modelIndex}`,
    step.stats!.mean,
    step.stats!.invStd,
  ].map((t) => session.output(t));
}

/**
 * A part of a squeeze-excite input's gradient, not yet added to the graph: from its scaling by
 * `gate` (dy the scaling's output gradient: the part is dy · gate), or from its pooling
 * (`pooling`, dy the pooled gradient [B, C]: the part is dy / (H · W) at every position). Where
 * the input is a fused BatchNorm's output read by these two alone, CxrBatchNormActGradScaled
 * takes both as they are: the graph used to write dy · gate, the spread and their sum out (Mul,
 * Tile, AddN: three tensors as large as the input, on the backward pass's chain). Anywhere else,
 * squeezeGradient writes a part out.
 */
interface SqueezePart {
  step: EmittedStep;
  dy: Output;
  gate?: Output;
  pooling?: true;
}

/** A squeeze-excite part as a tensor: dy · gate (TensorFlow's Mul), or the pooling's spread. */
function squeezeGradient(session: GraphSession, part: SqueezePart): Output {
  return part.gate
    ? importOp(session, `grad/${part.step.node}/input`, "Mul", [part.dy, part.gate], {
      T: { type: DT_FLOAT },
    })[0]
    : spreadGradient(session, part.step, part.dy);
}

/**
 * A depthwise step's gradients, fed the gradient `dy` and its input `x` (a tensor, or the fused
 * BatchNorm step that made it), as two ops: the input's (when `withInput`) from `dy` and the
 * filter alone, so that it does not wait for `x`, and the filter's, which can run beside the chain
 * of input gradients (native/cxr_kernels.c). When `x` is a BatchNorm's output, the filter's
 * gradient reads that BatchNorm's input and statistics and makes `x` row by row
 * (CxrDepthwiseConvFilterGradOfBatchNorm): the backward pass no longer writes out a copy of the
 * expand layers' outputs, the step's largest tensors, for this gradient alone.
 */
function depthwiseGradients(
  session: GraphSession,
  step: EmittedStep,
  dy: Output,
  x: string | EmittedStep,
  withInput: boolean,
): { dx?: Output; dw: Output } {
  const op = step.op as Extract<Step["op"], { kind: "depthwise" }>;
  const filter = session.output(`var_read/${op.kernel.modelIndex}`);
  const [dx] = withInput
    ? importOp(session, `grad/${step.node}/input`, "CxrDepthwiseConvInputGrad", [dy, filter], {
      ...depthwiseAttrs(op),
      input_size: { ints: op.inputSize },
    })
    : [];
  const name = `grad/${step.node}/filter`;
  if (typeof x === "string") {
    const inputs = [dy, session.output(x), filter];
    return {
      dx,
      dw: importOp(session, name, "CxrDepthwiseConvFilterGrad", inputs, depthwiseAttrs(op))[0],
    };
  }
  const bn = x.op as Extract<Step["op"], { kind: "batchNormAct" }>;
  const [dw] = importOp(
    session,
    name,
    "CxrDepthwiseConvFilterGradOfBatchNorm",
    [
      dy,
      session.output(x.inputs[0]),
      filter,
      ...batchNormReads(session, x),
    ],
    { ...depthwiseAttrs(op), activation: { s: bn.activation } },
  );
  return { dx, dw };
}

/** A 1×1 convolution with stride 1 and nothing after it: a matrix product per position. */
function isPointwise(op: Step["op"]): op is Extract<Step["op"], { kind: "conv" }> {
  return op.kind === "conv" && !op.depthwise && !op.pooled && !op.bias && !op.relu &&
    op.kernel.shape[0] === 1 && op.kernel.shape[1] === 1 && op.strides.every((s) => s === 1);
}

/**
 * The kernel gradient of a pointwise convolution (isPointwise) as one matrix product, xᵀ·dy over
 * all positions ([B·H·W, Cin]ᵀ · [B·H·W, Cout]), where TensorFlow's gradient is a
 * Conv2DBackpropFilter. Same sums in another order. Measured on the eleven largest pointwise
 * convolutions of MobileNetV3-Large at 446 px, alone in a session: 17.8 → 11.8 ms at batch 1,
 * 49.0 → 40.3 ms at batch 4 (the input gradient as a product was no faster alone; in the step it
 * is, pointwiseInputGradient).
 * In the training step, alternating in one process: batch 4 104.7 → 100.3 ms per image; batch 1
 * 118.8 → 117.2, as these gradients are off its critical path (the input gradients' chain).
 * Added as `<prefix>/kernel`, the product itself as `<prefix>` + POINTWISE_KERNEL_PRODUCT (the
 * profile tells it from the classifier's MatMul by that name).
 */
function pointwiseKernelGradient(
  session: GraphSession,
  prefix: string,
  step: EmittedStep,
  dy: Output,
  input: string,
): Output {
  const [, , cin, cout] = (step.op as Extract<Step["op"], { kind: "conv" }>).kernel.shape;
  const g = new GraphWriter();
  const name = `${prefix}/kernel`;
  const fed = (n: string) => g.standIn(`${name}/${n}`);
  const rows = (t: string, columns: number) =>
    g.op(`${t}/rows`, "Reshape", [t, g.intConst(`${t}/shape`, [2], [-1, columns])]);
  const product = g.op(`${prefix}${POINTWISE_KERNEL_PRODUCT}`, "MatMul", [
    rows(fed("x"), cin),
    rows(fed("dy"), cout),
  ], {
    transpose_a: { b: true },
    transpose_b: { b: false },
  });
  g.op(name, "Reshape", [product, g.intConst(`${name}/shape`, [4], [1, 1, cin, cout])]);
  session.import(g.bytes(), [[`${name}/x`, session.output(input)], [`${name}/dy`, dy]]);
  return session.output(name);
}

/**
 * The input gradient of a pointwise convolution (isPointwise) as one matrix product, dy · Wᵀ over
 * all positions ([B·H·W, Cout] · [Cin, Cout]ᵀ), shaped as dy with Cin channels. It reads neither
 * the input nor its shape: TensorFlow's own gradient (Conv2DBackpropInput) takes the input's shape
 * from the input, which the backward pass recomputes, so the chain of input gradients waited for
 * each recomputation. The same sums, to rounding. As a convolution of dy with the transposed
 * kernel it needed a Transpose a step for each of the 30 kernels (oneDNN's took 5.7 ms of CPU time
 * a step at batch 1); the product transposes inside. Whole steps, alternating engines in one
 * process: batch 1 100.2 → 94.5 ms per image, batch 4 92.6 → 89.3. Added as `<prefix>/input`,
 * the product as `<prefix>` + POINTWISE_INPUT_PRODUCT.
 */
function pointwiseInputGradient(
  session: GraphSession,
  prefix: string,
  step: EmittedStep,
  dy: Output,
): Output {
  const { kernel } = step.op as Extract<Step["op"], { kind: "conv" }>;
  const [, , cin, cout] = kernel.shape;
  const g = new GraphWriter();
  const name = `${prefix}/input`;
  const fed = (n: string) => g.standIn(`${name}/${n}`);
  const reshape = (t: string, to: string) =>
    g.op(`${t}/reshaped`, "Reshape", [t, to], { Tshape: { type: DT_INT32 } });
  const int32 = { T: { type: DT_INT32 } };
  const dyIn = fed("dy");
  const product = g.op(`${prefix}${POINTWISE_INPUT_PRODUCT}`, "MatMul", [
    reshape(dyIn, g.intConst(`${name}/rows`, [2], [-1, cout])),
    reshape(fed("kernel/read"), g.intConst(`${name}/matrix`, [2], [cin, cout])),
  ], { transpose_a: { b: false }, transpose_b: { b: true } });
  // dy's shape with Cin for Cout: [B, H, W, Cout] · [1, 1, 1, 0] + [0, 0, 0, Cin].
  const dyShape = g.node(`${name}/dy_shape`, "Shape", [dyIn], {
    T: { type: DT_FLOAT },
    out_type: { type: DT_INT32 },
  });
  const kept = g.node(`${name}/positions`, "Mul", [
    dyShape,
    g.intConst(`${name}/positions/mask`, [4], [1, 1, 1, 0]),
  ], int32);
  const shape = g.node(`${name}/shape`, "AddV2", [
    kept,
    g.intConst(`${name}/channels`, [4], [0, 0, 0, cin]),
  ], int32);
  g.op(name, "Reshape", [product, shape], { Tshape: { type: DT_INT32 } });
  session.import(g.bytes(), [
    [`${name}/kernel/read`, session.output(`var_read/${kernel.modelIndex}`)],
    [`${name}/dy`, dy],
  ]);
  return session.output(name);
}

/** The sum of several gradients of one tensor (AddN), added to the graph as `name`. */
function sumOutputs(session: GraphSession, name: string, parts: Output[]): Output {
  return importOp(session, name, "AddN", parts, {
    N: { i: parts.length },
    T: { type: DT_FLOAT },
  })[0];
}

/**
 * One op added to the session's graph: `type`, named `name`, reading `inputs` (float tensors
 * already in the graph; placeholders mapped onto them at import) and, with `after`, not run before
 * that tensor exists. Returns its first `outputs` outputs (default 1).
 */
function importOp(
  session: GraphSession,
  name: string,
  type: string,
  inputs: Output[],
  attrs: Record<string, Attr>,
  { outputs = 1, after }: { outputs?: number; after?: Output } = {},
): Output[] {
  const g = new GraphWriter();
  const placeholders = inputs.map((_, i) => g.standIn(`${name}/in/${i}`));
  const wait = after ? [`^${g.node(`${name}/after`, "NoOp", [], {})}`] : [];
  g.node(name, type, [...placeholders, ...wait], attrs);
  session.import(g.bytes(), [
    ...wait.map((w): [string, Output] => [w, after!]),
    ...placeholders.map((p, i): [string, Output] => [p, inputs[i]]),
  ]);
  return Array.from({ length: outputs }, (_, i) => session.output(`${name}:${i}`));
}

/**
 * The session's variables from the model's weights, and its momentum buffers from a saved state
 * (else zeros). @returns the optimizer's iteration count so far.
 */
function loadSessionState(
  session: GraphSession,
  model: tf.LayersModel,
  built: TrainingGraph,
  optimizerWeights: NamedTensor[] = [],
): number {
  const weights = model.weights;
  const zeros = (shape: number[]): HostTensor => ({
    values: new Float32Array(shape.reduce((a, b) => a * b, 1)),
    shape,
  });
  const assign = (prefix: string, entries: [number, HostTensor][]) => {
    session.run(
      entries.map(([i, t]) => [session.output(`${prefix}_init/${i}`), t]),
      [],
      entries.map(([i]) => session.operation(`${prefix}_assign/${i}`)),
    );
  };
  assign("var", weights.map((w, i) => [i, hostTensor(w.read())]));
  const saved = optimizerWeights.filter((w) => w.name !== "iter");
  if (saved.length && saved.length !== built.trainable.length) {
    throw new Error(
      `graph training: ${saved.length} saved momentum buffers for ${built.trainable.length} weights`,
    );
  }
  assign(
    "accum",
    built.trainable.map((i, k) => [
      i,
      saved.length ? hostTensor(saved[k].tensor) : zeros(weights[i].shape as number[]),
    ]),
  );
  return optimizerWeights.find((w) => w.name === "iter")?.tensor.dataSync()[0] ?? 0;
}

/** The engine over a built session: steps, tracing, the optimizer's state, disposal. */
function startEngine(
  model: tf.LayersModel,
  opts: StepEngineOptions,
  built: TrainingGraph,
  session: GraphSession,
): GraphStepEngine {
  buildSession(session, built, opts.momentum);
  let iterations = loadSessionState(session, model, built, opts.optimizerWeights);
  const weights = model.weights;

  const guard = guardWeights(
    model,
    () => session.run([], weights.map((_, i) => session.output(`var_read/${i}`))),
  );
  const targets = [session.operation("opt/train"), session.operation("bn_update")];
  const fetches = [session.output("loss"), session.output(built.logits)];
  const feedX = session.output("x"), feedLabels = session.output("labels");
  const feedLr = session.output("lr");
  const masks = built.dropouts.map((d) => ({ ...d, output: session.output(d.placeholder) }));
  let learningRate = opts.learningRate;
  let closed = false;

  /** One step; with `runOptions` traced, returning TensorFlow's RunMetadata too. */
  const runStep = (
    x: tf.Tensor4D,
    labels: tf.Tensor1D,
    globalStep: number,
    runOptions?: Uint8Array,
  ): { result: StepResult; metadata?: Uint8Array } => {
    const batch = x.shape[0];
    const onehot = new Float32Array(batch * opts.numClasses);
    (labels.dataSync() as Int32Array).forEach((l, i) => onehot[i * opts.numClasses + l] = 1);
    const feeds: [Output, HostTensor][] = [
      [feedX, hostTensor(x)],
      [feedLabels, { values: onehot, shape: [batch, opts.numClasses] }],
      [feedLr, { values: Float32Array.of(learningRate), shape: [] }],
      ...masks.map((m): [Output, HostTensor] => {
        // The mask SeededDropout draws in the eager step, from the same seed.
        const mask = tf.tidy(() =>
          tf.dropout(tf.ones([batch, m.units]), m.rate, undefined, m.seed + globalStep)
        );
        const t = hostTensor(mask);
        mask.dispose();
        return [m.output, t];
      }),
    ];
    let outputs: HostTensor[], metadata: Uint8Array | undefined;
    if (runOptions) {
      ({ outputs, metadata } = session.runTraced(feeds, fetches, targets, runOptions));
    } else outputs = session.run(feeds, fetches, targets);
    const [lossValue, logits] = outputs;
    guard.stale();
    iterations++;
    return {
      result: { loss: lossValue.values[0], predicted: argmaxRows(logits.values, logits.shape[1]) },
      metadata,
    };
  };

  return {
    kind: "graph",
    kernels: built.kernels,
    setLearningRate: (lr) => {
      learningRate = lr;
    },
    step: (x, labels, globalStep) => Promise.resolve(runStep(x, labels, globalStep).result),
    graphDef: () => session.graphDef(),
    traceStep: (x, labels, globalStep) => {
      const { result, metadata } = runStep(x, labels, globalStep, tracingRunOptions());
      return Promise.resolve({ ...result, metadata: metadata! });
    },
    optimizerState: async () => {
      const values = session.run([], built.trainable.map((i) => session.output(`accum_read/${i}`)));
      const named = [
        { name: "iter", tensor: tf.scalar(iterations) },
        ...values.map((v, k) => ({
          name: `${(weights[built.trainable[k]].read() as tf.Variable).name}/momentum`,
          tensor: tf.tensor(v.values, v.shape),
        })),
      ];
      try {
        return await tf.io.encodeWeights(named);
      } finally {
        tf.dispose(named.map((w) => w.tensor));
      }
    },
    dispose: () => {
      if (closed) return;
      closed = true;
      try {
        guard.release();
      } finally {
        session.close();
      }
    },
  };
}

/**
 * Make the layers model's weights a view of the session's: reading any of them after a step copies
 * the current values out of the session first; writing them is refused. `release()` copies the
 * last values in and lifts the guard.
 */
function guardWeights(
  model: tf.LayersModel,
  fetch: () => HostTensor[],
): { stale(): void; release(): void } {
  const variables = model.weights;
  const own = variables.map((v) => ({ read: v.read.bind(v), write: v.write.bind(v) }));
  let stale = false;
  let syncing = false;
  const sync = () => {
    syncing = true;
    try {
      fetch().forEach((h, i) => {
        const t = tf.tensor(h.values, h.shape);
        own[i].write(t);
        t.dispose();
      });
      stale = false;
    } finally {
      syncing = false;
    }
  };
  variables.forEach((v, i) => {
    Object.assign(v, {
      read: () => {
        if (stale && !syncing) sync();
        return own[i].read();
      },
      write: (value: tf.Tensor) => {
        if (!syncing) {
          throw new Error(
            `Cannot write weight ${v.name}: the graph training engine holds the weights; ` +
              "dispose it first",
          );
        }
        return own[i].write(value);
      },
    });
  });
  return {
    stale: () => {
      stale = true;
    },
    release: () => {
      try {
        if (stale) sync();
      } finally {
        for (const v of variables) {
          delete (v as unknown as Record<string, unknown>).read;
          delete (v as unknown as Record<string, unknown>).write;
        }
      }
    },
  };
}
