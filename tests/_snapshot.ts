/**
 * A tiny snapshot helper (std's snapshot module lives on jsr.io, unreachable here): text compared
 * with `tests/testdata/<name>`. `UPDATE_SNAPSHOTS=1 deno task test --filter …` rewrites them; a
 * missing snapshot is a failure otherwise.
 */
import assert from "node:assert/strict";
import * as fs from "node:fs";
import * as path from "node:path";

const DIR = path.join(import.meta.dirname!, "testdata");

export function assertSnapshot(name: string, actual: string): void {
  const file = path.join(DIR, name);
  if (Deno.env.get("UPDATE_SNAPSHOTS") === "1") {
    fs.mkdirSync(DIR, { recursive: true });
    fs.writeFileSync(file, actual);
    return;
  }
  assert.ok(fs.existsSync(file), `no snapshot ${file}: run with UPDATE_SNAPSHOTS=1 to write it`);
  assert.equal(actual, fs.readFileSync(file, "utf8"), `differs from snapshot ${name}`);
}
