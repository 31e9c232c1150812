import assert from "node:assert/strict";
import * as fs from "node:fs";
import * as path from "node:path";
import { initBackend, projectPath } from "../../lib/mod.ts";
import { runScript, syntheticData, tinyRun } from "../_fixtures.ts";
import { freshDir } from "../_temp.ts";

await initBackend();

Deno.test("predict: deno task predict prints a table, writes CSV and JSON, exits 1 when an input failed", async () => {
  const RUN = await tinyRun();
  const DATA = RUN.data;
  const WORK = freshDir("test");
  const csv = path.join(WORK, "p.csv"), json = path.join(WORK, "p.json");
  const out = await new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "-A",
      projectPath("scripts", "predict.ts"),
      path.join(DATA, "test", "Normal"),
      path.join(WORK, "nothing-here.png"),
      "--model",
      path.join(RUN.runDir, "best"),
      "--csv",
      csv,
      "--json",
      json,
    ],
    stdout: "piped",
    stderr: "piped",
  }).output();
  const text = new TextDecoder().decode(out.stdout);
  assert.equal(out.code, 1);
  assert.match(
    text,
    /predicted +(calibrated )?p\(Covid\) +(calibrated )?p\(Normal\) +(calibrated )?p\(Viral Pneumonia\)/,
  );
  assert.match(text, /Not predicted \(1\):\n.*nothing-here\.png: no such file or folder/);
  assert.equal(fs.readFileSync(csv, "utf8").trim().split("\n").length, 1 + 5);
  assert.equal(JSON.parse(fs.readFileSync(json, "utf8")).failed.length, 1);
});

const TORCH_PARITY = Deno.env.get("COVID_CXR_TORCH_PARITY");

Deno.test({
  name:
    "pytorch: deno task predict --model FILE.pt predicts with the paper's PyTorch model; an empty folder is an error",
  ignore: !TORCH_PARITY,
  fn: async () => {
    const data = await syntheticData();
    const pt = path.join(TORCH_PARITY!, "mobilenet_v3_large_random_3class_legacy_format.pt");
    const out = await runScript("predict", [
      path.join(data, "test", "Covid"),
      "--model",
      pt,
      "--data",
      data,
      "--image-size",
      "64",
    ]);
    assert.equal(out.code, 0, out.text);
    assert.match(out.text, /Model: .*\.pt \(Covid, Normal, Viral Pneumonia; 64 px\)/);
    assert.equal(out.stdout.split("\n").filter((l) => l.includes("Covid/")).length, 4);
    const empty = freshDir("empty");
    const none = await runScript("predict", [empty, "--model", pt, "--data", data]);
    assert.equal(none.code, 1);
    assert.match(none.text, /No images found in .*: nothing to predict/);
  },
});
