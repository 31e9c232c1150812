import assert from "node:assert/strict";
import {
  createPredictor,
  createStepEngine,
  initBackend,
  liveSessions,
  PlanError,
  planModel,
  tf,
} from "../../lib/mod.ts";
import { BatchNorm } from "../../lib/model/layers.ts";
import { SMALL, small, smallForTraining } from "../_models.ts";

await initBackend();

/** conv → BatchNorm → `activation` → dense: the shape of a MobileNetV3 layer, tiny. */
function tinyModel(activation: () => tf.layers.Layer): tf.LayersModel {
  const input = tf.input({ shape: [8, 8, 3], name: "input" });
  let x = tf.layers.conv2d({
    filters: 4,
    kernelSize: 3,
    padding: "same",
    useBias: false,
    kernelInitializer: tf.initializers.glorotUniform({ seed: 1 }),
    name: "conv",
  }).apply(input) as tf.SymbolicTensor;
  x = new BatchNorm({ name: "conv_bn" }).apply(x) as tf.SymbolicTensor;
  x = activation().apply(x) as tf.SymbolicTensor;
  x = tf.layers.globalAveragePooling2d({ name: "pool" }).apply(x) as tf.SymbolicTensor;
  const out = tf.layers.dense({
    units: 2,
    kernelInitializer: tf.initializers.glorotUniform({ seed: 2 }),
    name: "logits",
  }).apply(x) as tf.SymbolicTensor;
  return tf.model({ inputs: input, outputs: out });
}

async function values(t: tf.Tensor): Promise<number[]> {
  const v = Array.from(await t.data());
  t.dispose();
  return v;
}

Deno.test("plan: a ReLU layer and an Activation('relu') layer are the same step, fused into the convolution on every engine", async () => {
  const forms = {
    reLU: () => tf.layers.reLU({ name: "act" }),
    activation: () => tf.layers.activation({ activation: "relu", name: "act" }),
  };
  const x = tf.randomUniform([2, 8, 8, 3], 0, 255, "float32", 3) as tf.Tensor4D;
  const results: Record<string, number[]> = {};
  for (const [form, make] of Object.entries(forms)) {
    const model = tinyModel(make);
    const plan = planModel(model, "inference");
    // BatchNorm folded and the ReLU fused: conv, pool, dense.
    assert.deepEqual(plan.steps.map((s) => s.op.kind), ["conv", "globalMean", "dense"], form);
    assert.ok(plan.steps[0].op.kind === "conv" && plan.steps[0].op.relu, `${form}: relu fused`);
    const reference = await values(model.predict(x) as tf.Tensor);
    for (const engine of ["eager", "graph"] as const) {
      const p = createPredictor(model, { engine });
      const ours = await values(p.predict(x));
      p.dispose();
      reference.forEach((v, i) => assert.ok(Math.abs(v - ours[i]) < 1e-4, `${form} ${engine}`));
    }
    results[form] = reference;
    model.dispose();
  }
  assert.deepEqual(results.reLU, results.activation, "the two forms compute the same function");
  x.dispose();
});

Deno.test("plan: a layer kind without a rule fails at plan time, naming the layer and its class, on every engine", async () => {
  const model = tinyModel(() => tf.layers.leakyReLU({ name: "leaky" }));
  const message = /Cannot plan layer "leaky" \(LeakyReLU\): no rule for this layer kind/;
  assert.throws(() => planModel(model, "inference"), message);
  assert.throws(() => planModel(model, "training"), message);
  assert.throws(() => createPredictor(model, { engine: "eager" }), PlanError);
  assert.throws(() => createPredictor(model, { engine: "graph" }), message);
  const sessions = liveSessions();
  await assert.rejects(
    createStepEngine(model, { learningRate: 0.1, momentum: 0.9, numClasses: 2, engine: "graph" }),
    message,
  );
  assert.equal(liveSessions(), sessions);
  model.dispose();
});

Deno.test("plan: MobileNetV3's inference plan folds every BatchNorm; its training plan keeps them and the dropout", () => {
  const model = small(3, 1);
  const inference = planModel(model, "inference");
  const training = planModel(model, "training");
  const kinds = (p: typeof inference) => new Set(p.steps.map((s) => s.op.kind));
  const batchNorms = model.layers.filter((l) => l.getClassName() === "BatchNorm").length;
  assert.ok(!kinds(inference).has("batchNorm") && !kinds(inference).has("scaleShift"));
  assert.ok(!kinds(inference).has("dropout"));
  assert.equal(training.steps.filter((s) => s.op.kind === "batchNorm").length, batchNorms);
  assert.equal(training.steps.filter((s) => s.op.kind === "dropout").length, 1);
  // Every model weight appears in the training plan exactly once (as a variable).
  const used = training.steps.flatMap((s) =>
    Object.values(s.op).filter((v) => v && typeof v === "object" && "modelIndex" in v)
      .map((v) => (v as { modelIndex: number }).modelIndex)
  ).sort((a, b) => a - b);
  assert.deepEqual(used, model.weights.map((_, i) => i));
  assert.equal(inference.outputUnits, 3);
  model.dispose();
});

Deno.test("plan: exactly squeeze-excite's 1×1 convolutions of the pooled vector are planned as matrix products, in both flavours", () => {
  const model = small(3, 1);
  const seConvs = model.layers.filter((l) => /squeeze_excite_conv/.test(l.name)).map((l) => l.name);
  assert.equal(
    seConvs.length,
    16,
    "MobileNetV3-Large: 8 squeeze-excite blocks, two convolutions each",
  );
  for (const flavour of ["inference", "training"] as const) {
    const convs = planModel(model, flavour).steps.filter((s) => s.op.kind === "conv");
    const pooled = convs.filter((s) => s.op.kind === "conv" && s.op.pooled).map((s) => s.name);
    assert.deepEqual(pooled, seConvs, flavour);
    assert.ok(convs.length > pooled.length, `${flavour}: the other convolutions stay convolutions`);
    // Its ten residual sums add tensors of one shape (their gradient is passed on as it is).
    const adds = planModel(model, flavour).steps.filter((s) => s.op.kind === "add");
    assert.equal(adds.length, 10, flavour);
    assert.ok(adds.every((s) => s.op.kind === "add" && s.op.sameShapes), flavour);
    // Each block's scaling by its gate is marked so (the gate, a [B, 1, 1, C] input, is the
    // second), and every pooling knows its input's height and width (their gradients).
    const steps = planModel(model, flavour).steps;
    const scalings = steps.flatMap((s) => s.op.kind === "mul" ? [s.op.perChannel] : []);
    assert.deepEqual(scalings, Array(8).fill(1), flavour);
    const sizes = steps.flatMap((s) => s.op.kind === "globalMean" ? [s.op.size] : []);
    assert.equal(sizes.length, 9, flavour);
    const last = Math.ceil(SMALL / 32);
    assert.deepEqual(sizes.at(-1), [last, last], `${flavour}: the last pooling, ${SMALL} px in`);
  }
  model.dispose();
});

Deno.test("plan: a product of two full tensors is not marked as a scaling by a gate", () => {
  const input = tf.input({ shape: [4, 4, 3], name: "input" });
  const pooled = tf.layers.globalAveragePooling2d({ name: "pool" }).apply(input);
  const gate = tf.layers.reshape({ targetShape: [1, 1, 3], name: "gate" }).apply(pooled);
  const squared = tf.layers.multiply({ name: "squared" })
    .apply([input, input] as tf.SymbolicTensor[]);
  const scaled = tf.layers.multiply({ name: "scaled" })
    .apply([gate, squared] as tf.SymbolicTensor[]) as tf.SymbolicTensor;
  const model = tf.model({ inputs: input, outputs: scaled });
  const marks = planModel(model, "training").steps.flatMap((s) =>
    s.op.kind === "mul" ? [`${s.name}:${s.op.perChannel}`] : []
  );
  assert.deepEqual(marks, ["squared:undefined", "scaled:0"]);
  model.dispose();
});

Deno.test("plan: an add that broadcasts is not marked as one of same shapes", () => {
  const input = tf.input({ shape: [4, 4, 3], name: "input" });
  const pooled = tf.layers.globalAveragePooling2d({ name: "pool" }).apply(input);
  const gate = tf.layers.reshape({ targetShape: [1, 1, 3], name: "gate" }).apply(pooled);
  const same = tf.layers.add({ name: "same" }).apply([input, input] as tf.SymbolicTensor[]);
  const broadcast = tf.layers.add({ name: "broadcast" })
    .apply([same, gate] as tf.SymbolicTensor[]) as tf.SymbolicTensor;
  const model = tf.model({ inputs: input, outputs: broadcast });
  const marks = planModel(model, "training").steps.flatMap((s) =>
    s.op.kind === "add" ? [`${s.name}:${s.op.sameShapes}`] : []
  );
  assert.deepEqual(marks, ["same:true", "broadcast:false"]);
  model.dispose();
});

Deno.test("plan: with the fused kernels a depthwise convolution takes its padding inside (Keras's uneven stride-2 padding, torchvision's even one, 'same'), in inference its BatchNorm and activation too; one the kernel cannot compute stays as it was", () => {
  for (const convention of ["keras", "torchvision"] as const) {
    const model = smallForTraining(convention);
    const fused = planModel(model, "training", { fusedKernels: true });
    const standard = planModel(model, "training");
    const depthwise = fused.steps.flatMap((s) => s.op.kind === "depthwise" ? [{ ...s.op, s }] : []);
    assert.equal(depthwise.length, 15);
    assert.equal(standard.steps.filter((s) => s.op.kind === "depthwise").length, 0);
    // No ZeroPadding2D step is left but torchvision's on the input image.
    assert.deepEqual(
      fused.steps.filter((s) => s.op.kind === "pad").map((s) => s.name),
      convention === "torchvision" ? ["conv_pad"] : [],
    );
    for (const op of depthwise) {
      const layer = model.getLayer(op.s.name) as unknown as { kernelSize: number[] };
      const k = layer.kernelSize[0];
      const half = (k - 1) / 2;
      const expected = op.stride === 1 || convention === "torchvision"
        ? [[half, half], [half, half]]
        : [[half - 1, half], [half - 1, half]]; // Keras's correct_pad
      assert.deepEqual(op.padding, expected, op.s.name);
      // It reads the BatchNorm before the padding (the padding layer is gone).
      assert.match(op.s.inputs[0], /_bn$/, op.s.name);
    }
    // Inference: the BatchNorm folded in and the activation after it absorbed (MobileNetV3-Large:
    // blocks 0-5 ReLU, 6-14 hard-swish), the padding inside as in training.
    const inference = planModel(model, "inference", { fusedKernels: true }).steps
      .flatMap((s) => s.op.kind === "depthwise" ? [s.op] : []);
    assert.deepEqual(
      inference.map((op) => op.activation),
      [...Array(6).fill("relu"), ...Array(9).fill("hard_swish")],
    );
    assert.ok(inference.every((op) => op.bias !== undefined));
    assert.deepEqual(inference.map((op) => op.padding), depthwise.map((op) => op.padding));
    assert.equal(
      planModel(model, "inference").steps.filter((s) => s.op.kind === "depthwise").length,
      0,
    );
    // Every weight is still used exactly once.
    const used = fused.steps.flatMap((s) =>
      Object.values(s.op).filter((v) => v && typeof v === "object" && "modelIndex" in v)
        .map((v) => (v as { modelIndex: number }).modelIndex)
    ).sort((a, b) => a - b);
    assert.deepEqual(used, model.weights.map((_, i) => i));
    model.dispose();
  }
  // Fewer channels than the kernel's vector width, or a bias: the standard convolution (and pad).
  const input = tf.input({ shape: [8, 8, 4], name: "input" });
  let x = tf.layers.zeroPadding2d({ padding: [[0, 1], [0, 1]], name: "pad" }).apply(input);
  x = tf.layers.depthwiseConv2d({
    kernelSize: 3,
    strides: 2,
    padding: "valid",
    useBias: false,
    name: "narrow",
  }).apply(x);
  x = tf.layers.conv2d({ filters: 8, kernelSize: 1, name: "widen" }).apply(x);
  x = tf.layers.depthwiseConv2d({ kernelSize: 3, padding: "same", useBias: true, name: "biased" })
    .apply(x);
  const model = tf.model({ inputs: input, outputs: x as tf.SymbolicTensor });
  const kinds = planModel(model, "training", { fusedKernels: true }).steps.map((s) =>
    `${s.name}:${s.op.kind}`
  );
  assert.deepEqual(kinds, ["pad:pad", "narrow:conv", "widen:conv", "biased:conv"]);
  model.dispose();
});
