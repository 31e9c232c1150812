import assert from "node:assert/strict";
import * as fs from "node:fs";
import * as path from "node:path";
import { initBackend, projectPath } from "../../lib/mod.ts";
import { freshDir, tinyRun } from "../_fixtures.ts";

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
  assert.match(text, /predicted +Covid +Normal +Viral Pneumonia/);
  assert.match(text, /Not predicted \(1\):\n.*nothing-here\.png: no such file or folder/);
  assert.equal(fs.readFileSync(csv, "utf8").trim().split("\n").length, 1 + 5);
  assert.equal(JSON.parse(fs.readFileSync(json, "utf8")).failed.length, 1);
});
