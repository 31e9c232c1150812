import assert from "node:assert/strict";
import { chooseEngine, initBackend, withEnv } from "../../lib/mod.ts";

await initBackend();

/** Run `code` (which imports lib/mod.ts as `lib`) in a fresh Deno with `env`; its output. */
async function inFreshProcess(code: string, env: Record<string, string>) {
  const out = await new Deno.Command(Deno.execPath(), {
    args: [
      "eval",
      `const lib = await import("${new URL("../../lib/mod.ts", import.meta.url)}");\n${code}`,
    ],
    env: { TF_CPP_MIN_LOG_LEVEL: "3", ...env },
    stdout: "piped",
    stderr: "piped",
  }).output();
  return {
    code: out.code,
    stdout: new TextDecoder().decode(out.stdout).trim(),
    stderr: new TextDecoder().decode(out.stderr),
  };
}

Deno.test("select: with the native backend the graph engines run; an env var chooses eager on purpose; a wrong name is refused", () => {
  assert.equal(chooseEngine("training"), "graph");
  assert.equal(chooseEngine("inference"), "graph");
  assert.equal(chooseEngine("inference", "eager"), "eager");
  withEnv({ COVID_CXR_INFER_ENGINE: "eager" }, () => {
    assert.equal(chooseEngine("inference"), "eager");
  });
  withEnv({ COVID_CXR_INFER_ENGINE: "fast" }, () => {
    assert.throws(
      () => chooseEngine("inference"),
      /COVID_CXR_INFER_ENGINE must be one of graph, eager, got "fast"/,
    );
  });
});

Deno.test("select: without the native backend the eager engines run, said once in one line; asking for graph is an error", async () => {
  const fallback = await inFreshProcess(
    `await lib.initBackend({ quiet: true });
     console.log(lib.chooseEngine("training"), lib.chooseEngine("training"), lib.chooseEngine("inference"));`,
    { COVID_CXR_BACKEND: "cpu" },
  );
  assert.equal(fallback.code, 0, fallback.stderr);
  assert.equal(fallback.stdout, "eager eager eager");
  const notes = fallback.stderr.split("\n").filter((l) => l.startsWith("Note:"));
  assert.deepEqual(notes.map((l) => l.split(":")[1].trim()), [
    "training runs op by op (eager engine), slower than one TensorFlow graph",
    "inference runs op by op (eager engine), slower than one TensorFlow graph",
  ]);
  assert.match(notes[0], /the native TensorFlow backend is not live/);
  const forced = await inFreshProcess(
    `await lib.initBackend({ quiet: true });
     try { lib.chooseEngine("training"); } catch (e) { console.log(e.name + ": " + e.message); }`,
    { COVID_CXR_BACKEND: "cpu", COVID_CXR_TRAIN_ENGINE: "graph" },
  );
  assert.match(
    forced.stdout,
    /EngineError: The graph training engine was asked for, but the native TensorFlow backend is not live/,
  );
});
