/**
 * Where a training step's time goes: TensorFlow's own per-op step stats for a traced graph step
 * (RunMetadata.step_stats, read with the wire-format reader), grouped by kind of work; and the
 * step's arithmetic (multiply-adds per layer) and memory traffic, for a roofline estimate of what
 * this CPU could do at best.
 */
import { tf } from "../backend.ts";
import { readFields } from "./protobuf.ts";

/** One op's execution in a traced step. */
export interface OpTiming {
  node: string;
  op: string;
  /** Time inside the op's kernel. */
  micros: number;
  /** When it started, relative to the step's first op. */
  startMicros: number;
  thread: number;
}

// RunMetadata.step_stats = 1; StepStats.dev_stats = 1; DeviceStepStats.node_stats = 2;
// NodeExecStats: node_name 1, all_start_micros 2, op_start_rel_micros 3, op_end_rel_micros 4,
// timeline_label 8, thread_id 10, all_start_nanos 13, op_start_rel_nanos 14, op_end_rel_nanos 15.
const decoder = new TextDecoder();
const asBytes = (v: bigint | Uint8Array) => v as Uint8Array;
const asNumber = (v: bigint | Uint8Array) => Number(v as bigint);

/** The ops of a serialised RunMetadata, with their kernel times. */
export function readStepStats(metadata: Uint8Array): OpTiming[] {
  const ops: OpTiming[] = [];
  for (const s of readFields(metadata).filter((f) => f.field === 1)) {
    for (const dev of readFields(asBytes(s.value)).filter((f) => f.field === 1)) {
      for (const n of readFields(asBytes(dev.value)).filter((f) => f.field === 2)) {
        const f = new Map(readFields(asBytes(n.value)).map((x) => [x.field, x.value]));
        const node = decoder.decode(asBytes(f.get(1) ?? new Uint8Array()));
        const label = decoder.decode(asBytes(f.get(8) ?? new Uint8Array()));
        const start = f.has(13) ? asNumber(f.get(13)!) / 1000 : asNumber(f.get(2) ?? 0n);
        const micros = f.has(15)
          ? (asNumber(f.get(15)!) - asNumber(f.get(14) ?? 0n)) / 1000
          : asNumber(f.get(4) ?? 0n) - asNumber(f.get(3) ?? 0n);
        // "name = OpType(input, …)"; bookkeeping records (_SOURCE) have no label.
        const op = /= ([\w]+)\(/.exec(label)?.[1] ?? (label || node);
        ops.push({ node, op, micros, startMicros: start, thread: asNumber(f.get(10) ?? 0n) });
      }
    }
  }
  const first = Math.min(...ops.map((o) => o.startMicros));
  return ops.map((o) => ({ ...o, startMicros: o.startMicros - first }));
}

/**
 * How the graph training step names a pointwise convolution's kernel gradient, a MatMul
 * (graph_train.ts, pointwiseKernelGradient): `grad/<step>/kernel` + this.
 */
export const POINTWISE_KERNEL_PRODUCT = "/kernel/product";
/** …and its input gradient, another MatMul (graph_train.ts, pointwiseInputGradient). */
export const POINTWISE_INPUT_PRODUCT = "/input/product";

/**
 * The kind of work an op does, by its type (oneDNN's rewritten names included) and, for a matrix
 * product, its node's name (a pointwise convolution's kernel and input gradients are ones).
 */
export function opKind(op: string, node = ""): string {
  const o = op.replace(/^_Mkl(Native)?/, "").replace(/^_/, "");
  if (/Depthwise/.test(o)) return "depthwise convolution";
  if (/Conv2D/.test(o)) return "pointwise / full convolution";
  if (/MatMul/.test(o)) {
    return node.endsWith(POINTWISE_KERNEL_PRODUCT) || node.endsWith(POINTWISE_INPUT_PRODUCT)
      ? "pointwise / full convolution"
      : "dense (classifier, squeeze-excite)";
  }
  if (/BatchNorm/.test(o)) return "batch norm";
  if (/ApplyMomentum|Assign|ReadVariable|VarHandle|VariableV2/.test(o)) {
    return "optimizer and variables";
  }
  if (/^(Mean|Sum|Tile|BroadcastTo|BroadcastGradientArgs|CxrChannelDot)/.test(o)) {
    return "reductions and broadcasts (SE pooling and gates, bias gradients)";
  }
  if (
    /^(Transpose|Reshape|Pad|Identity|Cast|Slice|StridedSlice|Concat|Shape|Pack|ToTf|Const|ZerosLike|OnesLike|Fill|Squeeze|ExpandDims)/
      .test(o)
  ) {
    return "layout, copies and padding";
  }
  if (
    /Relu|Sigmoid|Mul|Add|Sub|Div|Maximum|Minimum|Select|Neg|Square|Softmax|Log|Exp|Greater|Less|Equal|Floor|Grad/
      .test(o)
  ) return "element-wise (activations, hard-swish, SE gates, loss)";
  return "other";
}

/** Forward, backward (TF_AddGradients' nodes are under "grad/") or the update ("opt/"). */
export function opPhase(node: string): "forward" | "backward" | "update" {
  return node.startsWith("grad/") ? "backward" : node.startsWith("opt/") ? "update" : "forward";
}

/** Time per kind of work, averaged over traced steps. */
export interface ProfileRow {
  kind: string;
  /** Kernel milliseconds per step (summed over ops; ops on two threads can overlap). */
  ms: number;
  share: number;
  /** Ops per step. */
  ops: number;
  forwardMs: number;
  backwardMs: number;
}

/** Rows by kind of work, largest first, from the ops of one or more traced steps. */
export function profileByKind(steps: readonly OpTiming[][]): ProfileRow[] {
  const rows = new Map<string, ProfileRow>();
  for (const ops of steps) {
    for (const o of ops) {
      if (o.op === "_SOURCE" || o.node === "_SOURCE") continue;
      const kind = opKind(o.op, o.node);
      const r = rows.get(kind) ??
        { kind, ms: 0, share: 0, ops: 0, forwardMs: 0, backwardMs: 0 };
      const ms = o.micros / 1000 / steps.length;
      r.ms += ms;
      r.ops += 1 / steps.length;
      if (opPhase(o.node) === "forward") r.forwardMs += ms;
      if (opPhase(o.node) === "backward") r.backwardMs += ms;
      rows.set(kind, r);
    }
  }
  const total = [...rows.values()].reduce((s, r) => s + r.ms, 0);
  return [...rows.values()]
    .map((r) => ({ ...r, share: r.ms / total, ops: Math.round(r.ops) }))
    .sort((a, b) => b.ms - a.ms);
}

/** The op types that take the most time, averaged over traced steps. */
export function topOps(
  steps: readonly OpTiming[][],
  n = 15,
): { op: string; ms: number; calls: number }[] {
  const byOp = new Map<string, { op: string; ms: number; calls: number }>();
  for (const ops of steps) {
    for (const o of ops) {
      const r = byOp.get(o.op) ?? { op: o.op, ms: 0, calls: 0 };
      r.ms += o.micros / 1000 / steps.length;
      r.calls += 1 / steps.length;
      byOp.set(o.op, r);
    }
  }
  return [...byOp.values()].map((r) => ({ ...r, calls: Math.round(r.calls) }))
    .sort((a, b) => b.ms - a.ms).slice(0, n);
}

/** A model's arithmetic and activation size for one image (forward pass). */
export interface ModelCost {
  /** Multiply-adds of convolutions and dense layers, by kind. */
  macs: { pointwise: number; depthwise: number; dense: number };
  /** Elements of every layer's output (what a training step writes and reads back). */
  activations: number;
  parameters: number;
}

/**
 * Count multiply-adds and activations from the layers' kernels and output shapes (by the kernels'
 * shapes, not the layer classes: plan.ts alone translates layer kinds). A depthwise kernel
 * [kh, kw, c, m] costs kh·kw per output value; a convolution kernel [kh, kw, in, out] kh·kw·in; a
 * dense kernel [in, out] in.
 */
export function modelCost(model: tf.LayersModel): ModelCost {
  const macs = { pointwise: 0, depthwise: 0, dense: 0 };
  let activations = 0;
  for (const layer of model.layers) {
    const shape = layer.outputShape as (number | null)[];
    if (!Array.isArray(shape) || Array.isArray(shape[0])) continue;
    const size = shape.slice(1).reduce((a: number, b) => a * (b ?? 1), 1);
    activations += size;
    for (const w of layer.weights) {
      const k = w.shape as number[];
      if (w.originalName.endsWith("depthwise_kernel")) macs.depthwise += size * k[0] * k[1];
      else if (w.originalName.endsWith("kernel") && k.length === 4) {
        macs.pointwise += size * k[0] * k[1] * k[2];
      } else if (w.originalName.endsWith("kernel") && k.length === 2) macs.dense += size * k[0];
    }
  }
  return { macs, activations, parameters: model.countParams() };
}
