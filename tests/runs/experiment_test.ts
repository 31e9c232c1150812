import assert from "node:assert/strict";
import * as fs from "node:fs";
import * as path from "node:path";
import { initBackend, kernelLibrary } from "../../lib/mod.ts";
import { tinyRun } from "../_fixtures.ts";

await initBackend();

Deno.test("experiment: test metrics are reported on all test images and on those not copied from training", async () => {
  const RUN = await tinyRun();
  const unseen = RUN.summary.unseenTest!;
  assert.ok(unseen, "planted copies were found");
  assert.equal(unseen.excluded.length, 2);
  assert.ok(unseen.excluded.every((p) => path.basename(p).startsWith("copy-")));
  assert.equal(unseen.metrics.total, RUN.summary.test.total - 2);
  const report = fs.readFileSync(path.join(RUN.runDir, "report.md"), "utf8");
  assert.match(
    report,
    /On the 12 test images that are not the same X-ray as a training image \(2 are byte-identical copies and 0 near-identical/,
  );
  // The near-duplicate finder ran on the data set and its calibration is in the report.
  const leakage = RUN.summary.leakage!;
  assert.deepEqual(leakage.byteIdentical.map((p) => path.basename(p).slice(0, 5)), [
    "copy-",
    "copy-",
  ]);
  assert.ok(report.includes("## Leakage"));
  assert.match(report, /The near-duplicate threshold \([\d.]+\) was chosen on synthetic copies/);
  // The run's peak memory covers training and evaluation: at least every epoch's.
  const peak = RUN.summary.peakMemory!;
  assert.equal(peak.source, Deno.build.os === "linux" ? "high-water mark" : "current");
  assert.ok(peak.mb >= Math.max(...RUN.summary.history.map((h) => h.peakRssMB)));
  assert.ok(
    report.includes(`peak memory ${peak.mb} MB`) || report.includes(`memory ${peak.mb} MB`),
  );
  // Which BatchNorm kernels trained it is recorded and reported: the fused ones where setup built
  // them and the graph engine ran (CI), with every epoch marked.
  const kernels = RUN.summary.kernels!;
  const fused = RUN.summary.trainingEngine === "graph" && fs.existsSync(kernelLibrary().file);
  assert.equal(kernels.kind, fused ? "fused" : "standard");
  assert.ok(RUN.summary.history.every((h) => h.kernels === kernels.kind));
  assert.match(
    report,
    fused ? /the project's fused kernels \(cxr_kernels-/ : /TensorFlow's own kernels/,
  );
  const dataReport = JSON.parse(fs.readFileSync(path.join(RUN.runDir, "data_report.json"), "utf8"));
  assert.ok(
    dataReport.nearDuplicates.pairs.some((p: { byteIdentical: boolean; kind: string }) =>
      p.byteIdentical && p.kind === "train-test"
    ),
  );
});
