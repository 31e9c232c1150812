import assert from "node:assert/strict";
import {
  buildMobileNetV3Large,
  graphStepEngine,
  initBackend,
  KERAS_NORMALIZATION,
  modelCost,
  opKind,
  POINTWISE_INPUT_PRODUCT,
  POINTWISE_KERNEL_PRODUCT,
  profileByKind,
  readStepStats,
  tf,
  topOps,
} from "../../lib/mod.ts";
import { bytesField, concat, intField, stringField } from "../../lib/engine/protobuf.ts";
import { pixels, small } from "../_models.ts";

await initBackend();

/** A RunMetadata with one device and these ops (field numbers of TensorFlow's step_stats.proto). */
function runMetadata(ops: { node: string; op: string; start: number; micros: number }[]) {
  const nodeStats = ops.map((o) =>
    bytesField(2, [
      stringField(1, o.node),
      stringField(8, `${o.node} = ${o.op}(a, b)`),
      intField(13, o.start * 1000), // all_start_nanos
      intField(14, 0), // op_start_rel_nanos
      intField(15, o.micros * 1000), // op_end_rel_nanos
      intField(10, 7),
    ])
  );
  const device = bytesField(1, [stringField(1, "/job:localhost/device:CPU:0"), ...nodeStats]);
  return concat(bytesField(1, [device])); // RunMetadata.step_stats
}

Deno.test("profile: step stats are read from a RunMetadata: op types from the timeline labels, kernel times from the nanoseconds", () => {
  const ops = readStepStats(runMetadata([
    { node: "conv1/Conv2D", op: "_MklNativeConv2D", start: 1000, micros: 250 },
    {
      node: "grad/conv1/Conv2D_grad",
      op: "_MklNativeConv2DBackpropFilter",
      start: 1300,
      micros: 500,
    },
    { node: "opt/apply/3", op: "ResourceApplyMomentum", start: 1900, micros: 10 },
  ]));
  assert.deepEqual(ops.map((o) => [o.op, o.micros, o.startMicros, o.thread]), [
    ["_MklNativeConv2D", 250, 0, 7],
    ["_MklNativeConv2DBackpropFilter", 500, 300, 7],
    ["ResourceApplyMomentum", 10, 900, 7],
  ]);
  const [conv] = profileByKind([ops]);
  assert.deepEqual(
    [conv.kind, conv.ms, conv.forwardMs, conv.backwardMs, conv.ops],
    ["pointwise / full convolution", 0.75, 0.25, 0.5, 2],
  );
  assert.deepEqual(topOps([ops], 1), [{ op: "_MklNativeConv2DBackpropFilter", ms: 0.5, calls: 1 }]);
});

Deno.test("profile: ops are sorted into kinds of work by their type, oneDNN's names included", () => {
  const kinds = {
    "_MklNativeDepthwiseConv2dNativeBackpropFilter": "depthwise convolution",
    "DepthwiseConv2dNative": "depthwise convolution",
    "_MklNativeFusedConv2D": "pointwise / full convolution",
    "_MklNativeFusedBatchNormGradV3": "batch norm",
    "Relu6Grad": "element-wise (activations, hard-swish, SE gates, loss)",
    "Mul": "element-wise (activations, hard-swish, SE gates, loss)",
    "Mean": "reductions and broadcasts (SE pooling and gates, bias gradients)",
    "CxrChannelDot": "reductions and broadcasts (SE pooling and gates, bias gradients)",
    "CxrDepthwiseConvFilterGradOfBatchNorm": "depthwise convolution",
    "CxrDepthwiseConvOfBatchNorm": "depthwise convolution",
    "CxrBatchNormMoments": "batch norm",
    "CxrBatchNormActGradScaled": "batch norm",
    "Transpose": "layout, copies and padding",
    "ResourceApplyMomentum": "optimizer and variables",
    "MatMul": "dense (classifier, squeeze-excite)",
  };
  for (const [op, kind] of Object.entries(kinds)) assert.equal(opKind(op), kind, op);
  // A pointwise convolution's kernel gradient is a matrix product (graph_train.ts), by its name.
  assert.equal(
    opKind("_MklMatMul", `grad/model/expanded_conv_1_expand${POINTWISE_KERNEL_PRODUCT}`),
    "pointwise / full convolution",
  );
  assert.equal(
    opKind("_MklMatMul", `grad/model/expanded_conv_1_expand${POINTWISE_INPUT_PRODUCT}`),
    "pointwise / full convolution",
  );
  assert.equal(opKind("_MklMatMul", "model/Logits"), "dense (classifier, squeeze-excite)");
});

Deno.test({
  name: "profile: a traced graph step reports its convolutions, BatchNorm, gradients and update",
  ignore: tf.getBackend() !== "tensorflow",
  fn: async () => {
    const model = small();
    const x = pixels();
    const labels = tf.tensor1d([0, 2], "int32");
    const engine = graphStepEngine(model, { learningRate: 0.01, momentum: 0.9, numClasses: 3 });
    try {
      const { loss, metadata } = await engine.traceStep(x, labels, 0);
      assert.ok(Number.isFinite(loss));
      const ops = readStepStats(metadata);
      const kinds = new Map(profileByKind([ops]).map((r) => [r.kind, r]));
      for (
        const kind of [
          "pointwise / full convolution",
          "depthwise convolution",
          "batch norm",
          "optimizer and variables",
        ]
      ) assert.ok(kinds.get(kind)?.ms! > 0, `${kind} in ${[...kinds.keys()]}`);
      assert.ok(kinds.get("depthwise convolution")!.backwardMs > 0, "gradients are traced");
      // The update runs one ResourceApplyMomentum per trainable weight.
      const updates = ops.filter((o) => o.op === "ResourceApplyMomentum").length;
      assert.equal(updates, model.trainableWeights.length);
    } finally {
      engine.dispose();
      tf.dispose([x, labels]);
      model.dispose();
    }
  },
});

Deno.test("profile: multiply-adds and activations are counted from the layers", () => {
  const model = tf.sequential({
    layers: [
      tf.layers.conv2d({ inputShape: [8, 8, 3], filters: 4, kernelSize: 3, padding: "same" }),
      tf.layers.depthwiseConv2d({ kernelSize: 3, padding: "same" }),
      tf.layers.flatten(),
      tf.layers.dense({ units: 2 }),
    ],
  });
  const cost = modelCost(model);
  assert.deepEqual(cost.macs, {
    pointwise: 8 * 8 * 4 * 3 * 3 * 3, // output pixels × filters × kernel × input channels
    depthwise: 8 * 8 * 4 * 3 * 3,
    dense: 2 * 256,
  });
  assert.equal(cost.activations, 256 + 256 + 256 + 2);
  assert.equal(cost.parameters, model.countParams());
  model.dispose();
  // MobileNetV3-Large at 224 px, 1000 classes: 219 M multiply-adds in Howard et al. 2019 (Table 3;
  // they also count the SE and activation arithmetic, left out here).
  const large = buildMobileNetV3Large({
    imageSize: 224,
    numClasses: 1000,
    normalization: KERAS_NORMALIZATION,
    convention: "keras",
    seed: 1,
  });
  const m = modelCost(large).macs;
  const total = (m.pointwise + m.depthwise + m.dense) / 1e6;
  assert.ok(total > 210 && total < 219, `${total} M`);
  large.dispose();
});
