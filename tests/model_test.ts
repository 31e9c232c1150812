import assert from "node:assert/strict";
import * as fs from "node:fs";
import * as path from "node:path";
import { initBackend, tf } from "../lib/backend.ts";
import { buildMobileNetV3Large, buildModel, describeArchitecture, LAYER } from "../lib/model.ts";
import {
  imagenetCachePath,
  KERAS_NORMALIZATION,
  loadKerasWeights,
  md5File,
  resolveWeights,
  WeightsError,
} from "../lib/weights.ts";
import { checkParity, PARITY_TOLERANCE } from "../lib/parity.ts";
import { CheckpointError, loadCheckpoint, saveCheckpoint } from "../lib/checkpoint.ts";
import { layersOf, writeLegacyH5 } from "./_h5.ts";

await initBackend();

const PARITY = Deno.env.get("COVID_CXR_PARITY");
const SMALL = 64; // px: the smallest convenient input for MobileNetV3 (5 stride-2 stages)

function small(numClasses = 3, seed = 1) {
  return buildMobileNetV3Large({
    imageSize: SMALL,
    numClasses,
    normalization: KERAS_NORMALIZATION,
    seed,
  });
}

async function outputs(model: tf.LayersModel, x: tf.Tensor): Promise<Float32Array> {
  const y = model.predict(x) as tf.Tensor;
  const data = await y.data() as Float32Array;
  y.dispose();
  return data;
}

const pixels = () => tf.randomUniform([2, SMALL, SMALL, 3], 0, 255, "float32", 7);

Deno.test({
  name: "parity: Keras fixture weights give Keras's logits and conv_2 features at 224 and 446 px",
  // Runs whenever the fixture is given (CI sets COVID_CXR_PARITY); without it there is nothing to compare.
  ignore: !PARITY,
  fn: async () => {
    const results = await checkParity(PARITY!);
    assert.deepEqual(results.map((r) => r.size), [224, 446]);
    for (const r of results) {
      assert.ok(
        r.logitsError <= PARITY_TOLERANCE,
        `${r.size}px logits: relative error ${r.logitsError}`,
      );
      assert.ok(
        r.featuresError <= PARITY_TOLERANCE,
        `${r.size}px features: relative error ${r.featuresError}`,
      );
      assert.ok(
        r.compiledLogitsError <= PARITY_TOLERANCE,
        `${r.size}px compiled predictor: relative error ${r.compiledLogitsError}`,
      );
      // CI runs the native backend, so the one-graph path is checked against Keras there.
      if (tf.getBackend() === "tensorflow") {
        assert.ok(
          r.graphLogitsError !== undefined && r.graphLogitsError <= PARITY_TOLERANCE,
          `${r.size}px graph predictor: relative error ${r.graphLogitsError}`,
        );
      }
      assert.ok(r.logitsAbsMax > 100, "fixture logits should be large (random weights)");
    }
  },
});

Deno.test("parity: the architecture has Keras's 5,507,432 parameters with the 1000-way head", () => {
  const model = buildMobileNetV3Large({
    imageSize: 224,
    numClasses: 1000,
    normalization: KERAS_NORMALIZATION,
  });
  assert.equal(model.countParams(), 5_507_432);
  const rows = describeArchitecture(model);
  assert.equal(rows.length, 1 + 15 + 1 + 1);
  assert.equal(rows.reduce((s, r) => s + r.parameters, 0), 5_507_432);
  assert.deepEqual(rows.slice(1, 16).map((r) => r.kernel), [
    ..."333555333333555".split("").map((k) => `${k}×${k} dw`),
  ]);
  assert.deepEqual(rows.slice(1, 16).map((r) => r.stride), [
    1,
    2,
    1,
    2,
    1,
    1,
    2,
    1,
    1,
    1,
    1,
    1,
    2,
    1,
    1,
  ]);
  assert.equal(rows.at(-1)!.outputShape, "[1000]");
  model.dispose();
});

Deno.test("weights: a legacy .h5 with Keras 2 layer names loads by order and shape, outputs identical", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const source = small(3, 11);
    const file = path.join(dir, "keras2.h5");
    // Keras 2 names ("Conv", "Conv/BatchNorm", ...) differ from ours; loading must not care.
    await writeLegacyH5(
      file,
      layersOf(source, (n) => n.replace(/_bn$/, "/BatchNorm").replace(/^conv/, "Conv")),
    );
    const target = small(3, 99);
    const loaded = await loadKerasWeights(target, file);
    assert.equal(loaded.classifierLoaded, true);
    const x = pixels();
    assert.deepEqual(await outputs(target, x), await outputs(source, x));
    tf.dispose([x]);
    source.dispose();
    target.dispose();
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("weights: the head swap keeps every pretrained layer and starts a new 3-way classifier", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const imagenetLike = small(1000, 5);
    const file = path.join(dir, "pretrained.h5");
    await writeLegacyH5(file, layersOf(imagenetLike));
    const { model, weights, classifierLoaded } = await buildModel({
      weights: file,
      numClasses: 3,
      imageSize: SMALL,
      seed: 3,
    });
    assert.equal(weights.kind, "file");
    assert.equal(classifierLoaded, false);
    const features = (m: tf.LayersModel) => m.getLayer(LAYER.features).getWeights()[0].dataSync();
    assert.deepEqual(features(model), features(imagenetLike));
    assert.deepEqual(model.getLayer(LAYER.logits).getWeights()[0].shape, [1280, 3]);
    // The new classifier is initialised as PyTorch's nn.Linear: U(-1/sqrt(1280), 1/sqrt(1280)).
    const w = model.getLayer(LAYER.logits).getWeights()[0].dataSync();
    assert.ok(Math.max(...w.map(Math.abs)) <= 1 / Math.sqrt(1280));
    model.dispose();
    imagenetLike.dispose();
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("weights: a wrong-shape .h5 stops with the layer, the expected and the found shape", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const model = small();
    const layers = layersOf(model);
    const i = layers.findIndex((l) => l.layer === "expanded_conv_3_depthwise");
    layers[i].weights[0] = {
      ...layers[i].weights[0],
      shape: [3, 3, 72, 1],
      values: new Float32Array(3 * 3 * 72),
    };
    const file = path.join(dir, "wrong.h5");
    await writeLegacyH5(file, layers);
    const before = model.getLayer("conv").getWeights()[0].dataSync().slice();
    await assert.rejects(() => loadKerasWeights(model, file), (e: Error) => {
      assert.ok(e instanceof WeightsError);
      assert.match(e.message, /wrong\.h5/);
      assert.match(
        e.message,
        /"expanded_conv_3_depthwise" expects \[5,5,72,1\], file has \[3,3,72,1\]/,
      );
      return true;
    });
    // A failed load leaves the model as it was.
    assert.deepEqual(model.getLayer("conv").getWeights()[0].dataSync(), before);
    model.dispose();
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("weights: a truncated .h5 and a non-HDF5 file are refused with the file named", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const model = small();
    const file = path.join(dir, "weights.h5");
    await writeLegacyH5(file, layersOf(model));
    fs.truncateSync(file, Math.floor(fs.statSync(file).size / 2));
    await assert.rejects(
      () => loadKerasWeights(model, file),
      /weights\.h5": the file is truncated/,
    );
    const text = path.join(dir, "notes.h5");
    fs.writeFileSync(
      text,
      "these are not weights, just text that is long enough to read a header from",
    );
    await assert.rejects(() => loadKerasWeights(model, text), /notes\.h5": not an HDF5 file/);
    model.dispose();
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("weights: unknown source names the valid choices", async () => {
  await assert.rejects(
    () => resolveWeights("imgnet"),
    /unknown weights "imgnet", valid: "imagenet", "none", or the path/,
  );
});

Deno.test("weights: ImageNet weights offline and not cached fail early with URL, cache path and --weights none", async () => {
  const cache = await Deno.makeTempDir();
  try {
    await assert.rejects(
      () =>
        resolveWeights("imagenet", {
          cacheDir: cache,
          url: "http://127.0.0.1:9/weights.h5",
          quiet: true,
        }),
      (e: Error) => {
        assert.ok(e instanceof WeightsError);
        assert.match(e.message, /http:\/\/127\.0\.0\.1:9\/weights\.h5/);
        assert.ok(e.message.includes(imagenetCachePath(cache)));
        assert.match(e.message, /--weights none/);
        return true;
      },
    );
    assert.ok(!fs.existsSync(imagenetCachePath(cache)), "nothing cached");
  } finally {
    await Deno.remove(cache, { recursive: true });
  }
});

Deno.test("weights: ImageNet download is hash-checked, cached once, and a wrong hash is refused", async () => {
  const dir = await Deno.makeTempDir();
  const model = small(1000);
  const file = path.join(dir, "served.h5");
  await writeLegacyH5(file, layersOf(model));
  model.dispose();
  const md5 = await md5File(file);
  let requests = 0;
  const server = Deno.serve({ port: 0, hostname: "127.0.0.1", onListen: () => {} }, async () => {
    requests++;
    return new Response(await Deno.readFile(file));
  });
  const url = `http://127.0.0.1:${server.addr.port}/weights.h5`;
  try {
    const cache = path.join(dir, "cache");
    const first = await resolveWeights("imagenet", { cacheDir: cache, url, md5, quiet: true });
    assert.equal(first.kind, "imagenet");
    assert.equal(first.file, imagenetCachePath(cache));
    assert.deepEqual(first.normalization, KERAS_NORMALIZATION);
    await resolveWeights("imagenet", { cacheDir: cache, url, md5, quiet: true });
    assert.equal(requests, 1, "second use comes from the cache");

    // A download whose hash is not the published one is not cached.
    const other = path.join(dir, "cache2");
    await assert.rejects(
      () => resolveWeights("imagenet", { cacheDir: other, url, md5: "0".repeat(32), quiet: true }),
      /MD5 is [0-9a-f]{32}, expected 0{32}/,
    );
    assert.ok(!fs.existsSync(imagenetCachePath(other)));
    // A file dropped into the cache with the wrong content is refused, naming it.
    fs.writeFileSync(imagenetCachePath(cache), "not the weights");
    await assert.rejects(
      () => resolveWeights("imagenet", { cacheDir: cache, url, md5, quiet: true }),
      (e: Error) =>
        e.message.includes(imagenetCachePath(cache)) && /Keras publishes/.test(e.message),
    );
  } finally {
    await server.shutdown();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("checkpoint: save then load gives identical outputs and the metadata back", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const model = small(3, 21);
    const meta = await saveCheckpoint(path.join(dir, "best"), model, {
      classNames: ["Covid", "Normal", "Viral Pneumonia"],
      imageSize: SMALL,
      normalization: KERAS_NORMALIZATION,
      weights: { kind: "none", normalization: KERAS_NORMALIZATION },
      epoch: 3,
      metrics: { validLoss: 0.25 },
    });
    const before = tf.memory().numTensors;
    const { model: loaded, meta: back } = await loadCheckpoint(path.join(dir, "best"));
    assert.deepEqual(back, meta);
    const x = pixels();
    const [a, b] = [await outputs(model, x), await outputs(loaded, x)];
    assert.deepEqual(b, a);
    // Output shape [B, 3]; softmax rows sum to 1.
    const probs = tf.tidy(() => tf.softmax(loaded.predict(x) as tf.Tensor));
    assert.deepEqual(probs.shape, [2, 3]);
    const sums = tf.tidy(() => probs.sum(1));
    for (const s of await sums.data()) assert.ok(Math.abs(s - 1) < 1e-5);
    sums.dispose();
    tf.dispose([x, probs]);
    loaded.dispose();
    assert.equal(tf.memory().numTensors, before, "loading and disposing leaks nothing");
    model.dispose();
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("checkpoint: missing or inconsistent metadata is refused with the reason", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const model = small();
    const ckpt = path.join(dir, "ckpt");
    const base = {
      classNames: ["Covid", "Normal", "Viral Pneumonia"],
      imageSize: SMALL,
      normalization: KERAS_NORMALIZATION,
      weights: { kind: "none" as const, normalization: KERAS_NORMALIZATION },
    };
    // Saving refuses metadata that contradicts the model.
    await assert.rejects(
      () => saveCheckpoint(ckpt, model, { ...base, classNames: ["a", "b"] }),
      /metadata lists 2 classes, the model has 3 outputs/,
    );
    await saveCheckpoint(ckpt, model, base);
    const metaFile = path.join(ckpt, "metadata.json");
    const meta = JSON.parse(fs.readFileSync(metaFile, "utf8"));
    fs.writeFileSync(metaFile, JSON.stringify({ ...meta, imageSize: 446 }));
    await assert.rejects(
      () => loadCheckpoint(ckpt),
      (e: Error) =>
        e instanceof CheckpointError &&
        /metadata says 446 px, the model takes 64x64/.test(e.message),
    );
    fs.writeFileSync(
      metaFile,
      JSON.stringify({
        ...meta,
        normalization: { mean: [0.485, 0.456, 0.406], std: [0.229, 0.224, 0.225] },
      }),
    );
    await assert.rejects(() => loadCheckpoint(ckpt), /normalisation .* differs from the model's/);
    const { normalization: _, ...noNorm } = meta;
    fs.writeFileSync(metaFile, JSON.stringify(noNorm));
    await assert.rejects(() => loadCheckpoint(ckpt), /metadata\.json lacks normalization/);
    fs.rmSync(metaFile);
    await assert.rejects(() => loadCheckpoint(ckpt), /no metadata\.json/);
    model.dispose();
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("weights: a model built twice with one seed is identical, another seed differs", async () => {
  const x = pixels();
  const [a, b, c] = [small(3, 4), small(3, 4), small(3, 5)];
  const [ya, yb, yc] = [await outputs(a, x), await outputs(b, x), await outputs(c, x)];
  assert.deepEqual(ya, yb);
  assert.notDeepEqual(ya, yc);
  tf.dispose([x]);
  [a, b, c].forEach((m) => m.dispose());
});

for (const engine of ["eager", "graph"] as const) {
  Deno.test(`parity: the ${engine} predictor (BatchNorm folded, ReLU fused) computes what model.predict does`, async () => {
    const { predictorFor } = await import("../lib/inference.ts");
    // Non-trivial BatchNorm statistics: a few training-mode passes move them away from 0 and 1.
    const model = small(3, 8);
    const x = pixels();
    for (let i = 0; i < 3; i++) tf.tidy(() => model.apply(x, { training: true }) as tf.Tensor);
    const before = tf.memory().numTensors;
    const predictor = predictorFor(model, engine);
    assert.equal(predictor.engine, engine);
    const [a, b] = [
      await outputs(model, x),
      await (async () => {
        const y = predictor.predict(x as tf.Tensor4D);
        const d = await y.data() as Float32Array;
        y.dispose();
        return d;
      })(),
    ];
    const scale = Math.max(...a.map(Math.abs));
    a.forEach((v, i) =>
      assert.ok(Math.abs(v - b[i]) <= 1e-4 * scale, `output ${i}: ${v} vs ${b[i]}`)
    );
    predictor.dispose();
    assert.equal(tf.memory().numTensors, before, "the folded weights are released");
    tf.dispose(x);
    model.dispose();
  });
}

Deno.test("parity: the graph predictor holds the weights it was made with, and refuses use after dispose", async () => {
  const { graphPredictor } = await import("../lib/saved_model.ts");
  const model = small(3, 8);
  const x = pixels();
  const predictor = graphPredictor(model);
  const before = await outputs(model, x);
  // Training the model afterwards does not change what this predictor computes.
  const shifted = model.getWeights().map((w) => tf.add(w, 0.5));
  model.setWeights(shifted);
  tf.dispose(shifted);
  assert.notDeepEqual(await outputs(model, x), before, "the model itself changed");
  const y = predictor.predict(x as tf.Tensor4D);
  const after = await y.data() as Float32Array;
  y.dispose();
  before.forEach((v, i) => assert.ok(Math.abs(v - after[i]) <= 1e-4 * Math.abs(v) + 1e-5));
  predictor.dispose();
  assert.throws(() => predictor.predict(x as tf.Tensor4D), Error, "after dispose");
  tf.dispose(x);
  model.dispose();
});

Deno.test("parity: the SavedModel writer's protobuf encoding matches the wire format's examples", async () => {
  const { varint, intField, stringField, floatField, packedIntsField } = await import(
    "../lib/protobuf.ts"
  );
  // Examples from protobuf.dev's encoding guide.
  assert.deepEqual([...varint(1)], [0x01]);
  assert.deepEqual([...varint(150)], [0x96, 0x01]);
  assert.deepEqual([...intField(1, 150)], [0x08, 0x96, 0x01]);
  assert.deepEqual(
    [...stringField(2, "testing")],
    [0x12, 0x07, ..."testing"].map((c) => typeof c === "number" ? c : c.charCodeAt(0)),
  );
  assert.deepEqual([...packedIntsField(4, [3, 270, 86942])], [
    0x22,
    0x06,
    0x03,
    0x8e,
    0x02,
    0x9e,
    0xa7,
    0x05,
  ]);
  // int64 −1 (an unknown dimension) is ten bytes of two's complement.
  assert.deepEqual([...varint(-1)], [...Array(9).fill(0xff), 0x01]);
  assert.deepEqual([...floatField(4, 1)], [0x25, 0x00, 0x00, 0x80, 0x3f]);
});
