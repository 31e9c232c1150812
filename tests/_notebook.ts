/**
 * The project's notebooks for tests, whether a data set is there to run them on, and the notebooks
 * task's quick run shared by the headless and the browser tests.
 */
import * as fs from "node:fs";
import * as path from "node:path";
import { projectNotebooks, projectPath, resolveDataDir } from "../lib/mod.ts";
import { suiteFixture } from "./_suite.ts";

/** Every notebook the project ships, sorted. */
export const listNotebooks = projectNotebooks;

/** "05_evaluation" for notebooks/05_evaluation.ipynb. */
export const notebookName = (file: string) => path.basename(file, ".ipynb");

/** True when a data set is configured (COVID_CXR_DATA or data/Covid19-dataset) and present. */
export function dataAvailable(): boolean {
  try {
    resolveDataDir();
    return true;
  } catch {
    return false;
  }
}

/** What `deno task notebooks --quick` did in a fresh outputs folder. */
export interface QuickNotebooks {
  /** Its exit code and everything it printed. */
  code: number;
  text: string;
  /** The outputs folder it trained into: the quick run, its masked runs and its seed sweep. */
  outputs: string;
  /** <run>/notebooks, with the executed notebooks and index.html, when the task finished. */
  dir?: string;
}

/**
 * `deno task notebooks --quick` in a fresh outputs folder (never the project's outputs/, whose
 * "latest" may be a reader's real run), once per suite: the headless test checks what it did and
 * the browser test reuses the runs it trained instead of training them again.
 */
export async function quickNotebooks(): Promise<QuickNotebooks> {
  const fixture = await suiteFixture("notebooks-quick", async (dir) => {
    const outputs = path.join(dir, "outputs");
    const out = await new Deno.Command(Deno.execPath(), {
      args: ["run", "-A", projectPath("scripts", "notebooks.ts"), "--quick", "--out", outputs],
      env: { NO_COLOR: "1" },
      stdout: "piped",
      stderr: "piped",
    }).output();
    const text = new TextDecoder().decode(out.stdout) + new TextDecoder().decode(out.stderr);
    fs.writeFileSync(path.join(dir, "task.json"), JSON.stringify({ code: out.code, text }));
  });
  const outputs = path.join(fixture, "outputs");
  const latest = path.join(outputs, "latest");
  const dir = fs.existsSync(latest) ? path.join(fs.realpathSync(latest), "notebooks") : undefined;
  const task = JSON.parse(fs.readFileSync(path.join(fixture, "task.json"), "utf8"));
  return { code: task.code, text: task.text, outputs, dir };
}
