/** Atomic writes as several processes see them: a listing never takes a live writer's files. */
import assert from "node:assert/strict";
import * as fs from "node:fs";
import * as path from "node:path";
import { cleanTemporaries, recoverDir, runStatus } from "../lib/mod.ts";
import { freshDir } from "./_temp.ts";

/** A process that runs until killed, and the id of one that has ended (and was reaped). */
async function processes(): Promise<{ live: Deno.ChildProcess; deadPid: number }> {
  const ended = new Deno.Command("true").spawn();
  await ended.status;
  const live = new Deno.Command("sleep", { args: ["600"] }).spawn();
  return { live, deadPid: ended.pid };
}

Deno.test("reliability: another process's listing leaves a running writer's temporaries alone and recovers those of a writer that is gone", async () => {
  const { live, deadPid } = await processes();
  try {
    const run = freshDir("files-writers");
    fs.writeFileSync(path.join(run, "config.json"), "{}");
    const state = path.join(run, "state");
    fs.mkdirSync(state);
    fs.writeFileSync(path.join(state, "state.json"), "{}");
    // A running writer filling the next state (not complete yet), and a dead one's leftovers.
    const filling = `${state}.tmp-${live.pid}-0`;
    fs.mkdirSync(filling);
    const stale = `${state}.tmp-${deadPid}-3`;
    fs.mkdirSync(stale);
    fs.writeFileSync(path.join(run, `history.json.tmp-${live.pid}-1`), "[");
    fs.writeFileSync(path.join(run, `history.json.tmp-${deadPid}-2`), "[");

    assert.equal(runStatus(run), "resumable");
    assert.ok(fs.existsSync(filling), "the running writer's folder is kept");
    assert.ok(!fs.existsSync(stale), "the dead writer's folder is removed");
    assert.deepEqual(cleanTemporaries(run), [`history.json.tmp-${deadPid}-2`]);
    assert.ok(fs.existsSync(path.join(run, `history.json.tmp-${live.pid}-1`)));

    // Between the writer's two renames: its old state moved aside, its complete new one not yet in
    // place. A listing must not finish that for it (the writer's own rename would then fail).
    fs.writeFileSync(path.join(filling, "state.json"), "{}");
    fs.writeFileSync(path.join(filling, ".complete"), "");
    fs.renameSync(state, `${state}.old-${live.pid}-2`);
    recoverDir(state);
    assert.ok(!fs.existsSync(state), "left to the running writer");
    assert.ok(fs.existsSync(filling) && fs.existsSync(`${state}.old-${live.pid}-2`));

    // The writer killed there: the next listing finishes its replacement.
    live.kill("SIGKILL");
    await live.status;
    assert.equal(runStatus(run), "resumable");
    assert.ok(
      fs.existsSync(path.join(state, ".complete")),
      "the complete new state took its place",
    );
    assert.deepEqual(fs.readdirSync(run).sort(), [
      "config.json",
      "history.json.tmp-" + live.pid + "-1",
      "state",
    ]);
  } finally {
    try {
      live.kill("SIGKILL");
    } catch { /* already ended */ }
    await live.status;
  }
});
