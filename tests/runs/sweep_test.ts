import assert from "node:assert/strict";
import * as fs from "node:fs";
import * as path from "node:path";
import {
  initBackend,
  PAPER_CONFIG,
  runSweep,
  sameSettings,
  spread,
  summarizeSweep,
} from "../../lib/mod.ts";
import { syntheticData, TINY } from "../_fixtures.ts";
import { freshDir } from "../_temp.ts";

await initBackend();

Deno.test("sweep: a seed sweep reports mean, sd and range, and re-running it reuses finished seeds", async () => {
  const DATA = await syntheticData({ leaked: 2 });
  const WORK = freshDir("test");
  const s = spread([0.9, 0.95, 1]);
  assert.ok(Math.abs(s.mean - 0.95) < 1e-12 && Math.abs(s.sd - 0.05) < 1e-12, JSON.stringify(s));
  assert.deepEqual([s.min, s.max], [0.9, 1]);
  assert.equal(spread([0.5]).sd, 0);
  const lines: string[] = [];
  const opts = {
    config: TINY,
    data: DATA,
    outputs: path.join(WORK, "sweeps"),
    quiet: true,
    log: (l: string) => lines.push(l),
  };
  const sweep = await runSweep([1, 2], opts);
  assert.equal(sweep.runs.length, 2);
  assert.deepEqual(sweep.runs.map((r) => r.config.seed), [1, 2]);
  const acc = sweep.runs.map((r) => r.test.accuracy);
  assert.deepEqual(sweep.summary.accuracy, spread(acc));
  assert.deepEqual(summarizeSweep(sweep.runs), sweep.summary);
  for (
    const f of [
      "sweep.json",
      "report.md",
      "seed_spread.svg",
      "seed_spread.png",
      "seed1/report.md",
      "seed2/best/model.json",
    ]
  ) {
    assert.ok(fs.existsSync(path.join(sweep.sweepDir, f)), f);
  }
  assert.match(
    fs.readFileSync(path.join(sweep.sweepDir, "report.md"), "utf8"),
    /\| accuracy \| .* points \|/,
  );
  lines.length = 0;
  await runSweep([1, 2], opts);
  assert.deepEqual(lines.filter((l) => l.startsWith("Seed")), [
    `Seed 1: finished before, reusing ${path.join(sweep.sweepDir, "seed1")}`,
    `Seed 2: finished before, reusing ${path.join(sweep.sweepDir, "seed2")}`,
  ]);
  assert.ok(sameSettings(sweep.runs[0].config, { ...sweep.runs[1].config }, ["seed"]));
  assert.ok(!sameSettings(sweep.runs[0].config, { ...PAPER_CONFIG }));
});
