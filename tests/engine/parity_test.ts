import assert from "node:assert/strict";
import {
  checkKerasParity,
  checkTorchvisionParity,
  initBackend,
  PARITY_TOLERANCE,
} from "../../lib/mod.ts";
import {
  KERAS_PARITY_FILES,
  parityEngines,
  type ParityResult,
  TORCHVISION_PARITY_FILES,
} from "../../lib/engine/parity.ts";

await initBackend();

const PARITY = Deno.env.get("COVID_CXR_PARITY");

/** Every file × size × engine compared, in order, and each within the tolerance. */
function assertParity(results: ParityResult[], files: readonly string[]) {
  const engines = parityEngines();
  assert.deepEqual(
    results.map((r) => `${r.file} ${r.size} ${r.engine}`),
    files.flatMap((f) => [224, 446].flatMap((s) => engines.map((e) => `${f} ${s} ${e}`))),
  );
  for (const r of results) {
    const what = `${r.file} at ${r.size} px on the ${r.engine} engine`;
    assert.ok(r.logitsError <= PARITY_TOLERANCE, `${what}: logits error ${r.logitsError}`);
    if (r.engine === "layers") {
      assert.ok(r.featuresError! <= PARITY_TOLERANCE, `${what}: features error ${r.featuresError}`);
      if (r.pooledError !== undefined) {
        assert.ok(r.pooledError <= PARITY_TOLERANCE, `${what}: pooled ${r.pooledError}`);
      }
    }
    assert.ok(r.pass);
  }
}

Deno.test({
  name:
    "parity: Keras fixture weights (Keras 3 and Keras 2 layouts) give Keras's logits and features at 224 and 446 px on every engine",
  // Runs whenever the fixture is given (CI sets COVID_CXR_PARITY); without it there is nothing to compare.
  ignore: !PARITY,
  fn: async () => {
    const results = await checkKerasParity(PARITY!);
    // CI runs the native backend on Linux, so the graph engine is checked against Keras there.
    if (Deno.build.os === "linux") {
      assert.deepEqual(parityEngines(), ["layers", "eager", "graph"]);
    }
    assertParity(results, KERAS_PARITY_FILES);
    for (const r of results) {
      assert.ok(r.logitsAbsMax > 100, "fixture logits should be large (random weights)");
    }
  },
});

const TORCH_PARITY = Deno.env.get("COVID_CXR_TORCH_PARITY");

Deno.test({
  name:
    "parity: torchvision fixture (zip .pth, 1000 classes; legacy .pt, the paper's 3 classes) gives torchvision's logits, pooled and 1280 features at 224 and 446 px on every engine",
  // Runs whenever the fixture is given (CI sets COVID_CXR_TORCH_PARITY).
  ignore: !TORCH_PARITY,
  fn: async () => {
    const results = await checkTorchvisionParity(TORCH_PARITY!);
    assertParity(results, TORCHVISION_PARITY_FILES);
    // The torchvision fixture also compares the 960 pooled features on the layers engine.
    assert.ok(
      results.filter((r) => r.engine === "layers").every((r) => r.pooledError !== undefined),
    );
  },
});
