import assert from "node:assert/strict";
import { projectPath } from "../lib/mod.ts";

// In a process of its own: `deno test` runs every test file in one process, whose peak would be
// whichever test used the most.
const CHILD = `
import { peakResident } from ${JSON.stringify(projectPath("lib", "memory.ts"))};
const before = peakResident();
let block = new Uint8Array(256 * 2 ** 20).fill(1);
const during = Deno.memoryUsage().rss;
block = new Uint8Array(0);
const rss = Deno.memoryUsage().rss;
const after = peakResident();
console.log(JSON.stringify({ before, during, after, rss }));
`;

Deno.test(
  "memory: a run's peak is the kernel's high-water mark, which holds memory used and given back",
  {
    ignore: Deno.build.os !== "linux",
  },
  async () => {
    const out = await new Deno.Command(Deno.execPath(), {
      args: ["eval", "--ext=ts", CHILD],
      stdout: "piped",
      stderr: "piped",
    }).output();
    assert.equal(out.code, 0, new TextDecoder().decode(out.stderr));
    const { before, during, after, rss } = JSON.parse(new TextDecoder().decode(out.stdout));
    const MB = 2 ** 20;
    assert.equal(before.source, "high-water mark");
    assert.equal(after.source, "high-water mark");
    // 256 MB touched after the first reading raises the peak by about that much, and a peak never
    // falls below what the process held at any moment.
    assert.ok(
      after.bytes - before.bytes >= 200 * MB,
      `peak rose ${(after.bytes - before.bytes) / MB} MB`,
    );
    assert.ok(after.bytes >= during, `peak ${after.bytes / MB} MB, held ${during / MB} MB`);
    assert.ok(after.bytes >= rss, `peak ${after.bytes / MB} MB, held ${rss / MB} MB`);
  },
);
