import assert from "node:assert/strict";
import * as fs from "node:fs";
import * as path from "node:path";
import { parse } from "csv-parse/sync";
import { initBackend } from "../../lib/mod.ts";
import { runScript, tinyRun } from "../_fixtures.ts";
import { freshDir } from "../_temp.ts";

await initBackend();

const readJson = (file: string) => JSON.parse(fs.readFileSync(file, "utf8"));
const readCsv = (file: string): Record<string, string>[] =>
  parse(fs.readFileSync(file, "utf8"), { columns: true });

Deno.test("calibration: a run fits its temperature on the validation split only, stores it in best/metadata.json and reports ECE before and after", async () => {
  const run = await tinyRun();
  const meta = readJson(path.join(run.runDir, "best", "metadata.json"));
  const { calibration } = run.summary;
  assert.ok(calibration, "summary.calibration");
  assert.equal(meta.calibration.fittedOn, "validation");
  assert.equal(meta.calibration.n, run.summary.counts.validation);
  assert.equal(meta.calibration.temperature, calibration.temperature);
  const [validation, test] = calibration.sets;
  assert.deepEqual(
    [validation.name, validation.summary.n, test.name, test.summary.n],
    ["validation", run.summary.counts.validation, "test", run.summary.counts.test],
  );
  // The fit minimises the validation NLL: never worse than T = 1 there.
  assert.ok(validation.summary.nllAfter <= validation.summary.nllBefore + 1e-12);
  if (calibration.notFitted) assert.equal(calibration.temperature, 1);
  const report = fs.readFileSync(path.join(run.runDir, "report.md"), "utf8");
  assert.match(report, /## How sure is the model\?/);
  assert.match(report, new RegExp(`\\| test \\| ${run.summary.counts.test} \\| \\d\\.\\d{3} → `));
  assert.ok(fs.existsSync(path.join(run.runDir, "calibration_diagram.svg")));
  // The model's weights are untouched by the added metadata: the checkpoint still loads.
  const again = await runScript("evaluate", [
    "--model",
    path.join(run.runDir, "best"),
    "--data",
    run.data,
  ]);
  assert.equal(again.code, 0, again.text);
});

/** The tiny run's checkpoint copied, with `calibration` set in its metadata (or removed). */
async function checkpointWith(calibration: unknown): Promise<string> {
  const run = await tinyRun();
  const dir = path.join(freshDir("calibrated"), "best");
  fs.cpSync(path.join(run.runDir, "best"), dir, { recursive: true });
  const file = path.join(dir, "metadata.json");
  const meta = readJson(file);
  if (calibration === undefined) delete meta.calibration;
  else meta.calibration = calibration;
  fs.writeFileSync(file, JSON.stringify(meta));
  return dir;
}

Deno.test("calibration: predict and evaluate report calibrated probabilities, say so, and keep every prediction", async () => {
  const run = await tinyRun();
  const raw = await checkpointWith(undefined);
  const scaled = await checkpointWith({
    temperature: 2,
    fittedOn: "validation",
    n: 5,
    nllBefore: 1,
    nllAfter: 0.9,
  });
  const images = path.join(run.data, "test");
  const out = freshDir("calibrated-out");
  const predict = async (model: string, name: string) => {
    const csv = path.join(out, `${name}.csv`);
    const r = await runScript("predict", ["--model", model, "--csv", csv, images]);
    assert.equal(r.code, 0, r.text);
    return { text: r.text, rows: readCsv(csv) };
  };
  const before = await predict(raw, "raw");
  const after = await predict(scaled, "scaled");
  assert.match(before.text, /Probabilities: the softmax as trained \(the model has no calibration/);
  assert.match(after.text, /Probabilities are calibrated: softmax\(logits \/ T\), T = 2\.000/);
  assert.ok("p(Covid)" in before.rows[0] && "calibrated p(Covid)" in after.rows[0]);
  const classes = ["Covid", "Normal", "Viral Pneumonia"];
  before.rows.forEach((b, i) => {
    const a = after.rows[i];
    assert.equal(a.predicted, b.predicted, "the temperature never changes a prediction");
    // softmax(z / 2) ∝ softmax(z)^(1/2).
    const roots = classes.map((c) => Math.sqrt(Number(b[`p(${c})`])));
    const sum = roots.reduce((s, v) => s + v, 0);
    classes.forEach((c, k) => {
      const expected = roots[k] / sum;
      assert.ok(
        Math.abs(Number(a[`calibrated p(${c})`]) - expected) < 2e-5,
        `${b.file} ${c}: ${a[`calibrated p(${c})`]} vs ${expected}`,
      );
    });
  });

  const evaluated = await runScript("evaluate", [
    "--model",
    scaled,
    "--data",
    run.data,
    "--out",
    path.join(out, "eval"),
  ]);
  assert.equal(evaluated.code, 0, evaluated.text);
  assert.match(evaluated.text, /Probabilities are calibrated/);
  const rows = readCsv(path.join(out, "eval", "predictions.csv"));
  assert.ok("p(Covid)" in rows[0] && "calibrated p(Covid)" in rows[0], "both, told apart");
});
