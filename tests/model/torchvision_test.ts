import assert from "node:assert/strict";
import * as fs from "node:fs";
import * as path from "node:path";
import {
  buildMobileNetV3Large,
  buildModel,
  checkStateDict,
  initBackend,
  LAYER,
  loadTorchvisionWeights,
  readTorchFile,
  tf,
  TORCHVISION_IMAGENET_NORMALIZATION,
  torchvisionStateDict,
  torchvisionTensors,
  WeightsError,
  writeTorchStateDict,
} from "../../lib/mod.ts";
import { freshDir } from "../_temp.ts";

await initBackend();

const TORCH_PARITY = Deno.env.get("COVID_CXR_TORCH_PARITY");

const tiny = (numClasses: number, seed: number) =>
  buildMobileNetV3Large({
    imageSize: 64,
    numClasses,
    normalization: TORCHVISION_IMAGENET_NORMALIZATION,
    convention: "torchvision",
    seed,
  });

Deno.test("torchvision: the name map covers every weight of the model exactly once, in torchvision's order", () => {
  const model = tiny(1000, 1);
  const names = torchvisionTensors();
  assert.equal(names.length, model.weights.length, "one torchvision tensor per model weight");
  const layerOf = new Map(model.layers.map((l) => [l.name, l]));
  const covered = new Set(names.map((t) => layerOf.get(t.layer)!.weights[t.weight]));
  assert.equal(covered.size, model.weights.length);
  assert.deepEqual(names.slice(0, 3).map((t) => t.name), [
    "features.0.0.weight",
    "features.0.1.weight",
    "features.0.1.bias",
  ]);
  assert.equal(names.at(-1)!.name, "classifier.3.bias");
  model.dispose();
});

Deno.test("torchvision: a model written as a state_dict and loaded into another gives the same outputs", () => {
  const dir = freshDir("torchvision");
  const source = tiny(3, 5);
  const file = path.join(dir, "model.pth");
  writeTorchStateDict(file, torchvisionStateDict(source));
  const target = tiny(3, 99);
  const loaded = loadTorchvisionWeights(target, file);
  assert.equal(loaded.classifierLoaded, true);
  const x = tf.randomUniform([2, 64, 64, 3], 0, 255, "float32", 1);
  const [a, b] = [source, target].map((m) => Array.from((m.predict(x) as tf.Tensor).dataSync()));
  assert.deepEqual(a, b);
  tf.dispose(x);
  source.dispose();
  target.dispose();
});

Deno.test("torchvision: a 1000-class state_dict loads with the head swapped; keys of another architecture are listed", async () => {
  const dir = freshDir("torchvision-swap");
  const imagenet = tiny(1000, 7);
  const file = path.join(dir, "imagenet.pth");
  writeTorchStateDict(file, torchvisionStateDict(imagenet));
  const { model, weights, classifierLoaded } = await buildModel({
    weights: file,
    numClasses: 3,
    imageSize: 64,
    seed: 3,
  });
  assert.equal(weights.format, "pytorch");
  assert.equal(weights.convention, "torchvision");
  assert.equal(classifierLoaded, false);
  const kernel = (m: tf.LayersModel, name: string) => m.getLayer(name).getWeights()[0].dataSync();
  assert.deepEqual(kernel(model, LAYER.features), kernel(imagenet, LAYER.features));
  assert.deepEqual(model.getLayer(LAYER.logits).getWeights()[0].shape, [1280, 3]);
  model.dispose();

  // A state_dict of another architecture (and one with a missing and an extra key).
  const other = path.join(dir, "resnet.pth");
  const w = { dtype: "float32" as const, shape: [2], values: Float32Array.of(1, 2) };
  writeTorchStateDict(other, [["conv1.weight", w], ["fc.weight", w]]);
  assert.throws(
    () => loadTorchvisionWeights(imagenet, other),
    (e: Error) =>
      e instanceof WeightsError && /another architecture/.test(e.message) &&
      /Missing keys: features\.0\.0\.weight, .*\(266 in all\)/.test(e.message) &&
      /Unexpected keys: conv1\.weight, fc\.weight/.test(e.message),
  );
  const almost = torchvisionStateDict(imagenet).filter(([n]) =>
    n !== "features.4.block.2.fc1.bias"
  );
  almost.push(["features.99.extra", w]);
  const edited = path.join(dir, "edited.pth");
  writeTorchStateDict(edited, almost);
  assert.deepEqual(checkStateDict(readTorchFile(edited)), {
    classes: 1000,
    missing: ["features.4.block.2.fc1.bias"],
    unexpected: ["features.99.extra"],
  });
  assert.throws(
    () => loadTorchvisionWeights(imagenet, edited),
    /differs from torchvision's mobilenet_v3_large\. Missing keys: features\.4\.block\.2\.fc1\.bias\. Unexpected keys: features\.99\.extra/,
  );
  imagenet.dispose();
  assert.ok(fs.existsSync(file));
});

Deno.test({
  name:
    "torchvision: the fixture's state_dicts load into the model, with shapes checked tensor by tensor",
  ignore: !TORCH_PARITY,
  fn: () => {
    const model = tiny(3, 1);
    const before = model.getLayer(LAYER.logits).getWeights()[0].dataSync().slice();
    const r = loadTorchvisionWeights(
      model,
      path.join(TORCH_PARITY!, "mobilenet_v3_large_random_3class_legacy_format.pt"),
    );
    assert.deepEqual(r, { tensors: 266, classifierLoaded: true, fileClasses: 3 });
    assert.notDeepEqual(model.getLayer(LAYER.logits).getWeights()[0].dataSync(), before);
    // Asking for the 1000-class head in a 3-class model names the layer and the shapes.
    assert.throws(
      () =>
        loadTorchvisionWeights(model, path.join(TORCH_PARITY!, "mobilenet_v3_large_random.pth"), {
          classifier: "load",
        }),
      /classifier\.3\.weight has shape \[1000,1280\] .* layer "logits" expects \[1280,3\] \(the file has 1000 classes\)/,
    );
    model.dispose();
  },
});
