/**
 * `deno task notebooks [--run DIR] [--quick] [--only 05,06]`: notebooks 00–06 executed in the Deno
 * kernel against one finished run, written with every output into <run>/notebooks/, and rendered
 * into one offline page, <run>/notebooks/index.html (lib/notebooks/).
 */
import {
  initBackend,
  isQuickRun,
  listRuns,
  loadOrTrainRun,
  loadRun,
  numberFlag,
  outputsRoot,
  parseFlags,
  renderRunNotebooks,
  resolveRunDir,
  runMain,
  setEnv,
  UsageError,
  userPath,
} from "../lib/mod.ts";

const USAGE = `Usage: deno task notebooks [--run DIR] [--quick] [--only 05,06]

Executes the notebooks against one finished run and writes <run>/notebooks/NN_name.ipynb (with
every output) and <run>/notebooks/index.html (one offline page to read or share).

  --run DIR       the run (default: outputs/latest; with --quick, the newest quick run). When
                  there is none, one is trained first, as deno task reproduce (--quick) would.
  --quick         use (or train) a quick run (128 px, 3 epochs): the notebooks then run quick too
  --only 05,06    only these notebooks (by number)
  --out DIR       the outputs folder to look in (else $COVID_CXR_OUTPUTS, else outputs/)
  --timeout S     longest a cell may run, seconds (default 3600: notebook 06 may train two models)`;

async function main() {
  const { values: v, positionals } = parseFlags(Deno.args, {
    run: { type: "string" },
    quick: { type: "boolean" },
    only: { type: "string" },
    out: { type: "string" },
    timeout: { type: "string" },
    help: { type: "boolean" },
  });
  if (v.help) return console.log(USAGE);
  if (positionals.length) throw new UsageError(`unexpected argument(s): ${positionals.join(" ")}`);
  const only = v.only?.split(",").map((s) => s.trim()).filter(Boolean);
  if (only?.some((o) => !/^\d\d$/.test(o))) {
    throw new UsageError(`--only takes notebook numbers like 05,06, got "${v.only}"`);
  }
  const timeoutSeconds = numberFlag("timeout", v.timeout, { integer: true, min: 10 });
  const root = outputsRoot(v.out === undefined ? undefined : userPath(v.out));
  let run;
  if (v.run) {
    run = loadRun(v.run === "latest" ? v.run : userPath(v.run), root);
    if (v.quick && !isQuickRun(run.summary.config)) {
      console.log(`--quick ignored: ${run.runDir} is a full run, and its settings decide.`);
    }
  } else if (v.quick) {
    run = listRuns(root).find((r) =>
      isQuickRun(r.summary.config) && r.summary.config.inputMask === "none"
    );
    if (!run) {
      console.log(
        `No finished quick run in ${root}: training one now (as deno task reproduce --quick; ` +
          "about a minute on 2 cores).",
      );
      setEnv("COVID_CXR_QUICK", "1");
      setEnv("COVID_CXR_OUTPUTS", root);
      await initBackend();
      run = await loadOrTrainRun({ config: {} });
    }
  } else {
    try {
      run = loadRun(resolveRunDir("latest", root));
    } catch {
      console.log(
        `No finished run in ${root}: training one now at the paper's settings (as deno task ` +
          "reproduce; about 8 minutes on 2 cores). --quick trains a small one instead.",
      );
      setEnv("COVID_CXR_OUTPUTS", root);
      await initBackend();
      run = await loadOrTrainRun({ config: {} });
    }
  }
  console.log(`Notebooks against ${run.runDir}`);
  const t0 = performance.now();
  const result = await renderRunNotebooks(run, { only, timeoutSeconds });
  console.log(
    `\nWrote ${result.notebooks.length} executed notebooks and ${result.html} ` +
      `(${(result.htmlBytes / 1e6).toFixed(1)} MB) in ${
        ((performance.now() - t0) / 60000).toFixed(1)
      } min: ${result.notebooks.map((n) => `${n.name} ${n.seconds.toFixed(0)} s`).join(", ")}`,
  );
}

await runMain(main, USAGE);
