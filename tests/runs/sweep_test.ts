import assert from "node:assert/strict";
import * as fs from "node:fs";
import * as path from "node:path";
import {
  initBackend,
  mixedCodeNote,
  PAPER_CONFIG,
  reuseDifferences,
  type RunConfig,
  type RunSummary,
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

  // The same folder asked for with another learning rate (its name does not hold it): refused,
  // naming the seed, the setting and the fix; nothing in the folder changes.
  const before = fs.readFileSync(path.join(sweep.sweepDir, "sweep.json"), "utf8");
  await assert.rejects(
    () => runSweep([1, 2], { ...opts, config: { ...TINY, learningRate: 0.05 } }),
    (e: Error) => {
      assert.equal(e.name, "UserError");
      assert.match(e.message, /^Seed 1 finished before in .*seed1, but not as this sweep/);
      assert.match(e.message, /learningRate: [\d.e-]+ there, 0\.05 now/);
      assert.match(e.message, /moving .*seed1 aside \(or run this sweep into another folder/);
      return true;
    },
  );
  assert.equal(fs.readFileSync(path.join(sweep.sweepDir, "sweep.json"), "utf8"), before);

  // A seed that other code ran is reused, and the log and the report say which code ran which.
  const seed2 = path.join(sweep.sweepDir, "seed2", "summary.json");
  const summary2 = JSON.parse(fs.readFileSync(seed2, "utf8"));
  fs.writeFileSync(seed2, JSON.stringify({ ...summary2, codeVersion: "0ld0c0d" }));
  lines.length = 0;
  const mixed = await runSweep([1, 2], opts);
  const now = mixed.runs[0].codeVersion;
  assert.notEqual(now, "0ld0c0d");
  assert.deepEqual(lines.filter((l) => l.startsWith("Seed 2")), [
    `Seed 2: finished before (by code 0ld0c0d; this is ${now}), reusing ${
      path.join(sweep.sweepDir, "seed2")
    }`,
  ]);
  const report = fs.readFileSync(path.join(sweep.sweepDir, "report.md"), "utf8");
  assert.match(report, /\| 0ld0c0d \|/);
  assert.ok(
    report.includes(
      `The seeds did not all run the same code (seed 1: \`${now}\``,
    ) && report.includes("seed 2: `0ld0c0d`"),
    report,
  );
  // Before, with one version throughout, the report said nothing of the kind.
  assert.equal(mixedCodeNote(sweep.runs), undefined);
});

Deno.test("sweep: reuseDifferences names the settings, the data and the external set a finished seed ran with that differ from the sweep's", () => {
  const config = { ...PAPER_CONFIG, seed: 1 };
  const run = {
    config: { ...PAPER_CONFIG, seed: 7, learningRate: 0.01 },
    dataRoot: "/data/a",
    external: undefined,
  } as unknown as RunSummary;
  assert.deepEqual(reuseDifferences(run, { config, dataRoot: "/data/b", external: "/ext" }), [
    `learningRate: 0.01 there, ${PAPER_CONFIG.learningRate} now`,
    "data: /data/a there, /data/b now",
    "external set: none there, /ext now",
  ]);
  const same = { ...run, config: { ...PAPER_CONFIG, seed: 7 } } as RunSummary;
  assert.deepEqual(reuseDifferences(same, { config, dataRoot: "/data/a" }), []);
  // A setting the old run did not record yet counts as a difference.
  const { dropout: _, ...older } = PAPER_CONFIG;
  assert.deepEqual(
    reuseDifferences({ ...same, config: older as RunConfig }, { config, dataRoot: "/data/a" }),
    [`dropout: (not recorded) there, ${PAPER_CONFIG.dropout} now`],
  );
});
