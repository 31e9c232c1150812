import assert from "node:assert/strict";
import * as fs from "node:fs";
import * as path from "node:path";
import { initBackend } from "../../lib/mod.ts";
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
    /On the 12 test images that are not copies of training images \(2 are byte-identical/,
  );
});
