import assert from "node:assert/strict";
import * as fs from "node:fs";
import * as path from "node:path";
import { chooseKernels, initBackend, kernelLibrary, projectPath, withEnv } from "../../lib/mod.ts";
import { ensureKernels } from "../../scripts/setup/kernels.ts";
import {
  ensureBinding,
  ensureLibrary,
  ensureWheel,
  offlineCachePaths,
  SetupError,
  tfjsNodeDir,
} from "../../scripts/setup.ts";

/** pip pointed at an address where nothing answers, with every configured index removed. */
const NO_PYPI = {
  PIP_CONFIG_FILE: "/dev/null",
  PIP_INDEX_URL: "http://127.0.0.1:9/simple",
  PIP_EXTRA_INDEX_URL: "",
  PIP_FIND_LINKS: "",
  PIP_RETRIES: "0",
  PIP_DEFAULT_TIMEOUT: "2",
};

async function runSetup(...args: string[]) {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", projectPath("scripts", "setup.ts"), "--json", ...args],
    stdout: "piped",
    stderr: "piped",
  }).output();
  const stdout = new TextDecoder().decode(out.stdout).trim();
  const stderr = new TextDecoder().decode(out.stderr);
  assert.equal(out.code, 0, `setup failed:\n${stderr}`);
  return JSON.parse(stdout.split("\n").at(-1)!) as {
    steps: { step: string; action: string; detail: string }[];
    seconds: number;
  };
}

Deno.test("setup: a second run with everything in place downloads and builds nothing", async () => {
  await runSetup(); // whatever state we start in, this leaves everything in place
  const again = await runSetup();
  assert.deepEqual(
    again.steps.map((s) => [s.step, s.action]),
    [
      ["npm packages", "present"],
      ["native backend", "present"],
      ["fused kernels", "present"],
      ["GPU backend", "present"],
      ["JupyterLab", "present"],
    ],
  );
  // Without an NVIDIA GPU (as here, and in CI) setup says the CPU backend runs.
  const gpu = again.steps.find((s) => s.step === "GPU backend")!;
  if (!gpu.detail.includes("GPU 0")) {
    assert.match(gpu.detail, /no NVIDIA GPU .*runs use the CPU backend/);
  }
});

Deno.test("setup: without PyPI (and Google storage) the wheel step stops with one clear message", async () => {
  const cache = await Deno.makeTempDir({ prefix: "setup-offline-" });
  try {
    await assert.rejects(
      () => ensureWheel(cache, NO_PYPI),
      (error: Error) => {
        assert.ok(error instanceof SetupError);
        assert.match(error.message, /Tried: tfjs-node's prebuilt download from Google storage/);
        assert.match(error.message, /pip download tensorflow-cpu==2\.21\.0/);
        assert.match(error.message, /No matching distribution|Could not find/);
        assert.match(error.message, /deno task setup/);
        return true;
      },
    );
    // Nothing half-downloaded is left to be mistaken for a wheel later.
    const left = fs.readdirSync(offlineCachePaths(cache).wheels);
    assert.deepEqual(left, []);
  } finally {
    await Deno.remove(cache, { recursive: true });
  }
});

Deno.test("setup: a truncated wheel or library in the cache is detected and redone", async () => {
  const cache = await Deno.makeTempDir({ prefix: "setup-cache-" });
  try {
    const first = await ensureWheel(cache);
    assert.equal(first.action, "downloaded");
    assert.equal((await ensureWheel(cache)).action, "present");

    const lib = await ensureLibrary(first.file, cache);
    assert.equal(lib.action, "built");
    const so = path.join(lib.dir, "lib", "libtensorflow_framework.so.2");
    const size = fs.statSync(so).size;
    fs.truncateSync(so, 1000); // an interrupted extraction
    const again = await ensureLibrary(first.file, cache);
    assert.equal(again.action, "built");
    assert.equal(fs.statSync(so).size, size);

    fs.truncateSync(first.file, 1_000_000); // an interrupted download
    const redone = await ensureWheel(cache);
    assert.equal(redone.action, "downloaded");
    assert.equal((await ensureWheel(cache)).action, "present");
  } finally {
    await Deno.remove(cache, { recursive: true });
  }
});

Deno.test("setup: a half-written binding in the cache is rebuilt, not used", async () => {
  const cache = await Deno.makeTempDir({ prefix: "setup-binding-" });
  try {
    const pkg = tfjsNodeDir();
    // The library from the user cache (present after an offline setup; downloaded otherwise).
    const library = (await ensureLibrary((await ensureWheel()).file)).dir;
    const built = await ensureBinding(pkg, library, cache);
    assert.equal(built.action, "built");
    assert.equal((await ensureBinding(pkg, library, cache)).action, "present");
    fs.writeFileSync(built.file, "half a binding");
    const rebuilt = await ensureBinding(pkg, library, cache);
    assert.equal(rebuilt.action, "built");
    assert.ok(fs.statSync(rebuilt.file).size > 10_000);
  } finally {
    await Deno.remove(cache, { recursive: true });
  }
});

Deno.test("setup: without a C compiler the fused kernels are one clear line, recorded, and runs say TensorFlow's kernels ran and why", async () => {
  const cache = await Deno.makeTempDir({ prefix: "setup-kernels-" });
  try {
    await withEnv({ COVID_CXR_CACHE: cache }, async () => {
      const step = await ensureKernels({ retry: true, compiler: "no-such-cc" });
      assert.equal(step.action, "unavailable");
      assert.match(step.detail, /not built: no C compiler \(no-such-cc\) on PATH; install one/);
      const { file, failed } = kernelLibrary();
      assert.ok(!fs.existsSync(file) && fs.existsSync(failed));
      // --if-needed does not try again; the reason stands until a plain setup retries.
      const again = await ensureKernels({ retry: false, compiler: "no-such-cc" });
      assert.equal(again.action, "unavailable");
      assert.match(again.detail, /no C compiler/);
    });
    // A run in a process of its own (the library may already be loaded in this one).
    const child = `
      import { chooseKernels, initBackend } from ${JSON.stringify(projectPath("lib", "mod.ts"))};
      await initBackend({ quiet: true });
      const auto = chooseKernels();
      let error = "";
      try { chooseKernels("fused"); } catch (e) { error = (e as Error).message; }
      console.log(JSON.stringify({ auto, error }));`;
    const out = await new Deno.Command(Deno.execPath(), {
      args: ["eval", "--ext=ts", child],
      env: { COVID_CXR_CACHE: cache },
      stdout: "piped",
      stderr: "piped",
    }).output();
    assert.equal(out.code, 0, new TextDecoder().decode(out.stderr));
    const { auto, error } = JSON.parse(
      new TextDecoder().decode(out.stdout).trim().split("\n").at(-1)!,
    );
    assert.equal(auto.kind, "standard");
    assert.match(auto.detail, /setup could not build them \(no C compiler \(no-such-cc\)/);
    assert.match(
      error,
      /The fused kernels were asked for \(COVID_CXR_KERNELS=fused\), but setup could not/,
    );
  } finally {
    await Deno.remove(cache, { recursive: true });
  }
});

Deno.test("setup: the fused kernels are built for the source as it is, and a run loads them", async () => {
  // The cache setup uses (CI and here); a changed source is a new file name, built again.
  await initBackend({ quiet: true });
  const step = await ensureKernels({ retry: true });
  assert.ok(["present", "built"].includes(step.action), step.detail);
  assert.equal(step.detail, path.basename(kernelLibrary().file));
  assert.deepEqual(chooseKernels(), { kind: "fused", detail: path.basename(kernelLibrary().file) });
  assert.deepEqual(chooseKernels("standard"), { kind: "standard", detail: "asked for" });
});
