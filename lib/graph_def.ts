/**
 * Writing TensorFlow GraphDefs (tensorflow/core/framework/graph.proto) from TypeScript: nodes,
 * attributes, constant tensors, and the nodes of one inference-plan step. Used for the inference
 * graph (lib/saved_model.ts) and the training graph (lib/graph_train.ts).
 */
import { tf } from "./backend.ts";
import type { Op } from "./inference.ts";
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

// TensorFlow's DataType enum (tensorflow/core/framework/types.proto).
export const DT_FLOAT = 1;
export const DT_INT32 = 3;
export const DT_RESOURCE = 20;
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
  | { shape: number[] }
  | { tensor: Bytes };

function attrValue(a: Attr): Bytes[] {
  if ("type" in a) return [intField(6, a.type)];
  if ("s" in a) return [stringField(2, a.s)];
  if ("i" in a) return [intField(3, a.i)];
  if ("f" in a) return [floatField(4, a.f)];
  if ("b" in a) return [intField(5, a.b)];
  if ("ints" in a) return [bytesField(1, a.ints.length ? [packedIntsField(3, a.ints)] : [])];
  if ("shape" in a) return [bytesField(7, shapeProto(a.shape))];
  return [bytesField(8, a.tensor)];
}

/** TensorShapeProto; -1 is an unknown dimension. */
export function shapeProto(dims: number[]): Bytes[] {
  return dims.map((d) => bytesField(2, [intField(1, d)]));
}

/** TensorProto with the values as raw little-endian bytes. */
function tensorProto(dtype: number, shape: number[], values: Float32Array | Int32Array): Bytes {
  return concat([
    intField(1, dtype),
    bytesField(2, shapeProto(shape)),
    bytesField(4, new Uint8Array(values.buffer, values.byteOffset, values.byteLength)),
  ]);
}

/** Builds a GraphDef node by node; node names are unique and say which step they belong to. */
export class GraphWriter {
  private nodes: Bytes[] = [];
  private names = new Set<string>();

  node(name: string, op: string, inputs: string[], attrs: Record<string, Attr>): string {
    if (this.names.has(name)) throw new Error(`GraphWriter: duplicate node name ${name}`);
    this.names.add(name);
    this.nodes.push(bytesField(1, [
      stringField(1, name),
      stringField(2, op),
      ...inputs.map((i) => stringField(3, i)),
      ...Object.entries(attrs).map(([k, v]) => mapEntry(5, k, attrValue(v))),
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

  /** A float op: every op used here takes its element type as attribute T. */
  op(name: string, op: string, inputs: string[], attrs: Record<string, Attr> = {}): string {
    return this.node(name, op, inputs, { T: { type: DT_FLOAT }, ...attrs });
  }

  graphDef(): Bytes[] {
    return [...this.nodes, bytesField(4, [intField(1, GRAPH_PRODUCER)])];
  }
}

/**
 * How a step's weight becomes a graph node (named `name`): by default a constant holding its
 * current values; the training graph reads a variable instead.
 */
export type WeightNode = (g: GraphWriter, name: string, weight: tf.Tensor) => string;

export const constantWeight: WeightNode = (g, name, weight) =>
  g.floatConst(name, weight.shape, weight.dataSync() as Float32Array);

/** Emit the nodes of one step; returns the name of its output node. */
export function emitStep(
  g: GraphWriter,
  name: string,
  op: Op,
  [x, y]: string[],
  weight: WeightNode = constantWeight,
): string {
  const floats = (t: tf.Tensor) => t.dataSync() as Float32Array;
  const scalar = (suffix: string, v: number) =>
    g.floatConst(`${name}/${suffix}`, [], Float32Array.of(v));
  switch (op.kind) {
    case "normalize": {
      // x · 1/(255 std) − mean/std, per channel (as preprocess.normalize computes it).
      const a = Float32Array.from(op.spec.std.map((s) => 1 / (255 * s)));
      const b = Float32Array.from(op.spec.mean.map((m, i) => -m / op.spec.std[i]));
      const scaled = g.op(`${name}/scale`, "Mul", [x, g.floatConst(`${name}/a`, [3], a)]);
      return g.op(name, "AddV2", [scaled, g.floatConst(`${name}/b`, [3], b)]);
    }
    case "conv": {
      const kernel = weight(g, `${name}/kernel`, op.kernel);
      const [sh, sw] = op.strides;
      let out = g.op(
        op.bias || op.relu ? `${name}/conv` : name,
        op.depthwise ? "DepthwiseConv2dNative" : "Conv2D",
        [x, kernel],
        {
          strides: { ints: [1, sh, sw, 1] },
          padding: { s: op.padding.toUpperCase() },
          data_format: { s: "NHWC" },
          dilations: { ints: [1, 1, 1, 1] },
          explicit_paddings: { ints: [] },
          ...(op.depthwise ? {} : { use_cudnn_on_gpu: { b: true } }),
        },
      );
      if (op.bias) {
        const bias = weight(g, `${name}/bias`, op.bias);
        out = g.op(op.relu ? `${name}/biased` : name, "BiasAdd", [out, bias], {
          data_format: { s: "NHWC" },
        });
      }
      return op.relu ? g.op(name, "Relu", [out]) : out;
    }
    case "batchNorm": {
      const [gamma, beta, mean, variance] = [op.gamma, op.beta, op.mean, op.variance].map(floats);
      const s = gamma.map((v, i) => v / Math.sqrt(variance[i] + op.epsilon));
      const t = beta.map((v, i) => v - mean[i] * s[i]);
      const scaled = g.op(`${name}/scale`, "Mul", [x, g.floatConst(`${name}/s`, [s.length], s)]);
      return g.op(name, "AddV2", [scaled, g.floatConst(`${name}/t`, [t.length], t)]);
    }
    case "hardSwish":
    case "hardSigmoid": {
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
      if (op.max == null) return g.op(name, "Relu", [x]);
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
      const kernel = weight(g, `${name}/kernel`, op.kernel);
      const product = g.op(`${name}/matmul`, "MatMul", [x, kernel], {
        transpose_a: { b: false },
        transpose_b: { b: false },
      });
      const bias = weight(g, `${name}/bias`, op.bias);
      return g.op(name, "BiasAdd", [product, bias], { data_format: { s: "NHWC" } });
    }
  }
}
