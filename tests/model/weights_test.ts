import assert from "node:assert/strict";
import * as fs from "node:fs";
import * as path from "node:path";
import {
  buildModel,
  hashFile,
  initBackend,
  KERAS_IMAGENET,
  KERAS_NORMALIZATION,
  LAYER,
  loadKerasWeights,
  pretrainedCachePath,
  resolveWeights,
  tf,
  TORCHVISION_IMAGENET,
  TORCHVISION_IMAGENET_NORMALIZATION,
  WeightsError,
} from "../../lib/mod.ts";
import { layersOf, writeLegacyH5 } from "../_h5.ts";
import { outputs, pixels, SMALL, small } from "../_models.ts";

await initBackend();

const TORCH_PARITY = Deno.env.get("COVID_CXR_TORCH_PARITY");

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

Deno.test("weights: an unknown source or a folder names the valid choices", async () => {
  await assert.rejects(
    () => resolveWeights("imgnet"),
    /unknown weights "imgnet", valid: "torchvision", "imagenet", "keras", "none", or the path of a torchvision \.pth\/\.pt state_dict or a Keras \.h5/,
  );
  const dir = await Deno.makeTempDir();
  try {
    await assert.rejects(() => resolveWeights(dir), /it is a folder; valid: /);
    const text = path.join(dir, "notes.txt");
    fs.writeFileSync(text, "hello");
    await assert.rejects(
      () => resolveWeights(text),
      /neither a PyTorch file \(torch\.save\) nor a Keras HDF5 file/,
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

for (
  const [source, official] of [["torchvision", TORCHVISION_IMAGENET], [
    "keras",
    KERAS_IMAGENET,
  ]] as const
) {
  Deno.test(`weights: ${source} ImageNet weights offline and not cached fail early with the URL, the cache path and the alternatives`, async () => {
    const cache = await Deno.makeTempDir();
    const cached = pretrainedCachePath(official, cache);
    try {
      await assert.rejects(
        () =>
          resolveWeights(source, {
            cacheDir: cache,
            url: "http://127.0.0.1:9/weights",
            quiet: true,
          }),
        (e: Error) => {
          assert.ok(e instanceof WeightsError);
          assert.match(e.message, /downloading http:\/\/127\.0\.0\.1:9\/weights failed/);
          assert.ok(e.message.includes(`put it at\n  ${cached}\n`), e.message);
          assert.match(e.message, /--weights none +random initialisation/);
          assert.match(e.message, /--weights FILE +a torchvision MobileNetV3-Large state_dict/);
          assert.match(
            e.message,
            source === "torchvision" ? /--weights keras / : /--weights torchvision /,
          );
          return true;
        },
      );
      assert.ok(!fs.existsSync(cached), "nothing cached");
    } finally {
      await Deno.remove(cache, { recursive: true });
    }
  });
}

/** Serve `file` on a local port while `fn` runs; counts the requests. */
async function serving(file: string, fn: (url: string, requests: () => number) => Promise<void>) {
  let requests = 0;
  const server = Deno.serve({ port: 0, hostname: "127.0.0.1", onListen: () => {} }, async () => {
    requests++;
    return new Response(await Deno.readFile(file));
  });
  try {
    await fn(`http://127.0.0.1:${server.addr.port}/weights`, () => requests);
  } finally {
    await server.shutdown();
  }
}

Deno.test("weights: Keras's ImageNet download is checked by MD5, cached once, and a wrong hash is refused", async () => {
  const dir = await Deno.makeTempDir();
  const model = small(1000);
  const file = path.join(dir, "served.h5");
  await writeLegacyH5(file, layersOf(model));
  model.dispose();
  const md5 = await hashFile(file, "md5");
  const cache = path.join(dir, "cache");
  const cached = pretrainedCachePath(KERAS_IMAGENET, cache);
  try {
    await serving(file, async (url, requests) => {
      const check = { algorithm: "md5" as const, expected: md5 };
      const first = await resolveWeights("keras", { cacheDir: cache, url, check, quiet: true });
      assert.equal(first.kind, "keras");
      assert.equal(first.convention, "keras");
      assert.equal(first.file, cached);
      assert.deepEqual(first.normalization, KERAS_NORMALIZATION);
      await resolveWeights("keras", { cacheDir: cache, url, check, quiet: true });
      assert.equal(requests(), 1, "second use comes from the cache");
      // A download whose hash is not the published one is not cached.
      const other = path.join(dir, "cache2");
      await assert.rejects(
        () =>
          resolveWeights("keras", {
            cacheDir: other,
            url,
            check: { algorithm: "md5", expected: "0".repeat(32) },
            quiet: true,
          }),
        /MD5 is [0-9a-f]{32}, expected the MD5 0{32}/,
      );
      assert.ok(!fs.existsSync(pretrainedCachePath(KERAS_IMAGENET, other)));
      // A file dropped into the cache with the wrong content is refused, naming it.
      fs.writeFileSync(cached, "not the weights");
      await assert.rejects(
        () => resolveWeights("keras", { cacheDir: cache, url, check, quiet: true }),
        (e: Error) => e.message.includes(cached) && /damaged or a different one/.test(e.message),
      );
    });
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test({
  name:
    "weights: torchvision's ImageNet download is accepted only when its SHA-256 starts with the published prefix, and cached once",
  ignore: !TORCH_PARITY,
  fn: async () => {
    const served = path.join(TORCH_PARITY!, "mobilenet_v3_large_random.pth");
    const sha256 = await hashFile(served);
    const dir = await Deno.makeTempDir();
    try {
      await serving(served, async (url, requests) => {
        const cache = path.join(dir, "cache");
        // As torchvision checks: the first 8 hex digits (of the real file, 8738ca79).
        const check = { algorithm: "sha256" as const, expected: sha256.slice(0, 8), prefix: true };
        const info = await resolveWeights("imagenet", { cacheDir: cache, url, check, quiet: true });
        assert.equal(info.kind, "torchvision");
        assert.equal(info.convention, "torchvision");
        assert.equal(info.format, "pytorch");
        assert.equal(info.sha256, sha256);
        assert.equal(info.file, pretrainedCachePath(TORCHVISION_IMAGENET, cache));
        assert.deepEqual(info.normalization, TORCHVISION_IMAGENET_NORMALIZATION);
        await resolveWeights("torchvision", { cacheDir: cache, url, check, quiet: true });
        assert.equal(requests(), 1);
        await assert.rejects(
          () =>
            resolveWeights("torchvision", {
              cacheDir: path.join(dir, "cache2"),
              url,
              check: { ...check, expected: "8738ca79" },
              quiet: true,
            }),
          /SHA256 is [0-9a-f]{64}, expected a SHA-256 starting with 8738ca79\. Nothing was cached/,
        );
      });
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});
