import assert from "node:assert/strict";
import * as fs from "node:fs";
import * as path from "node:path";
import {
  graphEnginesUnavailable,
  initBackend,
  kernelLibrary,
  projectPath,
  sessionSettings,
  threadPools,
  withEnv,
} from "../../lib/mod.ts";

await initBackend();
const graphEngines = () => graphEnginesUnavailable() === undefined;

/** `scripts/bench.ts ARGS` in a fresh process with outputs in `outputs`: exit code and output. */
async function bench(args: string[], outputs: string) {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", projectPath("scripts", "bench.ts"), ...args],
    // A --data flag wins over COVID_CXR_DATA, so a test that passes one does not use the shared set.
    env: { COVID_CXR_OUTPUTS: outputs },
    stdout: "piped",
    stderr: "piped",
  }).output();
  const decode = (b: Uint8Array) => new TextDecoder().decode(b);
  return { code: out.code, stdout: decode(out.stdout), stderr: decode(out.stderr) };
}

Deno.test("bench: the harness measures in fresh processes and writes results.json and results.md", async () => {
  const outputs = await Deno.makeTempDir({ prefix: "bench-test-" });
  try {
    const out = await bench([
      "--tfjs-only",
      "--no-pipeline",
      "--no-profile",
      // TF.js alone (by default the bench also times TensorFlow's own kernels as a column).
      "--tfjs-options",
      "none",
      "--sizes",
      "64",
      "--batches",
      "2",
      "--reps",
      "1",
      "--steps",
      "1",
    ], outputs);
    const text = out.stdout;
    assert.equal(out.code, 0, out.stderr);
    assert.match(text, /train ms\/image, 64 px, batch 2/);
    assert.match(text, /infer ms\/image, 64 px, batch 2/);
    const latest = path.join(outputs, "bench", "latest");
    const results = JSON.parse(fs.readFileSync(path.join(latest, "results.json"), "utf8"));
    assert.deepEqual(results.results.map((r: { mode: string }) => r.mode), ["train", "infer"]);
    for (const r of results.results) {
      assert.equal(r.msPerImage.length, 1);
      assert.ok(r.msPerImage[0] > 0 && r.peakRssMB > 0);
    }
    assert.ok(fs.existsSync(path.join(latest, "results.md")));
  } finally {
    await Deno.remove(outputs, { recursive: true });
  }
});

Deno.test({
  name:
    "bench: TF.js options are timed as their own columns, and the training step is profiled with fused and with standard kernels, each with a roofline",
  ignore: !graphEngines(),
  fn: async () => {
    const outputs = await Deno.makeTempDir({ prefix: "bench-test-" });
    try {
      const out = await bench([
        "--tfjs-only",
        "--no-pipeline",
        "--tfjs-options",
        "standard-kernels",
        "--modes",
        "train",
        "--sizes",
        "64",
        "--batches",
        "2",
        "--reps",
        "1",
        "--steps",
        "1",
        "--profile-size",
        "64",
        "--profile-batch",
        "2",
      ], outputs);
      assert.equal(out.code, 0, out.stderr);
      const latest = path.join(outputs, "bench", "latest");
      const results = JSON.parse(fs.readFileSync(path.join(latest, "results.json"), "utf8"));
      assert.deepEqual(results.configurations, ["tfjs", "tfjs+standard-kernels"]);
      // The step figures run TensorFlow's pools as runs do (the inter-op pool as this process's
      // sessions would get it), with the bench's --threads (2) as the intra-op pool.
      assert.deepEqual(
        results.results.find((m: { framework: string }) => m.framework === "tfjs").threadPools,
        withEnv({ TF_NUM_INTRAOP_THREADS: "2" }, () => threadPools(sessionSettings())),
      );
      const md = fs.readFileSync(path.join(latest, "results.md"), "utf8");
      assert.match(md, /\| figure \| TF\.js \| TF\.js standard-kernels \|/);
      const profile = fs.readFileSync(path.join(latest, "profile.md"), "utf8");
      const [fused, standard] = profile.split(/(?=^# Where)/m);
      assert.match(fused, /# Where a training step's time goes: tfjs \(64 px, batch 2\)/);
      // Setup builds the fused kernels (CI included); the default configuration runs them.
      const built = fs.existsSync(kernelLibrary().file);
      assert.match(
        fused,
        built
          ? /Kernels \(BatchNorm \+ activation, depthwise convolutions\): fused \(cxr_kernels-/
          : /standard/,
      );
      if (built) assert.match(fused, /\| CxrBatchNormActGrad \| [\d.]+ \| \d+ \|/);
      if (built) {
        assert.match(fused, /\| CxrDepthwiseConvFilterGradOfBatchNorm \| [\d.]+ \| \d+ \|/);
      }
      assert.match(standard, /: tfjs\+standard-kernels \(64 px, batch 2\)/);
      assert.match(
        standard,
        /Kernels \(BatchNorm \+ activation, depthwise convolutions\): standard \(asked for\)/,
      );
      assert.match(standard, /FusedBatchNormGradV3/);
      for (const section of [fused, standard]) {
        // Profiled one op at a time, so an op's traced time is its own.
        assert.match(
          section,
          /One op at a time \(TensorFlow's inter-op pool pinned to one thread\)/,
        );
        assert.match(section, /\| pointwise \/ full convolution \| [\d.]+ \|/);
        assert.match(section, /## Roofline/);
        assert.match(section, /Floors per image: compute \d+ ms at peak, memory \d+ ms/);
      }
    } finally {
      await Deno.remove(outputs, { recursive: true });
    }
  },
});

Deno.test("bench: without a data set the pipeline figures stop it before anything is measured, naming --no-pipeline", async () => {
  const outputs = await Deno.makeTempDir({ prefix: "bench-test-" });
  const empty = await Deno.makeTempDir({ prefix: "bench-nodata-" });
  try {
    const started = performance.now();
    const out = await bench([
      "--tfjs-only",
      "--no-profile",
      "--sizes",
      "64",
      "--batches",
      "2",
      "--data",
      path.join(empty, "missing"),
    ], outputs);
    const stderr = out.stderr;
    assert.notEqual(out.code, 0);
    assert.match(stderr, /missing/);
    assert.match(stderr, /--no-pipeline skips them/);
    assert.doesNotMatch(stderr, /tfjs train 64px/, "nothing should be measured first");
    assert.doesNotMatch(stderr, /^\s+at /m, "no stack trace");
    assert.ok(performance.now() - started < 60_000);
  } finally {
    await Deno.remove(outputs, { recursive: true });
    await Deno.remove(empty, { recursive: true });
  }
});
