import assert from "node:assert/strict";
import * as fs from "node:fs";
import * as path from "node:path";
import { projectPath } from "../../lib/mod.ts";

Deno.test("bench: the harness measures in fresh processes and writes results.json and results.md", async () => {
  const outputs = await Deno.makeTempDir({ prefix: "bench-test-" });
  try {
    const out = await new Deno.Command(Deno.execPath(), {
      args: [
        "run",
        "-A",
        projectPath("scripts", "bench.ts"),
        "--tfjs-only",
        "--no-pipeline",
        "--sizes",
        "64",
        "--batches",
        "2",
        "--reps",
        "1",
        "--steps",
        "1",
      ],
      env: { COVID_CXR_OUTPUTS: outputs },
      stdout: "piped",
      stderr: "piped",
    }).output();
    const text = new TextDecoder().decode(out.stdout);
    assert.equal(out.code, 0, new TextDecoder().decode(out.stderr));
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
