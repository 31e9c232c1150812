import assert from "node:assert/strict";
import * as fs from "node:fs";
import * as path from "node:path";
import { projectPath } from "../../lib/mod.ts";
import { dataAvailable, executeNotebook, listNotebooks } from "../_notebook.ts";

// Notebook 04 trains (quick mode) into this folder; 05 and 06 read a finished run from it. Never
// the project's outputs/, whose "latest" may be a reader's real run.
const OUTPUTS = await Deno.makeTempDir({ prefix: "notebook-outputs-" });
globalThis.addEventListener("unload", () => Deno.removeSync(OUTPUTS, { recursive: true }));

/** Notebooks that read the newest finished run (they do not train their main run themselves). */
const READS_LATEST = ["05_evaluation", "06_review"];

/**
 * A finished quick run in OUTPUTS (what notebook 04 leaves behind), so that 05 and 06 also pass
 * when run alone.
 */
async function ensureFinishedRun(): Promise<void> {
  if (fs.existsSync(path.join(OUTPUTS, "latest", "summary.json"))) return;
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", projectPath("scripts", "reproduce.ts"), "--quick", "--weights", "none"],
    env: { COVID_CXR_OUTPUTS: OUTPUTS },
    stdout: "piped",
    stderr: "piped",
  }).output();
  assert.equal(out.code, 0, new TextDecoder().decode(out.stderr));
}

for (const file of listNotebooks()) {
  const name = path.basename(file, ".ipynb");
  Deno.test({
    name: `notebook ${name} executes headlessly through the Deno kernel with no error output`,
    // Ignored only when no data set is configured at all; a configured one that is wrong fails.
    ignore: name !== "00_environment" && !Deno.env.get("COVID_CXR_DATA") && !dataAvailable(),
    fn: async () => {
      if (READS_LATEST.includes(name)) await ensureFinishedRun();
      const run = await executeNotebook(file, { env: { COVID_CXR_OUTPUTS: OUTPUTS } });
      assert.deepEqual(run.errors, [], `${name}: error outputs`);
      assert.ok(run.outputTypes.some((t) => t.length > 0), `${name}: no cell produced output`);
      assert.deepEqual(run.figuresMissing, [], `${name}: figure cells without an image`);
      if (READS_LATEST.includes(name)) {
        // The external set's results beside the test set's when one is configured (CI sets
        // COVID_CXR_EXTERNAL); else the reader is told how to configure one.
        assert.match(
          run.text,
          Deno.env.get("COVID_CXR_EXTERNAL")
            ? /external, as stored[\s\S]*Normal called Covid/
            : /No external set is configured/,
          `${name}: the external section`,
        );
      }
      console.log(`${name}: ${run.seconds.toFixed(1)} s`);
    },
  });
}

Deno.test("notebook code type-checks and lints clean (every code cell of every notebook, as one module each)", async () => {
  // Outside notebooks/ (which deno.json leaves out of lint), importing the library by its path.
  const dir = await Deno.makeTempDir({ prefix: "notebook-code-" });
  const files: string[] = [];
  try {
    for (const file of listNotebooks()) {
      const nb = JSON.parse(await Deno.readTextFile(file));
      const code = nb.cells
        .filter((c: { cell_type: string }) => c.cell_type === "code")
        .map((c: { source: string[] }) => c.source.join(""))
        .join("\n\n")
        .replaceAll('"../lib/mod.ts"', JSON.stringify(projectPath("lib", "mod.ts")));
      const ts = path.join(dir, `${path.basename(file, ".ipynb")}.ts`);
      await Deno.writeTextFile(ts, `${code}\nexport {};\n`);
      files.push(ts);
    }
    const config = ["--config", projectPath("deno.json")];
    for (const command of [["check", ...config, ...files], ["lint", ...config, ...files]]) {
      const out = await new Deno.Command(Deno.execPath(), {
        args: command,
        cwd: dir,
        stdout: "piped",
        stderr: "piped",
      }).output();
      const text = new TextDecoder().decode(out.stdout) + new TextDecoder().decode(out.stderr);
      assert.equal(out.code, 0, `deno ${command[0]}: ${text}`);
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
