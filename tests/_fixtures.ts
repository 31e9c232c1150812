/**
 * Test inputs made on demand: a test asks for what it needs (and pays for it only then), so every
 * test also passes alone (`deno test --filter X`). Synthetic data sets are made once per test
 * file; the tiny run once per suite (tests/_suite.ts).
 */
import * as fs from "node:fs";
import * as path from "node:path";
import { type FinishedRun, listRuns, loadRun, projectPath, runExperiment } from "../lib/mod.ts";
import { makeSyntheticDataset } from "./_synthetic.ts";
import { suiteFixture } from "./_suite.ts";
import { freshDir, workDir } from "./_temp.ts";

const datasets = new Map<string, Promise<string>>();

/**
 * A synthetic 3-class data set at `root` (12 training and 4 test images per class by default).
 * `leaked` test images are byte copies of training images (named `copy-*`), the data set's known
 * defect in miniature.
 */
async function makeSyntheticData(
  root: string,
  opts: { train?: number; test?: number; leaked?: number },
): Promise<string> {
  const { train = 12, test = 4, leaked = 0 } = opts;
  await makeSyntheticDataset(root, { train, test });
  for (const c of ["Covid", "Normal", "Viral Pneumonia"].slice(0, leaked)) {
    const src = fs.readdirSync(path.join(root, "train", c)).sort()[0];
    fs.copyFileSync(path.join(root, "train", c, src), path.join(root, "test", c, `copy-${src}`));
  }
  return root;
}

/** {@link makeSyntheticData} once per test file for each set of options (a copy of its own). */
export function syntheticData(
  opts: { train?: number; test?: number; leaked?: number } = {},
): Promise<string> {
  const key = `${opts.train ?? 12}-${opts.test ?? 4}-${opts.leaked ?? 0}`;
  let made = datasets.get(key);
  if (!made) {
    made = makeSyntheticData(path.join(workDir(), `data-${key}`), opts);
    datasets.set(key, made);
  }
  return made;
}

/** Settings for a run of a few seconds on the synthetic data. */
export const TINY = Object.freeze({
  imageSize: 32,
  epochs: 2,
  batchSize: 8,
  weights: "none",
  learningRate: 0.01,
});

/** {@link TINY} as `deno task reproduce` flags; `overrides` change single settings. */
export function tinyArgs(
  overrides: { imageSize?: number; epochs?: number; batchSize?: number; learningRate?: number } =
    {},
): string[] {
  const t = { ...TINY, ...overrides };
  return [
    ...["--image-size", String(t.imageSize), "--epochs", String(t.epochs)],
    ...[
      "--batch-size",
      String(t.batchSize),
      "--weights",
      t.weights,
      "--lr",
      String(t.learningRate),
    ],
  ];
}

let run: Promise<FinishedRun & { data: string }> | undefined;

/**
 * One finished tiny run on synthetic data with 2 leaked test images: trained once per suite
 * (tests/_suite.ts) and copied into this test file's own folder, so that a test may write beside
 * its checkpoint. `data` is the shared data set (read it, do not change it).
 */
export function tinyRun(): Promise<FinishedRun & { data: string }> {
  run ??= (async () => {
    const shared = await suiteFixture("tiny-run", async (dir) => {
      const data = await makeSyntheticData(path.join(dir, "data"), { leaked: 2 });
      await runExperiment({
        config: TINY,
        data,
        outputs: path.join(dir, "runs"),
        quiet: true,
        log: () => {},
      });
    });
    const made = listRuns(path.join(shared, "runs"))[0];
    const runDir = path.join(freshDir("tiny-run"), path.basename(made.runDir));
    fs.cpSync(made.runDir, runDir, { recursive: true });
    return { ...loadRun(runDir), data: path.join(shared, "data") };
  })();
  return run;
}

/**
 * Run a task script (`scripts/<name>.ts`) in a fresh Deno; its exit code and all its output.
 * COVID_CXR_EXTERNAL is cleared (CI sets it) so that only tests that ask for the external set pay
 * for evaluating on it.
 */
export async function runScript(
  name: string,
  args: string[],
  env: Record<string, string> = {},
): Promise<{ code: number; text: string; stdout: string }> {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", projectPath("scripts", `${name}.ts`), ...args],
    env: { NO_COLOR: "1", COVID_CXR_EXTERNAL: "", ...env },
    stdout: "piped",
    stderr: "piped",
  }).output();
  const stdout = new TextDecoder().decode(out.stdout);
  return { code: out.code, stdout, text: stdout + new TextDecoder().decode(out.stderr) };
}

/**
 * Names of the run folders directly under `root` (not the `latest` link) that hold `file`, sorted.
 * Safe while a run is writing there: the run's short-lived probe and temporary files may vanish
 * between listing and looking, so a name is only examined through `file` inside it.
 */
export function runFoldersHolding(root: string, file = "config.json"): string[] {
  if (!fs.existsSync(root)) return [];
  const holds = (f: string) => {
    if (!fs.existsSync(path.join(root, f, file))) return false;
    try {
      return !fs.lstatSync(path.join(root, f)).isSymbolicLink();
    } catch {
      return false; // removed after the check above
    }
  };
  return fs.readdirSync(root).filter(holds).sort();
}

/**
 * Start `scripts/reproduce.ts ARGS` in the background and wait (up to 2 minutes) until a run folder
 * in `out` holds its first epoch's resume state. The caller stops the child (the tests kill it).
 * `runDir` is that folder's path, or "" when none appeared in time.
 */
export async function startRunUntilFirstEpoch(
  args: string[],
  out: string,
  output: "piped" | "null" = "piped",
): Promise<{ child: Deno.ChildProcess; runDir: string }> {
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", projectPath("scripts", "reproduce.ts"), ...args, "--out", out],
    env: { NO_COLOR: "1", COVID_CXR_EXTERNAL: "" },
    stdout: output,
    stderr: output,
  }).spawn();
  const deadline = Date.now() + 120_000;
  while (Date.now() < deadline) {
    const [dir] = runFoldersHolding(out, path.join("state", "state.json"));
    if (dir) return { child, runDir: path.join(out, dir) };
    await new Promise((r) => setTimeout(r, 50));
  }
  return { child, runDir: "" };
}
