import assert from "node:assert/strict";
import * as fs from "node:fs";
import * as path from "node:path";
import { initBackend, projectPath } from "../../lib/mod.ts";
import { runScript, syntheticData, tinyRun } from "../_fixtures.ts";
import { freshDir } from "../_temp.ts";

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

const TORCH_PARITY = Deno.env.get("COVID_CXR_TORCH_PARITY");

Deno.test({
  name:
    "pytorch: deno task evaluate --model FILE.pt scores the paper's fine-tuned PyTorch model, naming its classes from the data or --classes",
  ignore: !TORCH_PARITY,
  fn: async () => {
    const data = await syntheticData();
    const pt = path.join(TORCH_PARITY!, "mobilenet_v3_large_random_3class_legacy_format.pt");
    const fromFolders = await runScript("evaluate", [
      "--model",
      pt,
      "--data",
      path.join(data, "test"),
      "--image-size",
      "64",
    ]);
    assert.equal(fromFolders.code, 0, fromFolders.text);
    assert.match(
      fromFolders.text,
      /weights file, torchvision conventions; classes from the class folders of/,
    );
    assert.match(fromFolders.text, /Images: 12 from .*\(Covid 4, Normal 4, Viral Pneumonia 4\)/);
    assert.match(fromFolders.text, /Accuracy: .* of 12 images/);
    // Named explicitly: the same names in the same order give the same result.
    const named = await runScript("evaluate", [
      "--model",
      pt,
      "--data",
      path.join(data, "test"),
      "--image-size",
      "64",
      "--classes",
      "Covid,Normal,Viral Pneumonia",
    ]);
    assert.equal(named.code, 0, named.text);
    const accuracy = (t: string) => /Accuracy: (.*)/.exec(t)![1];
    assert.equal(accuracy(named.text), accuracy(fromFolders.text));
    // Wrong number of class names, and an ImageNet (1000-class) file: one clear line each.
    const wrong = await runScript("evaluate", ["--model", pt, "--data", data, "--classes", "a,b"]);
    assert.equal(wrong.code, 1);
    assert.match(wrong.text, /its classifier has 3 outputs, but 2 class names came from --classes/);
    const imagenet = await runScript("evaluate", [
      "--model",
      path.join(TORCH_PARITY!, "mobilenet_v3_large_random.pth"),
      "--data",
      data,
    ]);
    assert.equal(imagenet.code, 1);
    assert.match(imagenet.text, /an ImageNet classifier \(1000 classes\).*--weights/);
    assert.ok(!imagenet.text.includes("    at "), "no stack trace");
  },
});
