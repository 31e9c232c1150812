import assert from "node:assert/strict";
import * as fs from "node:fs";
import * as path from "node:path";
import {
  CheckpointError,
  initBackend,
  KERAS_NORMALIZATION,
  loadCheckpoint,
  saveCheckpoint,
  tf,
} from "../../lib/mod.ts";
import { outputs, pixels, SMALL, small } from "../_models.ts";

await initBackend();

Deno.test("checkpoint: save then load gives identical outputs and the metadata back", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const model = small(3, 21);
    const meta = await saveCheckpoint(path.join(dir, "best"), model, {
      classNames: ["Covid", "Normal", "Viral Pneumonia"],
      imageSize: SMALL,
      normalization: KERAS_NORMALIZATION,
      convention: "keras",
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
      convention: "keras" as const,
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
    // A checkpoint from before conventions were recorded is Keras's (all were, then).
    fs.writeFileSync(metaFile, JSON.stringify({ ...meta, convention: undefined }));
    const legacy = await loadCheckpoint(ckpt);
    assert.equal(legacy.meta.convention, "keras");
    legacy.model.dispose();
    fs.writeFileSync(metaFile, JSON.stringify({ ...meta, convention: "torchvision" }));
    await assert.rejects(
      () => loadCheckpoint(ckpt),
      /metadata says torchvision conventions, the model is built in keras's/,
    );
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
