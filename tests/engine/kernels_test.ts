import assert from "node:assert/strict";
import {
  chooseKernels,
  createPredictor,
  createStepEngine,
  graphEnginesUnavailable,
  graphStepEngine,
  initBackend,
  liveSessions,
  planModel,
  POINTWISE_INPUT_PRODUCT,
  POINTWISE_KERNEL_PRODUCT,
  Rng,
  type StepEngine,
  tf,
  withEnv,
} from "../../lib/mod.ts";
import { smallForTraining } from "../_models.ts";
import { convolutionsBeforeHardSwish, inferenceGraph } from "../../lib/engine/graph_predictor.ts";
import { DT_FLOAT, DT_INT32, GraphSession, type HostTensor } from "../../lib/engine/tf_c.ts";
import { constantWeights, emitStep, GraphWriter } from "../../lib/engine/graph_def.ts";
import { readFields } from "../../lib/engine/protobuf.ts";

await initBackend();
// The graph engines and the fused kernels need the native backend, which CI runs; setup builds
// the kernels there, so these tests run (and fail when the kernels are missing).
const native = graphEnginesUnavailable() === undefined;

const ACTIVATIONS = ["identity", "relu", "hard_swish"] as const;
const EPSILON = 1e-3, AVERAGE = 0.1;

/** Seeded values in [offset - spread, offset + spread]: the same inputs on every run. */
function values(rng: Rng, n: number, spread: number, offset = 0): Float32Array {
  return Float32Array.from({ length: n }, () => offset + rng.uniform(-spread, spread));
}

/**
 * One graph with both: FusedBatchNormV3 in training mode + the activation as the graph engines
 * emit it with TensorFlow's own kernels, its gradients from TF_AddGradients; and CxrBatchNormAct
 * with CxrBatchNormActGrad. Returns each output of each, fed the same x and dy.
 */
function runBoth(shape: number[], activation: typeof ACTIVATIONS[number], seed: number) {
  const rng = Rng.stream(seed, "kernels-test", shape.join("x"), activation);
  const C = shape.at(-1)!;
  const n = shape.reduce((a, b) => a * b, 1);
  const g = new GraphWriter();
  g.placeholder("x", shape);
  g.placeholder("dy", shape);
  g.floatConst("gamma", [C], values(rng, C, 0.5, 1));
  g.floatConst("beta", [C], values(rng, C, 1));
  g.floatConst("mean", [C], values(rng, C, 1));
  g.floatConst("variance", [C], values(rng, C, 0.5, 1));
  const inputs = ["x", "gamma", "beta", "mean", "variance"];
  g.node("bn", "FusedBatchNormV3", inputs, {
    T: { type: DT_FLOAT },
    U: { type: DT_FLOAT },
    epsilon: { f: EPSILON },
    exponential_avg_factor: { f: AVERAGE },
    data_format: { s: "NHWC" },
    is_training: { b: true },
  });
  const y = emitActivation(g, "act", "bn:0", activation);
  const attrs = {
    epsilon: { f: EPSILON },
    exponential_avg_factor: { f: AVERAGE },
    activation: { s: activation },
  };
  g.node("fused", "CxrBatchNormAct", inputs, attrs);
  g.node("moments", "CxrBatchNormMoments", ["x", "mean", "variance"], attrs);
  g.node(
    "fused_grad",
    "CxrBatchNormActGrad",
    ["dy", "x", "gamma", "beta", "fused:3", "fused:4"],
    attrs,
  );
  const session = new GraphSession();
  try {
    session.import(g.bytes());
    const grads = session.addGradients(
      "grad",
      [session.output(y)],
      ["x", "gamma", "beta"].map((name) => session.output(name)),
      [session.output("dy")],
    );
    session.start();
    const feeds: [ReturnType<typeof session.output>, HostTensor][] = [
      [session.output("x"), { values: values(rng, n, 2, 0.5), shape }],
      [session.output("dy"), { values: values(rng, n, 1), shape }],
    ];
    const fetched = session.run(feeds, [
      session.output(y),
      session.output("bn:1"),
      session.output("bn:2"),
      ...grads,
      ...[0, 1, 2].map((i) => session.output(`fused:${i}`)),
      ...[0, 1, 2].map((i) => session.output(`fused_grad:${i}`)),
      ...[1, 2, 3, 4].map((i) => session.output(`fused:${i}`)),
      ...[0, 1, 2, 3].map((i) => session.output(`moments:${i}`)),
    ]);
    const names = ["y", "moving mean", "moving variance", "dx", "dgamma", "dbeta"];
    return {
      dy: feeds[1][1],
      outputs: names.map((name, i) => ({ name, standard: fetched[i], fused: fetched[i + 6] })),
      // CxrBatchNormAct's statistics, and CxrBatchNormMoments': the same bits.
      statistics: fetched.slice(12, 16),
      moments: fetched.slice(16, 20),
    };
  } finally {
    session.close();
  }
}

/** max |a − b| over max |a| (or `scale` where larger): the error relative to the output's scale. */
function relativeError(a: HostTensor, b: HostTensor, atLeast = 0): number {
  assert.deepEqual(b.shape, a.shape);
  let diff = 0, scale = atLeast;
  a.values.forEach((v, i) => {
    diff = Math.max(diff, Math.abs(v - b.values[i]));
    scale = Math.max(scale, Math.abs(v));
  });
  return scale === 0 ? diff : diff / scale;
}

Deno.test({
  name:
    "kernels: CxrBatchNormAct and its gradient compute what TensorFlow's BatchNorm + activation and their gradients do (forward, moving averages, dx, dgamma, dbeta) to 1e-5, and CxrBatchNormMoments its statistics bit for bit (refusing moving averages of the wrong length), on odd shapes, batch 1, channels of one or two values and a tensor split between threads",
  ignore: !native,
  fn: () => {
    assert.equal(chooseKernels("fused").kind, "fused", "setup builds the fused kernels");
    // Channel counts that are not multiples of the vector width, single images, single rows; and
    // one tensor of 2 M values, which the kernels split between two threads (on 2 or more cores).
    const shapes = [
      [1, 1, 1, 8],
      [2, 1, 1, 8],
      [1, 3, 5, 7],
      [2, 7, 5, 13],
      [3, 11, 9, 33],
      [
        1,
        1,
        9,
        16,
      ],
      [4, 17, 17, 3],
      [4, 64, 64, 130],
    ];
    for (const shape of shapes) {
      for (const activation of ACTIVATIONS) {
        const { dy, outputs, statistics, moments } = runBoth(shape, activation, 1);
        moments.forEach((m, i) => {
          assert.deepEqual(m.shape, statistics[i].shape);
          const differ = m.values.findIndex((v, j) => !Object.is(v, statistics[i].values[j]));
          assert.equal(differ, -1, `${activation} ${shape}: CxrBatchNormMoments output ${i}`);
        });
        for (const { name, standard, fused } of outputs) {
          // dx is a difference of terms the size of dy·γ/σ, which cancel to ~0 when a channel has
          // two values (both normalise to ±1 whatever they are): rounding is relative to the terms.
          const error = name === "dx"
            ? relativeError(
              standard,
              fused,
              Array.from(dy.values).reduce((m, v) => Math.max(m, Math.abs(v)), 0),
            )
            : relativeError(standard, fused);
          assert.ok(
            error <= 1e-5,
            `${activation} ${shape}: ${name} differs by ${error} (relative)`,
          );
        }
      }
    }
    // Moving averages of the wrong length are refused, with the op's name.
    const g = new GraphWriter();
    g.placeholder("x", [2, 3, 3, 8]);
    g.floatConst("mean", [5], new Float32Array(5));
    g.floatConst("variance", [5], new Float32Array(5).fill(1));
    g.node("moments", "CxrBatchNormMoments", ["x", "mean", "variance"], {
      epsilon: { f: EPSILON },
      exponential_avg_factor: { f: AVERAGE },
      activation: { s: "identity" },
    });
    assertRunRefused(
      g,
      [["x", { values: new Float32Array(144), shape: [2, 3, 3, 8] }]],
      "moments:2",
      /CxrBatchNormMoments: the moving averages need one value per channel/,
    );
    assert.equal(liveSessions(), 0);
  },
});

/** Run the one-op graph `g` on `feeds`, fetching `fetch`: the op must refuse with `refusal`. */
function assertRunRefused(
  g: GraphWriter,
  feeds: [string, HostTensor][],
  fetch: string,
  refusal: RegExp,
): void {
  const session = new GraphSession();
  try {
    session.import(g.bytes());
    session.start();
    assert.throws(
      () =>
        session.run(feeds.map(([name, t]) => [session.output(name), t]), [session.output(fetch)]),
      refusal,
    );
  } finally {
    session.close();
  }
}

/** TensorFlow's ops for `activation` after `x`: the graph engines' own step (graph_def.ts). */
function emitActivation(
  g: GraphWriter,
  name: string,
  x: string,
  activation: typeof ACTIVATIONS[number],
): string {
  if (activation === "identity") return x;
  const op = activation === "relu" ? { kind: "relu" as const } : { kind: "hardSwish" as const };
  return emitStep(g, name, op, [x], constantWeights);
}

/** A depthwise convolution's output shape for input `shape` (channels last). */
function depthwiseOutputShape(
  [batch, height, width, channels]: number[],
  kernel: number,
  stride: number,
  [top, bottom, left, right]: [number, number, number, number],
): number[] {
  return [
    batch,
    Math.floor((height + top + bottom - kernel) / stride) + 1,
    Math.floor((width + left + right - kernel) / stride) + 1,
    channels,
  ];
}

/** The number of values of a tensor of `shape`. */
const size = (shape: number[]) => shape.reduce((a, b) => a * b, 1);

/**
 * TensorFlow's Pad + DepthwiseConv2dNative (as the graph engines emit a padded depthwise step)
 * with TF_AddGradients, and CxrDepthwiseConv with CxrDepthwiseConvInputGrad and …FilterGrad, fed
 * the same x and dy: each output of each; and the inference op, CxrDepthwiseConvBiasAct, against TensorFlow's
 * convolution + BiasAdd + each activation. `cacheBytes` is the fused ops' cache_bytes attribute
 * (0: the machine's cache), which chooses their loop order.
 */
function runDepthwiseBoth(
  shape: number[],
  kernel: number,
  stride: number,
  paddings: [number, number, number, number],
  cacheBytes = 0,
) {
  const [, height, width, channels] = shape;
  const rng = Rng.stream(1, "depthwise-test", shape.join("x"), kernel, stride, paddings.join());
  const [top, bottom, left, right] = paddings;
  const outShape = depthwiseOutputShape(shape, kernel, stride, paddings);
  const g = new GraphWriter();
  g.placeholder("x", shape);
  g.placeholder("dy", outShape);
  g.floatConst("w", [kernel, kernel, channels, 1], values(rng, kernel * kernel * channels, 1));
  const pads = g.intConst("pads", [4, 2], [0, 0, top, bottom, left, right, 0, 0]);
  const padded = g.op("pad", "Pad", ["x", pads], { Tpaddings: { type: DT_INT32 } });
  g.op("standard", "DepthwiseConv2dNative", [padded, "w"], {
    strides: { ints: [1, stride, stride, 1] },
    padding: { s: "VALID" },
    data_format: { s: "NHWC" },
    dilations: { ints: [1, 1, 1, 1] },
    explicit_paddings: { ints: [] },
  });
  const attrs = {
    stride: { i: stride },
    paddings: { ints: paddings },
    cache_bytes: { i: cacheBytes },
  };
  g.node("fused", "CxrDepthwiseConv", ["x", "w"], attrs);
  g.node("fused_dx", "CxrDepthwiseConvInputGrad", ["dy", "w"], {
    ...attrs,
    input_size: { ints: [height, width] },
  });
  g.node("fused_dw", "CxrDepthwiseConvFilterGrad", ["dy", "x", "w"], attrs);
  // Biases around zero, so that the activations' kinks are crossed.
  g.floatConst("b", [channels], values(rng, channels, 1));
  const biased = g.op("biased", "BiasAdd", ["standard", "b"], { data_format: { s: "NHWC" } });
  const withActivation = ACTIVATIONS.map((activation) => {
    const standard = emitActivation(g, `standard_${activation}`, biased, activation);
    const fused = g.node(`fused_${activation}`, "CxrDepthwiseConvBiasAct", ["x", "w", "b"], {
      ...attrs,
      activation: { s: activation },
    });
    return { name: `y (bias, ${activation})`, standard, fused };
  });
  const session = new GraphSession();
  try {
    session.import(g.bytes());
    const grads = session.addGradients(
      "grad",
      [session.output("standard")],
      [session.output("x"), session.output("w")],
      [session.output("dy")],
    );
    session.start();
    const fetched = session.run([
      [session.output("x"), { values: values(rng, size(shape), 2), shape }],
      [session.output("dy"), { values: values(rng, size(outShape), 1), shape: outShape }],
    ], [
      session.output("standard"),
      ...grads,
      ...["fused", "fused_dx", "fused_dw"].map((n) => session.output(n)),
      ...withActivation.flatMap((a) => [session.output(a.standard), session.output(a.fused)]),
    ]);
    return [
      ...["y", "dx", "dw"].map((name, i) => ({
        name,
        standard: fetched[i],
        fused: fetched[i + 3],
      })),
      ...withActivation.map((a, i) => ({
        name: a.name,
        standard: fetched[6 + 2 * i],
        fused: fetched[7 + 2 * i],
      })),
    ];
  } finally {
    session.close();
  }
}

/**
 * Depthwise convolutions to test: [x's shape, kernel, stride, [top, bottom, left, right]].
 * Channel counts around the vector width (8) and its groups of four (32): one block, a block that
 * overlaps, groups of 1 to 4 blocks, a group that overlaps the one before.
 */
const DEPTHWISE_CASES: [number[], number, number, [number, number, number, number]][] = [
  [[1, 5, 7, 8], 3, 1, [1, 1, 1, 1]],
  [[2, 9, 8, 13], 3, 2, [0, 1, 0, 1]], // Keras's stride-2 padding
  [[1, 11, 10, 21], 5, 2, [2, 2, 2, 2]], // torchvision's
  [[3, 6, 6, 16], 5, 1, [2, 2, 2, 2]],
  [[1, 12, 13, 72], 5, 2, [1, 2, 1, 2]],
  [[2, 1, 1, 9], 3, 1, [1, 1, 1, 1]], // one pixel: only the centre tap is inside
  [[1, 4, 4, 8], 3, 3, [0, 0, 2, 1]], // taps that skip input columns
  [[2, 6, 5, 40], 3, 1, [1, 1, 1, 1]],
  [[1, 7, 7, 24], 3, 2, [1, 1, 1, 1]],
  [[2, 5, 5, 45], 5, 1, [2, 2, 2, 2]],
  [[1, 3, 3, 8], 3, 1, [0, 0, 0, 0]], // no padding: one output
  // Large enough for the kernels to split the rows between two threads; the first only for
  // the op predictions use (CxrDepthwiseConvBiasAct splits from a quarter of the work).
  [[1, 64, 64, 64], 3, 1, [1, 1, 1, 1]],
  [[4, 64, 64, 64], 3, 2, [0, 1, 0, 1]],
  [[4, 48, 48, 72], 5, 1, [2, 2, 2, 2]],
  // Rows long enough for strips of eight and of four positions with some left over, stride 2
  // (the input gradient's strips run over every other column), and a kernel of 7 (the filter
  // gradient's general loop; 3 and 5 have their own).
  [[2, 7, 29, 13], 3, 1, [1, 1, 1, 1]],
  [[1, 5, 31, 16], 3, 2, [0, 1, 0, 1]],
  [[2, 6, 23, 21], 5, 2, [2, 2, 2, 2]],
  [[1, 9, 19, 24], 7, 1, [3, 3, 3, 3]],
];

Deno.test({
  name:
    "kernels: CxrDepthwiseConv and its gradient compute what TensorFlow's Pad + depthwise convolution and their gradients do (y, dx, dw) to 1e-5, and CxrDepthwiseConvBiasAct what they do followed by BiasAdd and each activation, on odd shapes and channel counts, strides 1 to 3, uneven padding, kernels of 3, 5 and 7, batch 1, tensors split between threads and both loop orders",
  ignore: !native,
  fn: () => {
    assert.equal(chooseKernels("fused").kind, "fused", "setup builds the fused kernels");
    // Each case twice: planned for this machine's cache (these tensors fit: strips, channels block
    // by block) and for a 1-byte cache (every tensor is "larger": position by position).
    for (const [shape, kernel, stride, paddings] of DEPTHWISE_CASES) {
      for (const cacheBytes of [0, 1]) {
        for (
          const { name, standard, fused } of runDepthwiseBoth(
            shape,
            kernel,
            stride,
            paddings,
            cacheBytes,
          )
        ) {
          const error = relativeError(standard, fused);
          assert.ok(
            error <= 1e-5,
            `${shape} k${kernel} s${stride} pads ${paddings} cache ${cacheBytes}: ${name} differs by ${error}`,
          );
        }
      }
    }
    // Fewer than 8 channels is refused, with what is wrong.
    assert.throws(
      () => runDepthwiseBoth([1, 4, 4, 7], 3, 1, [1, 1, 1, 1]),
      /CxrDepthwiseConv: x must be \[B, H, W, C\] with C >= 8/,
    );
    assert.equal(liveSessions(), 0);
  },
});

/**
 * A depthwise convolution whose input is a fused BatchNorm's output y = act(x · scale + offset),
 * two ways, fed the same x, dy and statistics: CxrBatchNormActApply then the convolution's op
 * (`filter`: CxrDepthwiseConvFilterGrad, the backward pass before; `forward`: CxrDepthwiseConv,
 * the forward pass before), and the op that makes y row by row itself
 * (CxrDepthwiseConvFilterGradOfBatchNorm, CxrDepthwiseConvOfBatchNorm). `statsLength`: how many
 * values the statistics have (the channels', unless a test wants them wrong).
 */
function ofBatchNormBoth(
  [shape, kernel, stride, paddings]: typeof DEPTHWISE_CASES[number],
  activation: typeof ACTIVATIONS[number],
  cacheBytes: number,
  which: "filter" | "forward",
  statsLength = shape[3],
): { apart: HostTensor; together: HostTensor } {
  const rng = Rng.stream(2, `${which}-of-batch-norm`, shape.join("x"), kernel, activation);
  const channels = shape[3];
  const outShape = depthwiseOutputShape(shape, kernel, stride, paddings);
  const g = new GraphWriter();
  g.placeholder("x", shape);
  g.placeholder("dy", outShape);
  g.floatConst("w", [kernel, kernel, channels, 1], values(rng, kernel * kernel * channels, 1));
  // y spans about ±4, across ReLU's kink at 0 and hard-swish's at ±3.
  g.floatConst("gamma", [statsLength], values(rng, statsLength, 0.5, 1));
  g.floatConst("beta", [statsLength], values(rng, statsLength, 1));
  g.floatConst("mean", [statsLength], values(rng, statsLength, 0.5));
  g.floatConst("inv_std", [statsLength], values(rng, statsLength, 0.3, 1));
  const stats = ["gamma", "beta", "mean", "inv_std"];
  const conv = {
    stride: { i: stride },
    paddings: { ints: paddings },
    cache_bytes: { i: cacheBytes },
  };
  g.node("y", "CxrBatchNormActApply", ["x", ...stats], {
    epsilon: { f: EPSILON },
    exponential_avg_factor: { f: AVERAGE },
    activation: { s: activation },
  });
  if (which === "filter") {
    g.node("apart", "CxrDepthwiseConvFilterGrad", ["dy", "y", "w"], conv);
    g.node("together", "CxrDepthwiseConvFilterGradOfBatchNorm", ["dy", "x", "w", ...stats], {
      ...conv,
      activation: { s: activation },
    });
  } else {
    g.node("apart", "CxrDepthwiseConv", ["y", "w"], conv);
    g.node("together", "CxrDepthwiseConvOfBatchNorm", ["x", "w", ...stats], {
      ...conv,
      activation: { s: activation },
    });
  }
  const session = new GraphSession();
  try {
    session.import(g.bytes());
    session.start();
    // Statistics of the wrong length (a refusal test): only the op under test runs, so that its
    // error is the one reported (both ops refuse them, in whichever order TensorFlow runs them).
    const refused = statsLength !== shape[3];
    const fetched = session.run([
      [session.output("x"), { values: values(rng, size(shape), 2, 0.5), shape }],
      // (The forward ops read no dy: fed all the same, it changes nothing.)
      [session.output("dy"), { values: values(rng, size(outShape), 1), shape: outShape }],
    ], (refused ? ["together"] : ["apart", "together"]).map((n) => session.output(n)));
    return { apart: fetched[0], together: fetched.at(-1)! };
  } finally {
    session.close();
  }
}

/**
 * ofBatchNormBoth on every depthwise test shape, activation and loop order: `op` (the one that
 * makes y row by row) gives the same bits as the two ops apart; statistics of the wrong length are
 * refused with its name.
 */
function assertOfBatchNormSameBits(which: "filter" | "forward", op: string): void {
  assert.equal(chooseKernels("fused").kind, "fused", "setup builds the fused kernels");
  for (const c of DEPTHWISE_CASES) {
    for (const activation of ACTIVATIONS) {
      for (const cacheBytes of [0, 1]) {
        const { apart, together } = ofBatchNormBoth(c, activation, cacheBytes, which);
        assert.deepEqual(
          together.shape,
          which === "filter" ? [c[1], c[1], c[0][3], 1] : depthwiseOutputShape(...c),
        );
        const differ = apart.values.findIndex((v, i) => !Object.is(v, together.values[i]));
        assert.equal(
          differ,
          -1,
          `${op} ${c[0]} k${c[1]} s${c[2]} ${activation} cache ${cacheBytes}: [${differ}] ` +
            `${together.values[differ]} where apart ${apart.values[differ]}`,
        );
        assert.ok(apart.values.some((v) => v !== 0), `${c[0]}: values that are not all 0`);
      }
    }
  }
  assert.throws(
    () => ofBatchNormBoth(DEPTHWISE_CASES[1], "relu", 0, which, 12),
    new RegExp(`${op}: gamma, beta, mean and inverse std need one value per channel`),
  );
  assert.equal(liveSessions(), 0);
}

Deno.test({
  name:
    "kernels: CxrDepthwiseConvFilterGradOfBatchNorm gives, bit for bit, the filter gradient CxrBatchNormActApply then CxrDepthwiseConvFilterGrad give, for each activation, on the depthwise tests' shapes (odd ones, batch 1, strides 1 to 3, kernels of 3, 5 and 7, split between threads), both loop orders; statistics of the wrong length are refused",
  ignore: !native,
  fn: () => assertOfBatchNormSameBits("filter", "CxrDepthwiseConvFilterGradOfBatchNorm"),
});

Deno.test({
  name:
    "kernels: CxrDepthwiseConvOfBatchNorm gives, bit for bit, what CxrBatchNormActApply then CxrDepthwiseConv give, for each activation, on the depthwise tests' shapes (odd ones, batch 1, strides 1 to 3, kernels of 3, 5 and 7, split between threads), both loop orders; statistics of the wrong length are refused",
  ignore: !native,
  fn: () => assertOfBatchNormSameBits("forward", "CxrDepthwiseConvOfBatchNorm"),
});

/**
 * The gradient of a fused BatchNorm whose output y fed squeeze-excite's y · gate and its pooling,
 * two ways, fed the same dy (the product's gradient), gate and pooled gradient: y's gradient
 * written out as the graph did (TensorFlow's Mul, the spread as ExpandDims, Mul by 1 / (H · W) and
 * Tile, then AddN) into CxrBatchNormActGrad; and CxrBatchNormActGradScaled. [dx, dgamma, dbeta]
 * of each. `gateLength`: the gate's values (B · C unless a test wants it wrong).
 */
function scaledGradientBoth(
  shape: number[],
  activation: typeof ACTIVATIONS[number],
  gateLength = shape[0] * shape[3],
): { apart: HostTensor[]; together: HostTensor[] } {
  const rng = Rng.stream(3, "scaled-batch-norm-grad", shape.join("x"), activation);
  const [batch, height, width, channels] = shape;
  const n = size(shape);
  const g = new GraphWriter();
  g.placeholder("x", shape);
  g.placeholder("dy", shape);
  g.floatConst("gamma", [channels], values(rng, channels, 0.5, 1));
  g.floatConst("beta", [channels], values(rng, channels, 1));
  g.floatConst("mean", [channels], values(rng, channels, 0.5));
  g.floatConst("inv_std", [channels], values(rng, channels, 0.3, 1));
  g.floatConst("gate", [gateLength / channels, 1, 1, channels], values(rng, gateLength, 0.5, 0.5));
  g.floatConst("pooled", [batch, channels], values(rng, batch * channels, 1));
  const int32 = { Tdim: { type: DT_INT32 } };
  const rows = g.op("rows", "ExpandDims", ["pooled", g.intConst("axis1", [], [1])], int32);
  const columns = g.op("columns", "ExpandDims", [rows, g.intConst("axis2", [], [2])], int32);
  const perPosition = Float32Array.of(1 / (height * width));
  const spread = g.op("spread", "Tile", [
    g.op("scaled", "Mul", [columns, g.floatConst("per_position", [], perPosition)]),
    g.intConst("multiples", [4], [1, height, width, 1]),
  ], { Tmultiples: { type: DT_INT32 } });
  const product = g.op("product", "Mul", ["dy", "gate"]);
  g.node("sum", "AddN", [product, spread], { N: { i: 2 }, T: { type: DT_FLOAT } });
  const stats = ["gamma", "beta", "mean", "inv_std"];
  const attrs = {
    epsilon: { f: EPSILON },
    exponential_avg_factor: { f: AVERAGE },
    activation: { s: activation },
  };
  g.node("apart", "CxrBatchNormActGrad", ["sum", "x", ...stats], attrs);
  g.node("together", "CxrBatchNormActGradScaled", ["dy", "x", ...stats, "gate", "pooled"], attrs);
  const session = new GraphSession();
  try {
    session.import(g.bytes());
    session.start();
    const fetched = session.run(
      [
        [session.output("x"), { values: values(rng, n, 2, 0.5), shape }],
        [session.output("dy"), { values: values(rng, n, 1), shape }],
      ],
      ["apart", "together"].flatMap((name) => [0, 1, 2].map((i) => session.output(`${name}:${i}`))),
    );
    return { apart: fetched.slice(0, 3), together: fetched.slice(3) };
  } finally {
    session.close();
  }
}

Deno.test({
  name:
    "kernels: CxrBatchNormActGradScaled gives, bit for bit, what TensorFlow's Mul, Tile and AddN then CxrBatchNormActGrad give for a BatchNorm read by squeeze-excite's scaling and pooling (dx, dgamma, dbeta), for each activation, batch 1, odd shapes and a tensor split between threads; a gate of the wrong size is refused",
  ignore: !native,
  fn: () => {
    assert.equal(chooseKernels("fused").kind, "fused", "setup builds the fused kernels");
    // Images of one row, of odd sizes, one channel, and 2.2 M values (split between threads, so
    // an image's rows fall in two parts).
    const shapes = [[1, 3, 5, 8], [2, 7, 9, 13], [3, 1, 4, 1], [4, 5, 3, 20], [3, 63, 65, 187]];
    for (const shape of shapes) {
      for (const activation of ACTIVATIONS) {
        const { apart, together } = scaledGradientBoth(shape, activation);
        ["dx", "dgamma", "dbeta"].forEach((name, i) => {
          assert.deepEqual(together[i].shape, apart[i].shape, name);
          const differ = apart[i].values.findIndex((v, k) => !Object.is(v, together[i].values[k]));
          assert.equal(
            differ,
            -1,
            `${shape} ${activation}: ${name}[${differ}] ${together[i].values[differ]} where ` +
              `apart ${apart[i].values[differ]}`,
          );
        });
      }
    }
    assert.throws(
      () => scaledGradientBoth([2, 3, 3, 8], "relu", 8),
      /CxrBatchNormActGradScaled: x must be \[B, H, W, C\], the gate \[B, 1, 1, C\]/,
    );
    assert.equal(liveSessions(), 0);
  },
});

const make = smallForTraining;

/**
 * Two steps of each engine on the same batch (the second with learning rate 0, as in
 * graph_train_test.ts): the losses, predictions, and per weight the largest difference and the
 * largest update, plus the momentum buffers (the gradients) as flat arrays.
 */
async function stepBoth(
  convention: "keras" | "torchvision",
  engines: (
    a: tf.LayersModel,
    b: tf.LayersModel,
    opts: Parameters<typeof createStepEngine>[1],
  ) => [Promise<StepEngine>, Promise<StepEngine>],
  nudge = 0,
) {
  const models = [make(convention), make(convention)];
  const before = models[0].weights.map((w) => w.read().dataSync().slice());
  const x = tf.randomUniform([6, 64, 64, 3], 0, 255, "float32", 5) as tf.Tensor4D;
  const xb = nudge
    ? tf.add(x, tf.randomUniform(x.shape, -nudge, nudge, "float32", 6)) as tf.Tensor4D
    : x;
  const labels = tf.tensor1d([0, 1, 2, 0, 1, 2], "int32");
  const opts = { learningRate: 0.01, momentum: 0.9, numClasses: 3 };
  const [a, b] = await Promise.all(engines(models[0], models[1], opts));
  const losses: [number, number][] = [];
  for (const [step, lr] of [[0, opts.learningRate], [1, 0]]) {
    a.setLearningRate(lr);
    b.setLearningRate(lr);
    const [ra, rb] = [await a.step(x, labels, step), await b.step(xb, labels, step)];
    losses.push([ra.loss, rb.loss]);
    assert.deepEqual(Array.from(rb.predicted), Array.from(ra.predicted));
  }
  const weights = models[0].weights.map((w, i) => {
    const [wa, wb] = [w.read().dataSync(), models[1].weights[i].read().dataSync()];
    let diff = 0, update = 0, scale = 0;
    wa.forEach((v, j) => {
      diff = Math.max(diff, Math.abs(v - wb[j]));
      update = Math.max(update, Math.abs(v - before[i][j]));
      scale = Math.max(scale, Math.abs(v));
    });
    return { name: w.name, diff, update, scale, trainable: w.trainable };
  });
  const momenta = await Promise.all([a, b].map(async (e) => {
    const s = await e.optimizerState();
    const decoded = tf.io.decodeWeights(s.data, s.specs);
    const flat = s.specs.filter((spec) => spec.name !== "iter").flatMap((spec) =>
      Array.from(decoded[spec.name].dataSync())
    );
    tf.dispose(Object.values(decoded));
    return flat;
  }));
  a.dispose();
  b.dispose();
  tf.dispose([x, labels]);
  models.forEach((m) => m.dispose());
  return { losses, weights, momenta };
}

Deno.test({
  name:
    "kernels: the graph engine's step written step by step (chained gradients) computes what one TF_AddGradients over the whole graph does",
  ignore: !native,
  fn: async () => {
    for (const convention of ["torchvision", "keras"] as const) {
      const { losses, weights } = await stepBoth(convention, (a, b, opts) => [
        Promise.resolve(graphStepEngine(a, { ...opts, kernels: "standard" })),
        Promise.resolve(
          graphStepEngine(b, { ...opts, kernels: "standard" }, { chainedGradients: true }),
        ),
      ]);
      for (const [a, b] of losses) assert.ok(Math.abs(a - b) <= 1e-5 * Math.abs(a), `${a} vs ${b}`);
      for (const w of weights) {
        assert.ok(
          w.diff <= 2e-3 * w.update + 1e-6 * Math.max(w.scale, 1),
          `${convention} ${w.name}: differs by ${w.diff}, moved ${w.update}`,
        );
      }
    }
  },
});

/** ‖a − b‖ / ‖a‖ over flat arrays. */
function l2Relative(a: number[], b: number[]): number {
  let d2 = 0, n2 = 0;
  a.forEach((v, i) => {
    d2 += (v - b[i]) ** 2;
    n2 += v * v;
  });
  return Math.sqrt(d2 / n2);
}

Deno.test({
  name:
    "kernels: a graph step with the fused kernels computes the eager step (losses, predictions, gradients) as closely as float rounding lets the model itself",
  ignore: !native,
  fn: async () => {
    for (const convention of ["torchvision", "keras"] as const) {
      const fused = await stepBoth(convention, (a, b, opts) => [
        createStepEngine(a, { ...opts, engine: "eager" }),
        createStepEngine(b, { ...opts, engine: "graph", kernels: "fused" }),
      ]);
      for (const [a, b] of fused.losses) {
        assert.ok(Math.abs(a - b) <= 1e-4 * Math.abs(a), `${convention}: loss ${a} vs ${b}`);
      }
      // Where an activation's input sits within rounding of a kink (ReLU at 0, hard-swish at ±3),
      // the gradient jumps, and kernels that round differently pick different sides. How much
      // that moves the gradients depends on the model: measured here by the eager step itself
      // on the batch nudged by a millionth of the pixel range (this random Keras-convention
      // model at 64 px moves by ~2 %, the torchvision one by ~0.2 %). The fused kernels may
      // differ from the eager step by no more than that, or by 1e-3 where the model is calm.
      const nudged = await stepBoth(convention, (a, b, opts) => [
        createStepEngine(a, { ...opts, engine: "eager" }),
        createStepEngine(b, { ...opts, engine: "eager" }),
      ], 2.5e-4);
      const [difference, sensitivity] = [fused, nudged].map((r) =>
        l2Relative(r.momenta[0], r.momenta[1])
      );
      assert.ok(
        difference <= Math.max(1e-3, 3 * sensitivity),
        `${convention}: the gradients differ by ${difference} (relative L2); a nudge of the ` +
          `input moves them by ${sensitivity}`,
      );
    }
  },
});

/** The nodes of a serialised GraphDef: name, op type and inputs ("^x" for a control input). */
function graphNodes(
  bytes: Uint8Array,
): { name: string; op: string; inputs: string[]; attrs: string }[] {
  const text = (v: unknown) => new TextDecoder().decode(v as Uint8Array);
  return readFields(bytes).filter((f) => f.field === 1).map((f) => {
    const fields = readFields(f.value as Uint8Array);
    return {
      name: text(fields.find((x) => x.field === 1)!.value),
      op: text(fields.find((x) => x.field === 2)!.value),
      inputs: fields.filter((x) => x.field === 3).map((x) => text(x.value)),
      // The node's attributes as text, to look for a string in them (a fused op's name).
      attrs: text(f.value),
    };
  });
}

Deno.test({
  name:
    "kernels: with the fused kernels no gradient op reads a BatchNorm's forward output (the backward pass recomputes it, after the gradient that needs it), so the forward pass need not keep it; depthwise convolutions are fused with their padding; pointwise kernel gradients are matrix products; no input gradient waits for a recomputation; squeeze-excite's gate gradient is one pass, its pooling's reads nothing",
  ignore: !native,
  fn: () => {
    for (const convention of ["torchvision", "keras"] as const) {
      const model = make(convention);
      const engine = graphStepEngine(model, {
        learningRate: 0.01,
        momentum: 0.9,
        numClasses: 3,
        kernels: "fused",
      });
      const nodes = graphNodes(engine.graphDef());
      engine.dispose();
      model.dispose();
      const readers = (tensor: string) =>
        nodes.filter((n) => n.inputs.some((i) => i === tensor || i === `${tensor}:0`));
      const fused = nodes.filter((n) => n.op === "CxrBatchNormAct");
      // The expand layers' BatchNorms (whose output a depthwise convolution alone reads): their
      // statistics only; the convolution makes the output row by row.
      const moments = nodes.filter((n) => n.op === "CxrBatchNormMoments");
      assert.equal(fused.length + moments.length, 46, `${convention}: every BatchNorm is fused`);
      assert.equal(moments.length, 14, `${convention}: ${moments.map((n) => n.name)}`);
      let residualBatchNorms = 0;
      const pooledBatchNorms: string[] = [], depthwiseInputs: string[] = [];
      // The input's normalisation is one op (it needs no gradient).
      assert.equal(nodes.find((n) => n.name === "model/normalize")?.op, "CxrScaleShift");
      for (const bn of fused) {
        // Its output feeds the forward pass only (each step reads its inputs through an Identity
        // of its own), and what reads those Identities is forward too.
        const cuts = readers(bn.name);
        assert.ok(cuts.length > 0 && cuts.every((c) => c.op === "Identity"), bn.name);
        for (const cut of cuts) {
          for (const r of readers(cut.name)) {
            assert.ok(r.name.startsWith("model/"), `${r.name} (${r.op}) reads ${bn.name}`);
          }
        }
        // The backward pass makes its own copy, and only once it has reached that point; none
        // where the output only feeds a residual sum or the final pooling, whose gradients need
        // no values, or a depthwise convolution, whose filter gradient makes it row by row.
        const copy = nodes.find((n) => n.name === `grad/recompute/${bn.name}`);
        const only = (...ops: string[]) =>
          cuts.every((c) => readers(c.name).every((r) => ops.includes(r.op)));
        if (only("AddV2") || only("Mean") || only("CxrDepthwiseConv", "AddV2")) {
          if (only("AddV2")) residualBatchNorms++;
          else if (only("Mean")) pooledBatchNorms.push(bn.name);
          else depthwiseInputs.push(bn.name);
          assert.equal(copy, undefined, bn.name);
          continue;
        }
        assert.equal(copy?.op, "CxrBatchNormActApply", bn.name);
        assert.ok(copy.inputs.some((i) => i.startsWith("^grad/")), `${copy.name} waits`);
      }
      // MobileNetV3-Large's ten residual blocks, and its last convolution's (the pooling's
      // gradient is spread from H and W alone: spreadGradient).
      assert.equal(residualBatchNorms, 10, convention);
      assert.deepEqual(pooledBatchNorms, ["model/conv_1_bn"], convention);
      // Every depthwise convolution is the fused one, its padding inside (no Pad but the
      // torchvision stem's, on the input image), its input a BatchNorm's output.
      const depthwise = nodes.filter((n) => n.op === "CxrDepthwiseConv");
      assert.deepEqual(
        nodes.filter((n) => n.op === "Pad" && n.name.startsWith("model/")).map((n) => n.name),
        convention === "torchvision" ? ["model/conv_pad"] : [],
      );
      // The stem's BatchNorm output, which the first block's depthwise convolution and residual
      // sum read, is written out; the others a depthwise convolution reads are not.
      assert.equal(depthwiseInputs.length, 1, `${convention}: ${depthwiseInputs}`);
      const ofBatchNorm = nodes.filter((n) => n.op === "CxrDepthwiseConvOfBatchNorm");
      assert.equal(depthwise.length + ofBatchNorm.length, 15, convention);
      assert.equal(ofBatchNorm.length, 14, convention);
      for (const conv of [...depthwise, ...ofBatchNorm]) {
        // Its BatchNorm, and what of it the forward convolution reads: the BatchNorm's output
        // through a cut, or (never written out) the BatchNorm's input, gamma, beta, mean, 1/std.
        const batchNorm = conv.op === "CxrDepthwiseConv"
          ? nodes.find((n) => n.name === nodes.find((c) => c.name === conv.inputs[0])!.inputs[0])
          : nodes.find((n) => n.name === conv.inputs[4].replace(/:\d+$/, ""));
        const stats = batchNorm?.op === "CxrBatchNormAct"
          ? [`${batchNorm.name}:3`, `${batchNorm.name}:4`]
          : [`${batchNorm?.name}:2`, `${batchNorm?.name}:3`];
        const own = nodes.find((n) => n.name === `grad/${batchNorm?.name}`);
        assert.equal(own?.op, "CxrBatchNormActGrad", `${conv.name}: ${batchNorm?.name}`);
        assert.deepEqual(own.inputs.slice(4, 6), stats, own.name);
        if (conv.op === "CxrDepthwiseConvOfBatchNorm") {
          assert.equal(batchNorm?.op, "CxrBatchNormMoments", conv.name);
          // The BatchNorm's input as the BatchNorm reads it (its cut), gamma, beta and statistics
          // as its gradient reads them.
          assert.deepEqual(
            [conv.inputs[0], ...conv.inputs.slice(2)],
            [batchNorm.inputs[0], ...own.inputs.slice(2, 6)],
            conv.name,
          );
          // Nothing else reads it as a whole: no copy in the backward pass either.
          assert.equal(nodes.find((n) => n.name === `grad/recompute/${batchNorm.name}`), undefined);
        }
        // Its filter gradient reads the BatchNorm's input and batch statistics, as the
        // BatchNorm's own gradient does (the forward pass keeps them); its input gradient does not
        // read the input at all, so the chain of input gradients never waits for a recomputation.
        const filter = nodes.find((n) => n.name === `grad/${conv.name}/filter`);
        assert.equal(filter?.op, "CxrDepthwiseConvFilterGradOfBatchNorm", conv.name);
        assert.deepEqual(
          [filter.inputs[1], ...filter.inputs.slice(5, 7)],
          [own.inputs[1], ...stats],
          conv.name,
        );
        const input = nodes.find((n) => n.name === `grad/${conv.name}/input`);
        assert.equal(input?.op, "CxrDepthwiseConvInputGrad", conv.name);
        assert.ok(!input.inputs.some((i) => /recompute/.test(i)), `${input.name}: ${input.inputs}`);
      }
      // The kernel gradient of every pointwise convolution (1×1, no bias: all 30 but the squeeze-
      // excite ones) is one matrix product, and it is what the optimizer applies.
      const products = nodes.filter((n) =>
        n.op === "MatMul" && n.name.endsWith(POINTWISE_KERNEL_PRODUCT)
      );
      assert.equal(products.length, 30, `${convention}: pointwise kernel gradients`);
      for (const product of products) {
        const gradient = product.name.replace(/\/product$/, "");
        assert.ok(
          nodes.some((n) => n.name.startsWith("opt/") && n.inputs.includes(gradient)),
          `${gradient} feeds the optimizer`,
        );
        // Its input gradient is a matrix product of dy and the kernel, shaped as dy: it reads
        // neither the recomputed input nor its shape, so the chain of input gradients does not
        // wait, and no Transpose runs for it.
        const input = nodes.find((n) => n.name === gradient.replace(/\/kernel$/, "/input"));
        assert.equal(input?.op, "Reshape", gradient);
        const inputProduct = nodes.find((n) => n.name === input.inputs[0]);
        assert.equal(inputProduct?.op, "MatMul", input.name);
        assert.ok(inputProduct.name.endsWith(POINTWISE_INPUT_PRODUCT), inputProduct.name);
        const reads = (n: { inputs: string[] }): string[] =>
          n.inputs.flatMap((i) => {
            const node = nodes.find((m) => m.name === i.replace(/:\d+$/, ""));
            return node && node.name.startsWith(input.name) ? [i, ...reads(node)] : [i];
          });
        const all = reads(input);
        assert.ok(!all.some((i) => /recompute/.test(i)), `${input.name} reads ${all}`);
        assert.ok(!nodes.some((n) => n.op === "Transpose" && n.name.startsWith(input.name)));
      }
      // Squeeze-excite (eight blocks): the gate's gradient is one pass (CxrChannelDot) over dy
      // and the recomputed input, and no Mean is computed again for the poolings' gradients.
      // The scaled BatchNorm output's gradient (dy · gate + the pooling's spread) is never
      // written out: the BatchNorm's gradient op takes dy, the gate and the pooled gradient.
      const gates = nodes.filter((n) => n.op === "CxrChannelDot");
      assert.equal(gates.length, 8, `${convention}: squeeze-excite gate gradients`);
      const node = (name: string) => nodes.find((n) => n.name === name.replace(/:0$/, ""));
      for (const gate of gates) {
        const scaling = node(gate.name.replace(/^grad\//, "").replace(/\/gate$/, ""));
        assert.equal(scaling?.op, "Mul", gate.name);
        assert.match(gate.inputs[1], /^grad\/recompute\/model\/.*_bn$/, gate.name);
        assert.equal(node(`grad/${scaling.name}/input`), undefined, gate.name);
        // The scaling's inputs are cuts (Identity) of the BatchNorm output and of the gate.
        const [bn, gateValue] = [0, 1].map((j) => node(node(scaling.inputs[j])!.inputs[0])!);
        const [scaled, gateCut] = bn.op === "CxrBatchNormAct"
          ? [bn, scaling.inputs[1]]
          : [gateValue, scaling.inputs[0]];
        assert.equal(scaled.op, "CxrBatchNormAct", scaling.name);
        const own = node(`grad/${scaled.name}`);
        assert.equal(own?.op, "CxrBatchNormActGradScaled", scaled.name);
        assert.equal(own.inputs[0], gate.inputs[0], `${own.name}: the scaling's gradient`);
        assert.equal(own.inputs[6], gateCut, `${own.name}: the gate`);
        const pooling = nodes.find((n) =>
          n.op === "Mean" && n.inputs.some((i) => node(i)?.inputs[0] === scaled.name)
        )!;
        assert.ok(pooling, scaled.name);
        // The pooled gradient [B, C] as TensorFlow's gradient of the step after the pooling
        // gives it, not spread out into a Tile.
        assert.match(own.inputs[7], /^grad\/\d+\//, `${own.name} after ${pooling.name}`);
      }
      assert.equal(nodes.filter((n) => n.op === "CxrBatchNormActGradScaled").length, 8);
      assert.deepEqual(nodes.filter((n) => n.op === "Mean" && n.name.startsWith("grad/")), []);
      // The only spread written out is the final pooling's (its input feeds nothing else).
      assert.deepEqual(
        nodes.filter((n) => n.op === "Tile" && n.name.startsWith("grad/model/")).map((n) => n.name),
        ["grad/model/avg_pool/input"],
      );
    }
  },
});

Deno.test({
  name:
    "kernels: CxrHardSwish computes the hard-swish TensorFlow's four ops compute, at the kinks, in place and on a tensor split between threads",
  ignore: !native,
  fn: () => {
    assert.equal(chooseKernels("fused").kind, "fused", "setup builds the fused kernels");
    const rng = Rng.stream(7, "hard-swish");
    // The kinks (±3), zero, both flat ends, and a size that is not a multiple of the vectors nor
    // small: over 512 K values, split between two threads (on 2 or more cores).
    const values = Float32Array.from([-3, 3, 0, -6, 6, -3.0000002, 2.9999998, 1e-30]);
    const x = new Float32Array(values.length + 600_001);
    x.set(values);
    for (let i = values.length; i < x.length; i++) x[i] = rng.uniform(-8, 8);
    const g = new GraphWriter();
    g.placeholder("x", [x.length]);
    emitActivation(g, "standard", "x", "hard_swish");
    g.node("fused", "CxrHardSwish", ["x"], {});
    const session = new GraphSession();
    try {
      session.import(g.bytes());
      session.start();
      const [standard, fused] = session.run(
        [[session.output("x"), { values: x, shape: [x.length] }]],
        [session.output("standard"), session.output("fused")],
      );
      assert.ok(
        relativeError(standard, fused) <= 1e-6,
        `differs by ${relativeError(standard, fused)}`,
      );
      assert.deepEqual(Array.from(fused.values.slice(0, 5)), [-0, 3, 0, -0, 6]);
    } finally {
      session.close();
    }
  },
});

Deno.test({
  name:
    "kernels: CxrScaleShift gives the bits of TensorFlow's Mul and AddV2 per channel (3, 8 and 13 channels; a tensor split between threads)",
  ignore: !native,
  fn: () => {
    assert.equal(chooseKernels("fused").kind, "fused", "setup builds the fused kernels");
    const rng = Rng.stream(8, "scale-shift");
    // 3 channels (the input's normalisation) over 200,001 positions: more than 256 K values, so
    // two threads on two cores, and not a whole number of the kernel's 24-value periods.
    for (const [channels, positions] of [[3, 200_001], [8, 5], [13, 77]]) {
      const x = Float32Array.from({ length: channels * positions }, () => rng.uniform(0, 255));
      const scale = Float32Array.from({ length: channels }, () => rng.uniform(0.001, 0.05));
      const shift = Float32Array.from({ length: channels }, () => rng.uniform(-3, 1));
      const g = new GraphWriter();
      g.placeholder("x", [positions, channels]);
      g.floatConst("scale", [channels], scale);
      g.floatConst("shift", [channels], shift);
      g.op("standard", "AddV2", [g.op("product", "Mul", ["x", "scale"]), "shift"]);
      g.node("fused", "CxrScaleShift", ["x", "scale", "shift"], {});
      const session = new GraphSession();
      try {
        session.import(g.bytes());
        session.start();
        const [standard, fused] = session.run(
          [[session.output("x"), { values: x, shape: [positions, channels] }]],
          [session.output("standard"), session.output("fused")],
        );
        assert.deepEqual(fused.shape, [positions, channels]);
        const differing = standard.values.findIndex((v, i) => !Object.is(v, fused.values[i]));
        assert.equal(differing, -1, `${channels} channels: value ${differing} differs`);
        // And what it computes: the last value's channel is (n - 1) % C.
        const last = x.length - 1, c = last % channels;
        assert.equal(fused.values[last], Math.fround(Math.fround(x[last] * scale[c]) + shift[c]));
      } finally {
        session.close();
      }
    }
  },
});

Deno.test({
  name:
    "kernels: CxrChannelDot gives the sums over H and W of TensorFlow's Mul of two tensors to 1e-5 (odd shapes, batch 1, a tensor split between threads), and refuses tensors of two shapes",
  ignore: !native,
  fn: () => {
    assert.equal(chooseKernels("fused").kind, "fused", "setup builds the fused kernels");
    const rng = Rng.stream(9, "channel-dot");
    // The last: 2 × 160 × 161 × 40 = 2.06 M values, two parts on two or more cores.
    for (const [b, h, w, c] of [[1, 5, 7, 3], [3, 9, 11, 13], [2, 1, 1, 8], [2, 160, 161, 40]]) {
      const x = Float32Array.from({ length: b * h * w * c }, () => rng.uniform(-4, 4));
      const dy = Float32Array.from({ length: x.length }, () => rng.uniform(-1, 1));
      const g = new GraphWriter();
      g.placeholder("x", [b, h, w, c]);
      g.placeholder("dy", [b, h, w, c]);
      const product = g.op("product", "Mul", ["dy", "x"]);
      g.op("standard_sums", "Sum", [product, g.intConst("axes", [2], [1, 2])], {
        Tidx: { type: DT_INT32 },
        keep_dims: { b: true },
      });
      g.node("fused_sums", "CxrChannelDot", ["dy", "x"], {});
      const session = new GraphSession();
      try {
        session.import(g.bytes());
        session.start();
        const [standardSums, fusedSums] = session.run(
          [
            [session.output("x"), { values: x, shape: [b, h, w, c] }],
            [session.output("dy"), { values: dy, shape: [b, h, w, c] }],
          ],
          ["standard_sums", "fused_sums"].map((n) => session.output(n)),
        );
        const shape = `[${b}, ${h}, ${w}, ${c}]`;
        assert.deepEqual(fusedSums.shape, [b, 1, 1, c]);
        assert.ok(relativeError(standardSums, fusedSums) <= 1e-5, `${shape}: sums`);
        // The first image's first channel, summed here in double.
        let first = 0;
        for (let i = 0; i < h * w; i++) first += Math.fround(dy[i * c] * x[i * c]);
        assert.ok(Math.abs(fusedSums.values[0] - first) <= 1e-5 * Math.max(1, Math.abs(first)));
      } finally {
        session.close();
      }
    }
    // Tensors of two shapes are refused with a message naming the op.
    const g = new GraphWriter();
    g.placeholder("x", [2, 3, 3, 4]);
    g.placeholder("b", [2, 3, 1, 4]);
    g.node("fused", "CxrChannelDot", ["x", "b"], {});
    assertRunRefused(
      g,
      [
        ["x", { values: new Float32Array(72), shape: [2, 3, 3, 4] }],
        ["b", { values: new Float32Array(24), shape: [2, 3, 1, 4] }],
      ],
      "fused",
      /CxrChannelDot: a and b must be \[B, H, W, C\] both/,
    );
  },
});

Deno.test({
  name:
    "kernels: the fused inference graph has oneDNN's fused convolutions: bias and hard-swish or ReLU in the convolution, where nothing else reads its output (and no hard-swish fused where oneDNN is off)",
  ignore: !native,
  fn: () => {
    assert.equal(chooseKernels("fused").kind, "fused", "setup builds the fused kernels");
    for (const convention of ["torchvision", "keras"] as const) {
      const model = make(convention);
      const pairs = convolutionsBeforeHardSwish(
        planModel(model, "inference", { fusedKernels: true }),
      );
      const nodes = graphNodes(inferenceGraph(model, true));
      const byName = new Map(nodes.map((n) => [n.name, n]));
      const fused = nodes.filter((n) => n.op === "_FusedConv2D");
      const hardSwish = fused.filter((n) => n.attrs.includes("_FusedHardSwish"));
      // MobileNetV3-Large: the stem, the nine hard-swish blocks' expansions and the last 1×1
      // convolution; the ReLU blocks' expansions (five: the first block has none) take their ReLU
      // inside.
      assert.equal(pairs.length, 11, convention);
      assert.deepEqual(
        hardSwish.map((n) => n.name).sort(),
        pairs.map((p) => `model/${p.hardSwish.name}`).sort(),
        convention,
      );
      assert.equal(fused.length - hardSwish.length, 5, `${convention}: ReLU convolutions`);
      assert.ok(fused.every((n) => n.attrs.includes("BiasAdd")), convention);
      // No convolution's output goes through an activation op of its own any more, and no step's
      // node is missing: each fused pair's convolution has no node, its hard-swish is the fusion.
      for (const n of nodes.filter((n) => ["Relu", "CxrHardSwish"].includes(n.op))) {
        assert.notEqual(byName.get(n.inputs[0])?.op, "Conv2D", `${convention}: ${n.name}`);
      }
      for (const { conv } of pairs) assert.ok(!byName.has(`model/${conv.name}`), conv.name);
      // Where oneDNN does not run, TensorFlow's own _FusedConv2D has no hard-swish: none fused.
      const plain = withEnv(
        { TF_ENABLE_ONEDNN_OPTS: "0" },
        () => graphNodes(inferenceGraph(model, true)),
      );
      assert.ok(!plain.some((n) => n.attrs.includes("_FusedHardSwish")), convention);
      assert.equal(plain.filter((n) => n.op === "_FusedConv2D").length, 5, convention);
      model.dispose();
    }
  },
});

Deno.test({
  name:
    "kernels: the graph predictor with the fused hard-swish gives TensorFlow's predictions (both conventions) and says which kernels ran",
  ignore: !native,
  fn: () => {
    for (const convention of ["torchvision", "keras"] as const) {
      const model = make(convention);
      const x = tf.randomUniform([3, 64, 64, 3], 0, 255, "float32", 11) as tf.Tensor4D;
      const [fused, standard] = (["fused", "standard"] as const).map((kernels) => {
        const p = createPredictor(model, { engine: "graph", kernels });
        assert.equal(p.kernels?.kind, kernels);
        const y = p.predict(x);
        const out = { values: y.dataSync() as Float32Array, shape: y.shape };
        y.dispose();
        p.dispose();
        return out;
      });
      assert.ok(
        relativeError(standard, fused) <= 1e-5,
        `${convention}: ${relativeError(standard, fused)}`,
      );
      x.dispose();
      model.dispose();
    }
  },
});
