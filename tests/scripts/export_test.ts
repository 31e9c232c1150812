import assert from "node:assert/strict";
import * as fs from "node:fs";
import * as path from "node:path";
import { readTorchFile } from "../../lib/mod.ts";
import { runScript, tinyRun } from "../_fixtures.ts";
import { freshDir } from "../_temp.ts";

Deno.test("export: deno task export writes a run's checkpoint as a PyTorch state_dict and prints how to load it", async () => {
  const run = await tinyRun();
  const to = path.join(freshDir("export-task"), "model.pt");
  const out = await runScript("export", ["--model", path.join(run.runDir, "best"), "--to", to]);
  assert.equal(out.code, 0, out.text);
  assert.match(
    out.text,
    /Wrote .*model\.pt \(312 tensors; classes Covid, Normal, Viral Pneumonia\)/,
  );
  assert.match(out.text, /model\.classifier\[3\] = nn\.Linear\(1280, 3\)/);
  assert.match(out.text, /load_state_dict\(torch\.load\("model\.pt"\), strict=True\)/);
  assert.equal(readTorchFile(to).tensors.size, 312);
  assert.ok(fs.existsSync(`${to}.json`));
  const missing = await runScript("export", ["--model", path.join(run.runDir, "best")]);
  assert.equal(missing.code, 2);
  assert.match(missing.text, /--to FILE\.pt is required/);
});
