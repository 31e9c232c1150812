import assert from "node:assert/strict";
import * as fs from "node:fs";
import * as path from "node:path";
import {
  buildMobileNetV3Large,
  CheckpointError,
  exportToPytorch,
  initBackend,
  KERAS_NORMALIZATION,
  loadModel,
  readTorchFile,
  saveCheckpoint,
  tf,
  TORCHVISION_IMAGENET_NORMALIZATION,
} from "../../lib/mod.ts";
import { freshDir } from "../_temp.ts";

await initBackend();

const CLASSES = ["Covid", "Normal", "Viral Pneumonia"];

async function checkpoint(
  dir: string,
  convention: "torchvision" | "keras",
): Promise<tf.LayersModel> {
  const normalization = convention === "torchvision"
    ? TORCHVISION_IMAGENET_NORMALIZATION
    : KERAS_NORMALIZATION;
  const model = buildMobileNetV3Large({
    imageSize: 64,
    numClasses: 3,
    normalization,
    convention,
    seed: 4,
  });
  // Non-trivial BatchNorm statistics.
  const x = tf.randomUniform([2, 64, 64, 3], 0, 255, "float32", 2);
  tf.tidy(() => model.apply(x, { training: true }) as tf.Tensor);
  x.dispose();
  await saveCheckpoint(dir, model, {
    classNames: CLASSES,
    imageSize: 64,
    normalization,
    convention,
    weights: { kind: "none", convention, normalization },
  });
  return model;
}

Deno.test("export: a checkpoint trained with torchvision's conventions becomes a .pt state_dict that reads back as the same model, with a JSON describing it", async () => {
  const dir = freshDir("export");
  const model = await checkpoint(path.join(dir, "best"), "torchvision");
  const file = path.join(dir, "model.pt");
  const result = await exportToPytorch(path.join(dir, "best"), file);
  assert.equal(result.tensors, 312, "266 weights and 46 BatchNorm counters, as torchvision has");
  const sd = readTorchFile(file);
  assert.equal(sd.format, "zip");
  assert.deepEqual(sd.tensors.get("classifier.3.weight")!.shape, [3, 1280]);
  assert.deepEqual(sd.tensors.get("features.0.0.weight")!.shape, [16, 3, 3, 3]);
  const description = JSON.parse(fs.readFileSync(`${file}.json`, "utf8"));
  assert.deepEqual(description.classNames, CLASSES);
  assert.equal(description.imageSize, 64);
  assert.deepEqual(description.normalization, TORCHVISION_IMAGENET_NORMALIZATION);
  assert.match(description.load, /model\.classifier\[3\] = nn\.Linear\(1280, 3\)\n.*strict=True/);
  // The exported file, loaded back as a PyTorch model, computes what the checkpoint computes.
  const { model: back } = await loadModel(file, { classes: CLASSES, imageSize: 64 });
  const x = tf.randomUniform([2, 64, 64, 3], 0, 255, "float32", 9);
  const [a, b] = [model, back].map((m) => Array.from((m.predict(x) as tf.Tensor).dataSync()));
  assert.deepEqual(b, a);
  tf.dispose(x);
  model.dispose();
  back.dispose();
});

Deno.test("export: a checkpoint with Keras's conventions is refused with the reason, and nothing is written", async () => {
  const dir = freshDir("export-keras");
  const model = await checkpoint(path.join(dir, "best"), "keras");
  model.dispose();
  const file = path.join(dir, "model.pt");
  await assert.rejects(
    () => exportToPytorch(path.join(dir, "best"), file),
    (e: Error) =>
      e instanceof CheckpointError && /trained with Keras's conventions/.test(e.message) &&
      /would compute a different function/.test(e.message),
  );
  assert.ok(!fs.existsSync(file));
});
