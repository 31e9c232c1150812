/**
 * The graph interpreter: a plan's steps (plan.ts) written as TensorFlow GraphDef nodes
 * (tensorflow/core/framework/graph.proto), for the graph predictor (graph_predictor.ts) and the
 * graph training step (graph_train.ts). Each op kind of the plan has exactly one case here.
 */
import { normalizationAffine } from "../model/mod.ts";
import { DT_FLOAT, DT_INT32 } from "./tf_c.ts";
import type { Op, WeightRef } from "./plan.ts";
import {
  type Bytes,
  bytesField,
  concat,
  floatField,
  intField,
  mapEntry,
  packedIntsField,
  stringField,
} from "./protobuf.ts";

// Field numbers of the messages written here (tensorflow/core/framework/*.proto).
const GRAPH_DEF = { node: 1, versions: 4 } as const;
const VERSION_DEF = { producer: 1 } as const;
const NODE_DEF = { name: 1, op: 2, input: 3, attr: 5 } as const;
const ATTR_VALUE = { list: 1, s: 2, i: 3, f: 4, b: 5, type: 6, shape: 7, tensor: 8 } as const;
const LIST_VALUE = { s: 2, i: 3, type: 6 } as const;
const TENSOR_SHAPE = { dim: 2 } as const;
const DIM = { size: 1 } as const;
const TENSOR = { dtype: 1, tensor_shape: 2, tensor_content: 4 } as const;

// GraphDef producer version: any version after the ops used here were defined.
const GRAPH_PRODUCER = 1000;

/** An attribute value (tensorflow/core/framework/attr_value.proto). */
export type Attr =
  | { type: number }
  | { s: string }
  | { i: number }
  | { f: number }
  | { b: boolean }
  | { ints: number[] }
  | { strings: string[] }
  | { types: number[] }
  | { shape: number[] }
  | { tensor: Bytes };

function attrValue(a: Attr): Bytes[] {
  if ("type" in a) return [intField(ATTR_VALUE.type, a.type)];
  if ("s" in a) return [stringField(ATTR_VALUE.s, a.s)];
  if ("i" in a) return [intField(ATTR_VALUE.i, a.i)];
  if ("f" in a) return [floatField(ATTR_VALUE.f, a.f)];
  if ("b" in a) return [intField(ATTR_VALUE.b, a.b)];
  if ("ints" in a) {
    return [
      bytesField(ATTR_VALUE.list, a.ints.length ? [packedIntsField(LIST_VALUE.i, a.ints)] : []),
    ];
  }
  if ("types" in a) {
    return [bytesField(ATTR_VALUE.list, [packedIntsField(LIST_VALUE.type, a.types)])];
  }
  if ("strings" in a) {
    return [bytesField(ATTR_VALUE.list, a.strings.map((v) => stringField(LIST_VALUE.s, v)))];
  }
  if ("shape" in a) return [bytesField(ATTR_VALUE.shape, shapeProto(a.shape))];
  return [bytesField(ATTR_VALUE.tensor, a.tensor)];
}

/** TensorShapeProto; -1 is an unknown dimension. */
export function shapeProto(dims: number[]): Bytes[] {
  return dims.map((d) => bytesField(TENSOR_SHAPE.dim, [intField(DIM.size, d)]));
}

/** TensorProto with the values as raw little-endian bytes. */
function tensorProto(dtype: number, shape: number[], values: Float32Array | Int32Array): Bytes {
  return [
    intField(TENSOR.dtype, dtype),
    bytesField(TENSOR.tensor_shape, shapeProto(shape)),
    bytesField(
      TENSOR.tensor_content,
      new Uint8Array(values.buffer, values.byteOffset, values.byteLength),
    ),
  ];
}

/** Builds a GraphDef node by node; node names are unique and say which step they belong to. */
export class GraphWriter {
  private nodes: Bytes[] = [];
  private names = new Set<string>();

  node(name: string, op: string, inputs: string[], attrs: Record<string, Attr>): string {
    if (this.names.has(name)) throw new Error(`GraphWriter: duplicate node name ${name}`);
    this.names.add(name);
    this.nodes.push(bytesField(GRAPH_DEF.node, [
      stringField(NODE_DEF.name, name),
      stringField(NODE_DEF.op, op),
      ...inputs.map((i) => stringField(NODE_DEF.input, i)),
      ...Object.entries(attrs).map(([k, v]) => mapEntry(NODE_DEF.attr, k, attrValue(v))),
    ]));
    return name;
  }

  floatConst(name: string, shape: number[], values: Float32Array): string {
    return this.node(name, "Const", [], {
      dtype: { type: DT_FLOAT },
      value: { tensor: tensorProto(DT_FLOAT, shape, values) },
    });
  }

  intConst(name: string, shape: number[], values: number[]): string {
    return this.node(name, "Const", [], {
      dtype: { type: DT_INT32 },
      value: { tensor: tensorProto(DT_INT32, shape, Int32Array.from(values)) },
    });
  }

  /** A float placeholder of `shape` (-1: any size). */
  placeholder(name: string, shape: number[]): string {
    return this.node(name, "Placeholder", [], { dtype: { type: DT_FLOAT }, shape: { shape } });
  }

  /**
   * A placeholder of no fixed shape that an import maps onto a tensor already in the session (a
   * graph added piece by piece: gradients, recomputations, the optimizer).
   */
  standIn(name: string, dtype = DT_FLOAT): string {
    return this.node(name, "Placeholder", [], { dtype: { type: dtype } });
  }

  /** A float op: every op used here takes its element type as attribute T. */
  op(name: string, op: string, inputs: string[], attrs: Record<string, Attr> = {}): string {
    return this.node(name, op, inputs, { T: { type: DT_FLOAT }, ...attrs });
  }

  /** The serialised GraphDef. */
  bytes(): Uint8Array {
    return concat([
      ...this.nodes,
      bytesField(GRAPH_DEF.versions, [intField(VERSION_DEF.producer, GRAPH_PRODUCER)]),
    ]);
  }
}

/** How the program around the steps provides weights, BatchNorm updates and dropout masks. */
export interface EmitContext {
  /** A node holding the weight: a constant (inference) or a variable read (training). */
  weight(g: GraphWriter, name: string, w: WeightRef): string;
  /** Training: record that `value` (a node output) is the new value of weight `w`. */
  assign?(g: GraphWriter, name: string, w: WeightRef, value: string): void;
  /** Inference: hard-swish as the fused kernels' one-pass CxrHardSwish (kernels.ts loaded them). */
  fusedHardSwish?: boolean;
  /**
   * A per-channel scale and shift (the input's normalisation) as the fused kernels' one-pass
   * CxrScaleShift, which has no gradient op: only for steps whose input needs no gradient.
   */
  fusedScaleShift?: boolean;
  /**
   * Inference: a convolution with bias and ReLU as TensorFlow's _FusedConv2D (emitFusedConv), one
   * op where three were: oneDNN applies the bias and activation as the output is written.
   */
  fusedConvolutions?: boolean;
  /** Training: a placeholder for a dropout mask of [B, units]. */
  mask?(g: GraphWriter, name: string, units: number, op: Extract<Op, { kind: "dropout" }>): string;
}

/** Weights as constants holding their current values. */
export const constantWeights: EmitContext = {
  weight: (g, name, w) => g.floatConst(name, w.shape, w.values()),
};

/** The attributes CxrBatchNormAct and CxrBatchNormActGrad share (native/cxr_kernels.c). */
export function fusedAttrs(op: Extract<Op, { kind: "batchNormAct" }>): Record<string, Attr> {
  return {
    epsilon: { f: op.epsilon },
    exponential_avg_factor: { f: 1 - op.momentum },
    activation: { s: op.activation },
  };
}

/**
 * The attributes CxrDepthwiseConv and its gradient ops share (native/cxr_kernels.c); the input
 * gradient's adds `input_size`.
 */
export function depthwiseAttrs(op: Extract<Op, { kind: "depthwise" }>): Record<string, Attr> {
  const [[top, bottom], [left, right]] = op.padding;
  return { stride: { i: op.stride }, paddings: { ints: [top, bottom, left, right] } };
}

/**
 * Training, fused kernels: a BatchNorm whose output only a depthwise convolution reads, as its
 * statistics alone (CxrBatchNormMoments: the moving averages updated, the batch's mean and 1/std
 * as outputs 2 and 3); the convolution makes the output row by row from them and from gamma and
 * beta (emitDepthwiseOfBatchNorm), so it is never written out. Returns those four tensors.
 */
export function emitBatchNormMoments(
  g: GraphWriter,
  name: string,
  op: Extract<Op, { kind: "batchNormAct" }>,
  x: string,
  ctx: EmitContext,
): { gamma: string; beta: string; mean: string; invStd: string } {
  if (!ctx.assign) throw new Error(`emitBatchNormMoments: ${name} is a training step`);
  const [gamma, beta, ...moving] = [op.gamma, op.beta, op.movingMean, op.movingVariance].map((
    w,
    k,
  ) => ctx.weight(g, `${name}/w${k}`, w));
  g.node(name, "CxrBatchNormMoments", [x, ...moving], fusedAttrs(op));
  ctx.assign(g, `${name}/update_mean`, op.movingMean, `${name}:0`);
  ctx.assign(g, `${name}/update_variance`, op.movingVariance, `${name}:1`);
  return { gamma, beta, mean: `${name}:2`, invStd: `${name}:3` };
}

/**
 * A depthwise convolution of a BatchNorm's output that emitBatchNormMoments left unwritten
 * (CxrDepthwiseConvOfBatchNorm): `x` is the BatchNorm's input, `batchNorm` its settings, and its
 * gamma, beta and statistics the tensors named.
 */
export function emitDepthwiseOfBatchNorm(
  g: GraphWriter,
  name: string,
  op: Extract<Op, { kind: "depthwise" }>,
  batchNorm: Extract<Op, { kind: "batchNormAct" }>,
  [x, gamma, beta, mean, invStd]: string[],
  ctx: EmitContext,
): string {
  if (op.bias || op.activation !== "identity") {
    throw new Error(`emitDepthwiseOfBatchNorm: ${name} has a bias or activation of its own`);
  }
  const kernel = ctx.weight(g, `${name}/kernel`, op.kernel);
  return g.node(name, "CxrDepthwiseConvOfBatchNorm", [x, kernel, gamma, beta, mean, invStd], {
    ...depthwiseAttrs(op),
    activation: { s: batchNorm.activation },
  });
}

/** The attributes of TensorFlow's Conv2D (or DepthwiseConv2dNative) on NHWC tensors. */
export function convAttrs(
  [sh, sw]: [number, number],
  padding: string,
  depthwise = false,
): Record<string, Attr> {
  return {
    strides: { ints: [1, sh, sw, 1] },
    padding: { s: padding.toUpperCase() },
    data_format: { s: "NHWC" },
    dilations: { ints: [1, 1, 1, 1] },
    explicit_paddings: { ints: [] },
    ...(depthwise ? {} : { use_cudnn_on_gpu: { b: true } }),
  };
}

/** x · scale + shift per channel: two of TensorFlow's ops, or CxrScaleShift (the same bits). */
function scaleShift(
  g: GraphWriter,
  name: string,
  x: string,
  scale: string,
  shift: string,
  ctx: EmitContext,
): string {
  if (ctx.fusedScaleShift) return g.node(name, "CxrScaleShift", [x, scale, shift], {});
  return g.op(name, "AddV2", [g.op(`${name}/scale`, "Mul", [x, scale]), shift]);
}

/**
 * A 1×1 convolution of [B, 1, 1, Cin] (Op's `pooled`) as [B, Cin] · [Cin, Cout], then its bias
 * and ReLU, reshaped back to [B, 1, 1, Cout]: the same sums; TensorFlow's gradients of these ops
 * are matrix products too.
 */
function emitPooledConv(
  g: GraphWriter,
  name: string,
  op: Extract<Op, { kind: "conv" }>,
  x: string,
  kernel: string,
  ctx: EmitContext,
): string {
  const [, , cin, cout] = op.kernel.shape;
  const reshape = (suffix: string, t: string, shape: number[]) =>
    g.op(`${name}/${suffix}`, "Reshape", [
      t,
      g.intConst(`${name}/${suffix}/shape`, [shape.length], shape),
    ], {
      Tshape: { type: DT_INT32 },
    });
  let out = g.op(`${name}/matmul`, "MatMul", [
    reshape("rows", x, [-1, cin]),
    reshape("matrix", kernel, [cin, cout]),
  ], { transpose_a: { b: false }, transpose_b: { b: false } });
  if (op.bias) {
    const bias = ctx.weight(g, `${name}/bias`, op.bias);
    out = g.op(`${name}/biased`, "BiasAdd", [out, bias], { data_format: { s: "NHWC" } });
  }
  if (op.relu) out = g.op(`${name}/relu`, "Relu", [out]);
  return g.op(name, "Reshape", [out, g.intConst(`${name}/shape`, [4], [-1, 1, 1, cout])], {
    Tshape: { type: DT_INT32 },
  });
}

/**
 * A (non-depthwise) convolution with its bias and activation as one node, TensorFlow's
 * _FusedConv2D, which oneDNN runs as one primitive (_MklNativeFusedConv2D): the bias and the
 * activation applied as each output value is written, not as two more passes over the output.
 * TensorFlow's graph optimiser (grappler's remapper) makes this fusion in Python's graphs, but in
 * these the profile showed Conv2D (its bias merged by oneDNN's rewrite) then a Relu op of its own,
 * a device named on every node or not. "_FusedHardSwish" is oneDNN's (only where oneDNN runs:
 * onednnEnabled()); "Relu" TensorFlow's kernels all have. Inference only: _FusedConv2D has no
 * gradient.
 */
export function emitFusedConv(
  g: GraphWriter,
  name: string,
  op: Extract<Op, { kind: "conv" }>,
  x: string,
  kernel: string,
  ctx: EmitContext,
  activation: "Relu" | "_FusedHardSwish",
): string {
  const bias = ctx.weight(g, `${name}/bias`, op.bias!);
  return g.op(name, "_FusedConv2D", [x, kernel, bias], {
    ...convAttrs(op.strides, op.padding),
    num_args: { i: 1 },
    TArgs: { types: [DT_FLOAT] },
    fused_ops: { strings: ["BiasAdd", activation] },
  });
}

/** Emit the nodes of one step; returns the name of its output (node or node:index). */
export function emitStep(
  g: GraphWriter,
  name: string,
  op: Op,
  [x, y]: string[],
  ctx: EmitContext,
): string {
  const scalar = (suffix: string, v: number) =>
    g.floatConst(`${name}/${suffix}`, [], Float32Array.of(v));
  const channelwise = (suffix: string, v: ArrayLike<number>) =>
    g.floatConst(`${name}/${suffix}`, [v.length], Float32Array.from(v));
  switch (op.kind) {
    case "normalize": {
      const { scale, shift } = normalizationAffine(op.spec);
      return scaleShift(g, name, x, channelwise("a", scale), channelwise("b", shift), ctx);
    }
    case "conv": {
      const kernel = ctx.weight(g, `${name}/kernel`, op.kernel);
      if (op.pooled) return emitPooledConv(g, name, op, x, kernel, ctx);
      const [sh, sw] = op.strides;
      if (ctx.fusedConvolutions && !op.depthwise && op.bias && op.relu) {
        return emitFusedConv(g, name, op, x, kernel, ctx, "Relu");
      }
      let out = g.op(
        op.bias || op.relu ? `${name}/conv` : name,
        op.depthwise ? "DepthwiseConv2dNative" : "Conv2D",
        [x, kernel],
        convAttrs([sh, sw], op.padding, op.depthwise),
      );
      if (op.bias) {
        const bias = ctx.weight(g, `${name}/bias`, op.bias);
        out = g.op(op.relu ? `${name}/biased` : name, "BiasAdd", [out, bias], {
          data_format: { s: "NHWC" },
        });
      }
      return op.relu ? g.op(name, "Relu", [out]) : out;
    }
    case "depthwise": {
      const kernel = ctx.weight(g, `${name}/kernel`, op.kernel);
      if (!op.bias && op.activation === "identity") {
        return g.node(name, "CxrDepthwiseConv", [x, kernel], depthwiseAttrs(op));
      }
      const bias = op.bias
        ? ctx.weight(g, `${name}/bias`, op.bias)
        : channelwise("bias", new Float32Array(op.kernel.shape[2]));
      return g.node(name, "CxrDepthwiseConvBiasAct", [x, kernel, bias], {
        ...depthwiseAttrs(op),
        activation: { s: op.activation },
      });
    }
    case "batchNorm": {
      if (!ctx.assign) throw new Error(`emitStep: ${name} is a training step`);
      const inputs = [op.gamma, op.beta, op.movingMean, op.movingVariance].map((w, k) =>
        ctx.weight(g, `${name}/w${k}`, w)
      );
      g.node(name, "FusedBatchNormV3", [x, ...inputs], {
        T: { type: DT_FLOAT },
        U: { type: DT_FLOAT },
        epsilon: { f: op.epsilon },
        exponential_avg_factor: { f: 1 - op.momentum },
        data_format: { s: "NHWC" },
        is_training: { b: true },
      });
      // Outputs 1 and 2: the moving mean and variance, already blended with the old ones.
      ctx.assign(g, `${name}/update_mean`, op.movingMean, `${name}:1`);
      ctx.assign(g, `${name}/update_variance`, op.movingVariance, `${name}:2`);
      return `${name}:0`;
    }
    case "batchNormAct": {
      // Outputs: y, the blended moving mean and variance, and the batch's mean and 1/std, which
      // the gradient op (graph_train.ts) reads instead of keeping the normalised tensor.
      if (!ctx.assign) throw new Error(`emitStep: ${name} is a training step`);
      const inputs = [op.gamma, op.beta, op.movingMean, op.movingVariance].map((w, k) =>
        ctx.weight(g, `${name}/w${k}`, w)
      );
      g.node(name, "CxrBatchNormAct", [x, ...inputs], fusedAttrs(op));
      ctx.assign(g, `${name}/update_mean`, op.movingMean, `${name}:1`);
      ctx.assign(g, `${name}/update_variance`, op.movingVariance, `${name}:2`);
      return `${name}:0`;
    }
    case "scaleShift":
      return scaleShift(g, name, x, channelwise("s", op.scale), channelwise("t", op.shift), ctx);
    case "hardSwish":
    case "hardSigmoid": {
      if (op.kind === "hardSwish" && ctx.fusedHardSwish) {
        return g.node(name, "CxrHardSwish", [x], {});
      }
      // relu6(x + 3) / 6, times x for hard-swish.
      const shifted = g.op(`${name}/plus3`, "AddV2", [x, scalar("three", 3)]);
      const clipped = g.op(`${name}/relu6`, "Relu6", [shifted]);
      const sigmoid = g.op(
        op.kind === "hardSigmoid" ? name : `${name}/sigmoid`,
        "Mul",
        [clipped, scalar("sixth", 1 / 6)],
      );
      return op.kind === "hardSigmoid" ? sigmoid : g.op(name, "Mul", [x, sigmoid]);
    }
    case "relu":
      if (op.max === undefined) return g.op(name, "Relu", [x]);
      if (op.max === 6) return g.op(name, "Relu6", [x]);
      return g.op(name, "Minimum", [g.op(`${name}/relu`, "Relu", [x]), scalar("max", op.max)]);
    case "pad": {
      const [[t, b], [l, r]] = op.padding;
      const pads = g.intConst(`${name}/paddings`, [4, 2], [0, 0, t, b, l, r, 0, 0]);
      return g.op(name, "Pad", [x, pads], { Tpaddings: { type: DT_INT32 } });
    }
    case "globalMean":
      return g.op(name, "Mean", [x, g.intConst(`${name}/axes`, [2], [1, 2])], {
        Tidx: { type: DT_INT32 },
        keep_dims: { b: false },
      });
    case "reshape": {
      const shape = g.intConst(`${name}/shape`, [op.target.length + 1], [-1, ...op.target]);
      return g.op(name, "Reshape", [x, shape], { Tshape: { type: DT_INT32 } });
    }
    case "add":
      return g.op(name, "AddV2", [x, y]);
    case "mul":
      return g.op(name, "Mul", [x, y]);
    case "dense": {
      const kernel = ctx.weight(g, `${name}/kernel`, op.kernel);
      let out = g.op(op.bias || op.relu ? `${name}/matmul` : name, "MatMul", [x, kernel], {
        transpose_a: { b: false },
        transpose_b: { b: false },
      });
      if (op.bias) {
        const bias = ctx.weight(g, `${name}/bias`, op.bias);
        out = g.op(op.relu ? `${name}/biased` : name, "BiasAdd", [out, bias], {
          data_format: { s: "NHWC" },
        });
      }
      return op.relu ? g.op(name, "Relu", [out]) : out;
    }
    case "dropout": {
      if (!ctx.mask) throw new Error(`emitStep: ${name} is a training step`);
      return g.op(name, "Mul", [x, ctx.mask(g, `${name}/mask`, op.units, op)]);
    }
  }
}
