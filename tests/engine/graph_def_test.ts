import assert from "node:assert/strict";
import { createPredictor, initBackend, planModel, tf } from "../../lib/mod.ts";
import { BatchNorm, HardSigmoid, HardSwish, Normalize } from "../../lib/model/layers.ts";
import { KERAS_NORMALIZATION } from "../../lib/model/normalization.ts";

await initBackend();

/** One model that uses every op kind of the inference flavour. */
function everyOp(): tf.LayersModel {
  const seed = (s: number) => tf.initializers.glorotUniform({ seed: s });
  const input = tf.input({ shape: [9, 9, 3], name: "input" });
  const norm = new Normalize({ ...KERAS_NORMALIZATION, name: "normalize" }).apply(input);
  const padded = tf.layers.zeroPadding2d({ padding: [[0, 1], [0, 1]], name: "pad" }).apply(norm);
  const conv = tf.layers.conv2d({
    filters: 4,
    kernelSize: 3,
    strides: 2,
    padding: "valid",
    useBias: true,
    kernelInitializer: seed(1),
    biasInitializer: tf.initializers.constant({ value: 0.1 }),
    name: "conv",
  }).apply(padded) as tf.SymbolicTensor;
  const relu = tf.layers.reLU({ name: "relu" }).apply(conv);
  const dw = tf.layers.depthwiseConv2d({
    kernelSize: 3,
    padding: "same",
    useBias: false,
    depthwiseInitializer: seed(2),
    name: "dw",
  }).apply(relu);
  const bn = new BatchNorm({ name: "dw_bn" }).apply(dw);
  const swish = new HardSwish({ name: "hswish" }).apply(bn);
  const relu6 = tf.layers.reLU({ maxValue: 6, name: "relu6" }).apply(swish);
  const sum = tf.layers.add({ name: "add" }).apply([
    relu6 as tf.SymbolicTensor,
    relu as tf.SymbolicTensor,
  ]);
  // A BatchNorm after an add (no convolution to fold into): a scale-and-shift step.
  const bn2 = new BatchNorm({ name: "add_bn" }).apply(sum) as tf.SymbolicTensor;
  const pooled = tf.layers.globalAveragePooling2d({ name: "pool" }).apply(bn2);
  const reshaped = tf.layers.reshape({ targetShape: [1, 1, 4], name: "reshape" }).apply(pooled);
  // Squeeze-excite's two 1×1 convolutions of the pooled vector (planned `pooled`).
  const squeeze = tf.layers.conv2d({
    filters: 2,
    kernelSize: 1,
    useBias: true,
    activation: "relu",
    kernelInitializer: seed(4),
    biasInitializer: tf.initializers.constant({ value: 0.2 }),
    name: "squeeze",
  }).apply(reshaped);
  const excite = tf.layers.conv2d({
    filters: 4,
    kernelSize: 1,
    useBias: true,
    kernelInitializer: seed(5),
    biasInitializer: tf.initializers.constant({ value: -0.1 }),
    name: "excite",
  }).apply(squeeze);
  const gate = new HardSigmoid({ name: "gate" }).apply(excite);
  const scaled = tf.layers.multiply({ name: "mul" }).apply([bn2, gate as tf.SymbolicTensor]);
  const pooled2 = tf.layers.globalAveragePooling2d({ name: "pool2" }).apply(scaled);
  const out = tf.layers.dense({ units: 3, kernelInitializer: seed(3), name: "logits" })
    .apply(pooled2) as tf.SymbolicTensor;
  return tf.model({ inputs: input, outputs: out });
}

Deno.test("graph_def: every op kind of the inference plan, written as graph nodes, computes what TF.js computes", async () => {
  const model = everyOp();
  const x = tf.randomUniform([2, 9, 9, 3], 0, 255, "float32", 4) as tf.Tensor4D;
  // Non-trivial BatchNorm statistics.
  for (let i = 0; i < 2; i++) tf.tidy(() => model.apply(x, { training: true }) as tf.Tensor);
  const steps = planModel(model, "inference").steps;
  const kinds = new Set(steps.map((s) => s.op.kind));
  const pooled = steps.flatMap((s) => s.op.kind === "conv" ? [`${s.name}:${s.op.pooled}`] : []);
  assert.deepEqual(pooled, ["conv:false", "dw:false", "squeeze:true", "excite:true"]);
  for (
    const k of [
      "normalize",
      "pad",
      "conv",
      "scaleShift",
      "hardSwish",
      "hardSigmoid",
      "relu",
      "add",
      "mul",
      "globalMean",
      "reshape",
      "dense",
    ]
  ) {
    assert.ok(kinds.has(k as never), `the model exercises ${k}`);
  }
  const reference = Array.from((model.predict(x) as tf.Tensor).dataSync());
  for (const engine of ["graph", "eager"] as const) {
    const p = createPredictor(model, { engine });
    const y = p.predict(x);
    const ours = Array.from(await y.data());
    y.dispose();
    p.dispose();
    const scale = Math.max(...reference.map(Math.abs));
    reference.forEach((v, i) =>
      assert.ok(Math.abs(v - ours[i]) <= 1e-5 * scale, `${engine}, output ${i}: ${ours[i]} vs ${v}`)
    );
  }
  x.dispose();
  model.dispose();
});
