import assert from "node:assert/strict";
import * as fs from "node:fs";
import * as path from "node:path";
import { initBackend, projectPath } from "../../lib/mod.ts";
import { freshDir, tinyRun } from "../_fixtures.ts";

await initBackend();

const readJson = (file: string) => JSON.parse(fs.readFileSync(file, "utf8"));

Deno.test("evaluate: deno task evaluate scores a checkpoint on an ImageFolder and writes the files", async () => {
  const run = await tinyRun();
  const target = path.join(freshDir("evaluate"), "eval-out");
  const cmd = await new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "-A",
      projectPath("scripts", "evaluate.ts"),
      "--model",
      path.join(run.runDir, "best"),
      "--data",
      path.join(run.data, "test"),
      "--out",
      target,
    ],
    stdout: "piped",
    stderr: "piped",
  }).output();
  const text = new TextDecoder().decode(cmd.stdout) + new TextDecoder().decode(cmd.stderr);
  assert.equal(cmd.code, 0, text);
  assert.match(text, /Accuracy: .* of 14 images/);
  assert.match(text, /macro avg/);
  for (
    const f of [
      "metrics.json",
      "classification_report.txt",
      "predictions.csv",
      "confusion_matrix.png",
    ]
  ) {
    assert.ok(fs.existsSync(path.join(target, f)), f);
  }
  // The same checkpoint on the same images as the run's own evaluation.
  assert.deepEqual(
    readJson(path.join(target, "metrics.json")).confusion,
    readJson(path.join(run.runDir, "metrics.json")).confusion,
  );
});
