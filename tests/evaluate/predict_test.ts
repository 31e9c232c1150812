import assert from "node:assert/strict";
import * as fs from "node:fs";
import { parse } from "csv-parse/sync";
import * as path from "node:path";
import { initBackend, loadCheckpoint, predictImages, tf } from "../../lib/mod.ts";
import { SYNTHETIC_CLASSES } from "../_synthetic.ts";
import { tinyRun } from "../_fixtures.ts";
import { freshDir } from "../_temp.ts";

await initBackend();

Deno.test("predict: probabilities for images and folders; unreadable inputs listed with the reason", async () => {
  const RUN = await tinyRun();
  const DATA = RUN.data;
  const WORK = freshDir("test");
  const { model, meta } = await loadCheckpoint(path.join(RUN.runDir, "best"));
  fs.writeFileSync(path.join(WORK, "notes.png"), "not an image");
  const before = tf.memory().numTensors;
  const result = await predictImages(model, meta, [
    path.join(DATA, "test", "Covid"),
    path.join(WORK, "notes.png"),
    path.join(WORK, "missing.jpg"),
  ]);
  assert.equal(tf.memory().numTensors, before, "no tensor left behind");
  assert.equal(result.predictions.length, fs.readdirSync(path.join(DATA, "test", "Covid")).length);
  for (const p of result.predictions) {
    const sum = Object.values(p.probabilities).reduce((a, b) => a + b, 0);
    assert.ok(Math.abs(sum - 1) < 1e-5);
    assert.ok(SYNTHETIC_CLASSES.includes(p.predicted));
  }
  assert.deepEqual(result.failed.map((f) => path.basename(f.file)).sort(), [
    "missing.jpg",
    "notes.png",
  ]);
  assert.match(
    result.failed.find((f) => f.file.endsWith("notes.png"))!.reason,
    /not a readable image/,
  );
  // The same images through evaluation give the same (calibrated) probabilities: same
  // preprocessing, same temperature.
  const rows: Record<string, string>[] = parse(
    fs.readFileSync(path.join(RUN.runDir, "predictions.csv"), "utf8"),
    { columns: true },
  );
  const first = result.predictions[0];
  const row = rows.find((r) => r.file === path.relative(DATA, first.file))!;
  const column = (c: string) => meta.calibration?.notFitted ? `p(${c})` : `calibrated p(${c})`;
  for (const c of SYNTHETIC_CLASSES) {
    assert.ok(
      Math.abs(first.probabilities[c] - Number(row[column(c)])) < 1e-5,
      `${c}: ${first.probabilities[c]} vs ${row[column(c)]}`,
    );
  }
  model.dispose();
});
