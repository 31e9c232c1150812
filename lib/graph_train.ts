/**
 * The training step as one TensorFlow graph, run by a TensorFlow session through the C API
 * (lib/tf_c.ts): forward pass in training mode, cross-entropy, TensorFlow's own gradients
 * (TF_AddGradients), the SGD-with-momentum update and the BatchNorm moving averages — one call
 * per batch instead of ~2,400 kernels dispatched one by one from JavaScript.
 *
 * Same maths as the eager step in train.ts (a test compares one step of each): the same
 * FusedBatchNormV3 kernel with Keras's moving-average convention, the same dropout masks (drawn
 * with TF.js's seeded generator and fed in), TF's ApplyMomentum with TF.js's momentum rule
 * (accum = m·accum + g; w −= lr·accum), the mean cross-entropy over the batch.
 *
 * The weights live in the session while an epoch trains; `syncToModel()` copies them back into
 * the layers model (for validation, checkpoints and the training state).
 */
import { tf } from "./backend.ts";
import { BatchNorm, HardSigmoid, HardSwish, Normalize, SeededDropout } from "./layers.ts";
import {
  DT_FLOAT,
  DT_INT32,
  DT_RESOURCE,
  emitStep,
  GraphWriter,
  type WeightNode,
} from "./graph_def.ts";
import { concat } from "./protobuf.ts";
import { type AnyLayer, inboundNames } from "./inference.ts";
import { type HostTensor, openTensorFlow, type Output, type TensorFlowC } from "./tf_c.ts";
import type { StepEngine, StepEngineOptions } from "./train.ts";

interface TrainingGraph {
  bytes: Uint8Array;
  /** model.weights index of each variable "var/i". */
  trainable: number[];
  logits: string;
  dropouts: { layer: SeededDropout; placeholder: string; units: number }[];
}

/**
 * The forward graph in training mode, its loss and the ops that set and read the variables.
 * Node names: `x`, `labels`, `lr`, `var/i` for model.weights[i] (with `var_read/i`, `var_init/i`,
 * `var_assign/i`), `accum/i` for its momentum buffer (same family), `loss`, and `bn_update` (a
 * NoOp that runs the moving-average assignments).
 */
function trainingGraph(model: tf.LayersModel, numClasses: number, tag: string): TrainingGraph {
  const g = new GraphWriter();
  const weights = model.weights;
  // A layer weight's tensor → its variable's index (LayerVariable.read() is the same tensor each time).
  const indexOf = new Map<tf.Tensor, number>(weights.map((w, i) => [w.read(), i]));
  const trainable = weights.map((w, i) => (w.trainable ? i : -1)).filter((i) => i >= 0);
  const variable = (prefix: string, i: number, shape: number[]) => {
    const handle = g.node(`${prefix}/${i}`, "VarHandleOp", [], {
      dtype: { type: DT_FLOAT },
      shape: { shape },
      shared_name: { s: `${tag}/${prefix}/${i}` },
      container: { s: "" },
    });
    g.node(`${prefix}_read/${i}`, "ReadVariableOp", [handle], { dtype: { type: DT_FLOAT } });
    g.node(`${prefix}_init/${i}`, "Placeholder", [], {
      dtype: { type: DT_FLOAT },
      shape: { shape },
    });
    g.node(`${prefix}_assign/${i}`, "AssignVariableOp", [handle, `${prefix}_init/${i}`], {
      dtype: { type: DT_FLOAT },
    });
  };
  weights.forEach((w, i) => variable("var", i, w.shape as number[]));
  trainable.forEach((i) => variable("accum", i, weights[i].shape as number[]));
  const read = (weight: tf.Tensor) => {
    const i = indexOf.get(weight);
    if (i === undefined) throw new Error("graph training: a layer weight is not a model weight");
    return `var_read/${i}`;
  };
  // Steps read their weights from the variables, not from constants.
  const variableWeight: WeightNode = (_g, _name, weight) => read(weight);

  const [, height, width] = model.inputs[0].shape as number[];
  g.node("x", "Placeholder", [], {
    dtype: { type: DT_FLOAT },
    shape: { shape: [-1, height, width, 3] },
  });
  g.node("labels", "Placeholder", [], {
    dtype: { type: DT_FLOAT },
    shape: { shape: [-1, numClasses] },
  });
  g.node("lr", "Placeholder", [], { dtype: { type: DT_FLOAT }, shape: { shape: [] } });

  const nodeOf = new Map<string, string>();
  const bnAssigns: string[] = [];
  const dropouts: TrainingGraph["dropouts"] = [];
  for (const layer of model.layers as AnyLayer[]) {
    const cls = layer.getClassName();
    const name = `model/${layer.name}`;
    const inputs = inboundNames(layer);
    const x = inputs.map((n) => nodeOf.get(n)!);
    const emit = (op: Parameters<typeof emitStep>[2]) =>
      nodeOf.set(layer.name, emitStep(g, name, op, x, variableWeight));
    if (cls === "InputLayer") {
      nodeOf.set(layer.name, "x");
    } else if (layer instanceof Normalize) {
      emit({ kind: "normalize", spec: { mean: layer.mean, std: layer.std } });
    } else if (cls === "ZeroPadding2D") {
      emit({ kind: "pad", padding: layer.padding });
    } else if (cls === "Conv2D" || cls === "DepthwiseConv2D") {
      // As in inference, but unfolded: BatchNorm and ReLU stay separate layers in training.
      emit({
        kind: "conv",
        depthwise: cls === "DepthwiseConv2D",
        kernel: layer.weights[0].read(),
        bias: layer.useBias ? layer.weights[1].read() : undefined,
        strides: layer.strides,
        padding: layer.padding,
        relu: false,
      });
    } else if (layer instanceof BatchNorm) {
      const [gamma, beta, mean, variance] = layer.weights.map((w) => read(w.read()));
      g.node(name, "FusedBatchNormV3", [x[0], gamma, beta, mean, variance], {
        T: { type: DT_FLOAT },
        U: { type: DT_FLOAT },
        epsilon: { f: layer.epsilon },
        exponential_avg_factor: { f: 1 - layer.momentum },
        data_format: { s: "NHWC" },
        is_training: { b: true },
      });
      // Outputs 1 and 2 are the moving mean and variance, already blended with the old ones.
      [2, 3].forEach((w, k) => {
        const i = indexOf.get(layer.weights[w].read())!;
        bnAssigns.push(g.node(`${name}/update_${k}`, "AssignVariableOp", [
          `var/${i}`,
          `${name}:${k + 1}`,
        ], { dtype: { type: DT_FLOAT } }));
      });
      nodeOf.set(layer.name, `${name}:0`);
    } else if (layer instanceof HardSwish) {
      emit({ kind: "hardSwish" });
    } else if (layer instanceof HardSigmoid) {
      emit({ kind: "hardSigmoid" });
    } else if (cls === "ReLU") {
      emit({ kind: "relu", max: layer.maxValue ?? undefined });
    } else if (cls === "GlobalAveragePooling2D") {
      emit({ kind: "globalMean" });
    } else if (cls === "Reshape") {
      emit({ kind: "reshape", target: layer.targetShape });
    } else if (cls === "Add") {
      emit({ kind: "add" });
    } else if (cls === "Multiply") {
      emit({ kind: "mul" });
    } else if (cls === "Dense") {
      if (layer.getConfig().activation !== "linear") {
        throw new Error(`graph training: dense layer ${layer.name} has an activation`);
      }
      emit({ kind: "dense", kernel: layer.weights[0].read(), bias: layer.weights[1].read() });
    } else if (layer instanceof SeededDropout) {
      if (layer.rate === 0) {
        nodeOf.set(layer.name, x[0]);
      } else {
        const units = (layer.outputShape as number[]).at(-1)!;
        const placeholder = g.node(`${name}/mask`, "Placeholder", [], {
          dtype: { type: DT_FLOAT },
          shape: { shape: [-1, units] },
        });
        dropouts.push({ layer, placeholder, units });
        nodeOf.set(layer.name, g.op(name, "Mul", [x[0], placeholder]));
      }
    } else {
      throw new Error(`graph training: no rule for layer ${layer.name} (${cls})`);
    }
  }
  const logits = nodeOf.get((model.outputLayers[0] as AnyLayer).name)!;
  g.op("xent", "SoftmaxCrossEntropyWithLogits", [logits, "labels"]);
  const axes = g.intConst("loss/axes", [1], [0]);
  g.op("loss", "Mean", ["xent:0", axes], {
    Tidx: { type: DT_INT32 },
    keep_dims: { b: false },
  });
  g.node("bn_update", "NoOp", bnAssigns.map((a) => `^${a}`), {});
  return { bytes: concat(g.graphDef()), trainable, logits, dropouts };
}

/** The optimizer's nodes, imported after the gradients exist (they read them via input maps). */
function optimizerGraph(trainable: number[], momentum: number): Uint8Array {
  const g = new GraphWriter();
  // Stand-ins that the import maps onto the gradients, variables and learning rate.
  const placeholder = (name: string, dtype: number) =>
    g.node(name, "Placeholder", [], { dtype: { type: dtype } });
  const lr = placeholder("opt/lr", DT_FLOAT);
  const m = g.floatConst("opt/momentum", [], Float32Array.of(momentum));
  const applies = trainable.map((i) =>
    g.node(`opt/apply/${i}`, "ResourceApplyMomentum", [
      placeholder(`opt/var/${i}`, DT_RESOURCE),
      placeholder(`opt/accum/${i}`, DT_RESOURCE),
      lr,
      placeholder(`opt/grad/${i}`, DT_FLOAT),
      m,
    ], {
      T: { type: DT_FLOAT },
      use_locking: { b: false },
      use_nesterov: { b: false },
    })
  );
  g.node("opt/train", "NoOp", applies.map((a) => `^${a}`), {});
  return concat(g.graphDef());
}

let sessions = 0;

/**
 * A graph-mode step engine for `model` (weights copied in now). Throws when the native backend,
 * the C API or a layer rule is missing; callers then use the eager engine.
 */
export function graphStepEngine(
  model: tf.LayersModel,
  opts: StepEngineOptions,
): StepEngine {
  const c: TensorFlowC = openTensorFlow();
  const tag = `s${Deno.pid}_${++sessions}`;
  const built = trainingGraph(model, opts.numClasses, tag);
  const graph = c.newGraph();
  let session: Deno.PointerValue = null;
  try {
    c.importGraphDef(graph, built.bytes);
    const loss = c.output(graph, "loss");
    const grads = c.addGradients(
      graph,
      "grad",
      [loss],
      built.trainable.map((i) => c.output(graph, `var_read/${i}`)),
    );
    grads.forEach((g, k) => {
      if (!g.op) throw new Error(`graph training: no gradient for weight ${built.trainable[k]}`);
    });
    const opt = optimizerGraph(built.trainable, opts.momentum);
    const map: [string, Output][] = [["opt/lr", c.output(graph, "lr")]];
    built.trainable.forEach((i, k) => {
      map.push([`opt/var/${i}`, c.output(graph, `var/${i}`)]);
      map.push([`opt/accum/${i}`, c.output(graph, `accum/${i}`)]);
      map.push([`opt/grad/${i}`, grads[k]]);
    });
    c.importGraphDef(graph, opt, map);
    session = c.newSession(graph);
  } catch (error) {
    if (session) c.deleteSession(session);
    c.deleteGraph(graph);
    throw error;
  }
  const out = (name: string) => c.output(graph, name);
  const targets = [c.operation(graph, "opt/train"), c.operation(graph, "bn_update")];
  const fetchLoss = out("loss");
  const fetchLogits = out(built.logits);
  const feedX = out("x");
  const feedLabels = out("labels");
  const feedLr = out("lr");
  const masks = built.dropouts.map((d) => ({ ...d, output: out(d.placeholder) }));
  const weights = model.weights;

  const host = (t: tf.Tensor): HostTensor => ({
    values: t.dataSync() as Float32Array,
    shape: t.shape,
  });
  // Copy the model's weights in; momentum buffers from a saved state, else zeros.
  const assign = (prefix: string, entries: [number, HostTensor][]) => {
    c.run(
      session,
      entries.map(([i, t]) => [out(`${prefix}_init/${i}`), t]),
      [],
      entries.map(([i]) => c.operation(graph, `${prefix}_assign/${i}`)),
    );
  };
  assign("var", weights.map((w, i) => [i, host(w.read())]));
  const saved = (opts.optimizerWeights ?? []).filter((w) => w.name !== "iter");
  if (saved.length && saved.length !== built.trainable.length) {
    throw new Error(
      `graph training: ${saved.length} saved momentum buffers for ${built.trainable.length} weights`,
    );
  }
  assign(
    "accum",
    built.trainable.map((i, k) => [
      i,
      saved.length ? host(saved[k].tensor) : {
        values: new Float32Array(weights[i].shape.reduce((a: number, b) => a * (b ?? 1), 1)),
        shape: weights[i].shape as number[],
      },
    ]),
  );
  let iterations = (opts.optimizerWeights ?? []).find((w) => w.name === "iter")?.tensor
    .dataSync()[0] ?? 0;
  let learningRate = opts.learningRate;
  let closed = false;

  return {
    kind: "graph",
    setLearningRate: (lr) => {
      learningRate = lr;
    },
    step: (x, labels, globalStep) => {
      const batch = x.shape[0];
      const onehot = new Float32Array(batch * opts.numClasses);
      (labels.dataSync() as Int32Array).forEach((l, i) => onehot[i * opts.numClasses + l] = 1);
      const feeds: [Output, HostTensor][] = [
        [feedX, host(x)],
        [feedLabels, { values: onehot, shape: [batch, opts.numClasses] }],
        [feedLr, { values: Float32Array.of(learningRate), shape: [] }],
        ...masks.map((m): [Output, HostTensor] => {
          // The mask tf.dropout would apply in the eager step, from the same seed.
          const mask = tf.tidy(() =>
            tf.dropout(
              tf.ones([batch, m.units]),
              m.layer.rate,
              undefined,
              m.layer.seed + globalStep,
            )
          );
          const t = host(mask);
          mask.dispose();
          return [m.output, t];
        }),
      ];
      const [lossValue, logits] = c.run(session, feeds, [fetchLoss, fetchLogits], targets);
      iterations++;
      const k = logits.shape[1];
      const predicted = Array.from({ length: batch }, (_, b) => {
        let best = 0;
        for (let j = 1; j < k; j++) {
          if (logits.values[b * k + j] > logits.values[b * k + best]) best = j;
        }
        return best;
      });
      return Promise.resolve({ loss: lossValue.values[0], predicted });
    },
    syncToModel: () => {
      const values = c.run(session, [], weights.map((_, i) => out(`var_read/${i}`)));
      const tensors = values.map((v) => tf.tensor(v.values, v.shape));
      model.setWeights(tensors);
      tf.dispose(tensors);
    },
    optimizerState: async () => {
      const values = c.run(session, [], built.trainable.map((i) => out(`accum_read/${i}`)));
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
      c.deleteSession(session);
      c.deleteGraph(graph);
    },
  };
}
