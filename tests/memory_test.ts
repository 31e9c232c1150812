import assert from "node:assert/strict";
import { projectPath } from "../lib/mod.ts";

/** Run `code` in a Deno process of its own; what it printed as JSON. */
async function runChild(code: string) {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["eval", "--ext=ts", code],
    stdout: "piped",
    stderr: "piped",
  }).output();
  assert.equal(out.code, 0, new TextDecoder().decode(out.stderr));
  return JSON.parse(new TextDecoder().decode(out.stdout));
}

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
    const { before, during, after, rss } = await runChild(CHILD);
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

// 256 MB of the C heap in 64 KB blocks (below glibc's mmap threshold), all freed but the last,
// which keeps the heap's top where it is, so free() alone gives nothing back.
const TRIM_CHILD = `
import { releaseFreedMemory } from ${JSON.stringify(projectPath("lib", "memory.ts"))};
const libc = Deno.dlopen("libc.so.6", {
  malloc: { parameters: ["usize"], result: "pointer" },
  free: { parameters: ["pointer"], result: "void" },
  memset: { parameters: ["pointer", "i32", "usize"], result: "pointer" },
});
const blocks = [];
for (let i = 0; i < 4096; i++) {
  const p = libc.symbols.malloc(65536n);
  libc.symbols.memset(p, 1, 65536n);
  blocks.push(p);
}
for (const p of blocks.slice(0, -1)) libc.symbols.free(p);
const held = Deno.memoryUsage().rss;
const ran = releaseFreedMemory();
const after = Deno.memoryUsage().rss;
console.log(JSON.stringify({ held, after, ran }));
`;

Deno.test(
  "memory: after training, the C heap's freed memory goes back to the system (glibc's malloc_trim)",
  {
    ignore: Deno.build.os !== "linux",
  },
  async () => {
    const { held, after, ran } = await runChild(TRIM_CHILD);
    const MB = 2 ** 20;
    assert.equal(ran, true, "glibc's malloc_trim is there on Linux");
    assert.ok(held - after >= 200 * MB, `resident ${held / MB} → ${after / MB} MB`);
  },
);
