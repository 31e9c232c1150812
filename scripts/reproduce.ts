/**
 * `deno task reproduce`: the paper's training and evaluation, end to end, into outputs/<run-id>/.
 * Calls the library's stages in the paper's order (lib/runs/experiment.ts wires them).
 */
import * as fs from "node:fs";
import * as path from "node:path";
import {
  canStopPolitely,
  describeSessionSettings,
  ensureJupyter,
  initBackend,
  INPUT_MASKS,
  type InputMask,
  loadRun,
  numberFlag,
  parseFlags,
  quickMode,
  renderRunNotebooks,
  requestStop,
  resolveExternalDir,
  type RunConfig,
  runConfig,
  runExperiment,
  runMain,
  runSweep,
  sessionSettings,
  setEnv,
  stopRequested,
  UsageError,
  userPath,
  userPaths,
} from "../lib/mod.ts";

const USAGE = `Usage: deno task reproduce [options]

Trains MobileNetV3-Large as the paper does (446 px, 8 epochs, torchvision's ImageNet weights) and
evaluates it on the test folder. Writes outputs/<run-id>/ (report.md, metrics, figures, checkpoint).

  --data DIR              data set folder with train/ and test/ (else $COVID_CXR_DATA, else data/Covid19-dataset)
  --weights SRC           torchvision (default; also "imagenet"): torchvision's ImageNet weights,
                            the paper's, downloaded once (mobilenet_v3_large-8738ca79.pth)
                          keras: Keras's ImageNet weights (another training run, Keras's padding
                            and normalisation)
                          FILE.pth|FILE.pt: a torchvision MobileNetV3-Large state_dict (1000 classes:
                            the head is swapped; N classes: loaded whole), or a Keras FILE.h5
                          none: random initialisation (not comparable to the paper)
  --epochs N              default 8
  --image-size N          default 446
  --batch-size N          default 4
  --lr X                  initial learning rate, default 0.001
  --momentum X            default 0.9
  --bn-momentum X         BatchNorm moving-average momentum, default 0.99 (Keras convention)
  --seed N                one seed for split, order, augmentation, initialisation, dropout; default 42
  --validation-fraction X share of the training folder held out, default 0.14 (35 of 251)
  --stratify              hold out the same share of each class
  --max-pixels N          refuse images larger than this (decompression-bomb guard)
  --exif-rotate           rotate images by their EXIF orientation tag (the paper's pipeline, PIL's
                          ImageFolder, does not; tagged images are listed in data_report.json)
  --skip-bad              leave unreadable images out (listed in data_report.json) instead of stopping
  --external DIR          after the test set, evaluate the kept model on an external ImageFolder
                          (with its MANIFEST.tsv: broken down by source, view, age, sex, patient)
                          into <run>/external/ (else $COVID_CXR_EXTERNAL, else none)
  --prevalence P          also give PPV and NPV at this prevalence (0–1, e.g. 0.05), besides the
                          test set's own class shares
  --out DIR               outputs folder (else $COVID_CXR_OUTPUTS, else outputs/)
  --resume [DIR]          continue an interrupted run (default: the newest unfinished one in the
                          outputs folder), with its own settings
  --seeds 1,2,3,4,5       run once per seed into outputs/sweep_…/seed<N>/ and report the spread of
                          every test metric (re-running the same command continues a sweep)
  --mask MODE             review experiment: none (default) | border-only | lung-only
  --notebooks             at the end, execute notebooks 00–06 against the run into
                          <run>/notebooks/ and write the offline page <run>/notebooks/index.html
                          (as deno task notebooks; report.md links it)
  --quick                 small budget (128 px, 3 epochs, batch 8, lr 0.01, BatchNorm momentum 0.9)
                          for a first look; not comparable to the paper
  --help`;

const FLAGS = {
  data: { type: "string" },
  weights: { type: "string" },
  epochs: { type: "string" },
  "image-size": { type: "string" },
  "batch-size": { type: "string" },
  lr: { type: "string" },
  momentum: { type: "string" },
  "bn-momentum": { type: "string" },
  seed: { type: "string" },
  "validation-fraction": { type: "string" },
  stratify: { type: "boolean" },
  "max-pixels": { type: "string" },
  "skip-bad": { type: "boolean" },
  "exif-rotate": { type: "boolean" },
  external: { type: "string" },
  prevalence: { type: "string" },
  out: { type: "string" },
  resume: { type: "boolean" },
  quick: { type: "boolean" },
  notebooks: { type: "boolean" },
  seeds: { type: "string" },
  mask: { type: "string" },
  help: { type: "boolean" },
} as const;

type Flags = ReturnType<typeof parseFlags<typeof FLAGS>>["values"];

/** The run's settings from the flags (only those given; the rest are the paper's). */
function configFromFlags(v: Flags): Partial<RunConfig> {
  const overrides: Partial<RunConfig> = {};
  const set = <K extends keyof RunConfig>(key: K, value: RunConfig[K] | undefined) => {
    if (value !== undefined) overrides[key] = value;
  };
  const keywords = ["torchvision", "imagenet", "keras", "none"];
  set("weights", v.weights && !keywords.includes(v.weights) ? userPath(v.weights) : v.weights);
  set("epochs", numberFlag("epochs", v.epochs, { integer: true, min: 1 }));
  set(
    "imageSize",
    numberFlag("image-size", v["image-size"], { integer: true, min: 32, max: 1024 }),
  );
  set("batchSize", numberFlag("batch-size", v["batch-size"], { integer: true, min: 1 }));
  set("learningRate", numberFlag("lr", v.lr, { min: 0 }));
  set("momentum", numberFlag("momentum", v.momentum, { min: 0, max: 1 }));
  set("batchNormMomentum", numberFlag("bn-momentum", v["bn-momentum"], { min: 0, max: 1 }));
  set("seed", numberFlag("seed", v.seed, { integer: true }));
  if (v["validation-fraction"] !== undefined && Number(v["validation-fraction"]) === 0) {
    throw new UsageError(
      "--validation-fraction must be above 0: the method keeps the weights with the lowest " +
        "validation loss, so it needs validation images (the paper holds out 0.14)",
    );
  }
  set(
    "validationFraction",
    numberFlag("validation-fraction", v["validation-fraction"], { above: 0, max: 0.9 }),
  );
  set("maxPixels", numberFlag("max-pixels", v["max-pixels"], { integer: true, min: 1 }));
  if (v.stratify) overrides.stratify = true;
  if (v["exif-rotate"]) overrides.exifRotate = true;
  if (v.mask !== undefined) {
    if (!(INPUT_MASKS as readonly string[]).includes(v.mask)) {
      throw new UsageError(`--mask must be one of ${INPUT_MASKS.join(", ")}, got "${v.mask}"`);
    }
    overrides.inputMask = v.mask as InputMask;
  }
  return overrides;
}

async function main() {
  const parsed = parseFlags(Deno.args, FLAGS);
  // Paths as the user typed them, from the folder the task was run in (not the project's).
  const v = userPaths(parsed.values, ["data", "out", "external"]);
  const positionals = parsed.positionals.map(userPath);
  if (v.help) {
    console.log(USAGE);
    return;
  }
  // `--resume` may be followed by a folder (a positional, since parseArgs has no optional values).
  if (positionals.length > (v.resume ? 1 : 0)) {
    throw new UsageError(`unexpected argument(s): ${positionals.join(" ")}`);
  }
  if (v.quick) setEnv("COVID_CXR_QUICK", "1");
  const overrides = configFromFlags(v);
  const seeds = v.seeds?.split(",").map((s, i) =>
    numberFlag(`seeds (item ${i + 1})`, s.trim(), { integer: true })!
  );
  if (seeds && v.notebooks) {
    throw new UsageError(
      "--notebooks executes the notebooks against one run; for a sweep, run deno task notebooks " +
        "--run <sweep>/seed<N> afterwards",
    );
  }
  if (seeds && (v.resume || overrides.seed !== undefined)) {
    throw new UsageError(
      "--seeds runs a sweep; it does not combine with --seed or --resume (re-run it to continue)",
    );
  }

  if (v.notebooks) ensureJupyter(); // before training, not after it
  // A resumed run keeps the external set it started with; only a flag given now is compared.
  const external = v.resume
    ? v.external && resolveExternalDir(v.external)
    : resolveExternalDir(v.external);
  const prevalence = numberFlag("prevalence", v.prevalence, { above: 0, below: 1 });
  const backend = await initBackend();
  const config = runConfig(overrides);
  console.log(
    `Backend: ${backend.backend} (${backend.package} ${
      backend.versions["tfjs-node"] ?? backend.versions.tfjs
    })` +
      (quickMode() ? " · QUICK MODE (not comparable to the paper)" : ""),
  );
  // Read now, so a bad COVID_CXR_PRECISION/THREADS stops the run before any work.
  const session = describeSessionSettings(sessionSettings());
  if (session.length) console.log(`TensorFlow sessions: ${session.join("; ")}`);
  if (!v.resume) {
    console.log(
      `Settings: ${config.imageSize} px, ${config.epochs} epochs, batch ${config.batchSize}, lr ${config.learningRate}, ` +
        `momentum ${config.momentum}, seed ${config.seed}, weights ${config.weights}`,
    );
  }
  if (seeds) {
    await runSweep(seeds, {
      config: overrides,
      data: v.data,
      outputs: v.out,
      skipBad: v["skip-bad"],
      external,
      prevalence,
    });
    return;
  }
  const { runDir } = await runExperiment({
    config: overrides,
    data: v.data,
    outputs: v.out,
    resume: v.resume ? positionals[0] ?? true : undefined,
    skipBad: v["skip-bad"],
    external,
    prevalence,
    onStart: sayHowToResumeOnCtrlC,
  });
  if (v.notebooks) {
    console.log("\nExecuting the notebooks against this run (deno task notebooks)");
    const result = await renderRunNotebooks(loadRun(runDir));
    console.log(`Notebooks: ${result.html} (${(result.htmlBytes / 1e6).toFixed(1)} MB)`);
  }
}

/**
 * Ctrl-C: during training, the run stops after the current step and saves it (a second Ctrl-C
 * stops at once, back to the last saved point); before or after, it stops where it is. Either
 * way it says how to continue.
 */
function sayHowToResumeOnCtrlC(runDir: string) {
  Deno.addSignalListener("SIGINT", () => {
    if (canStopPolitely() && !stopRequested()) {
      requestStop();
      console.error(
        "\nStopping after the current training step, saving it (Ctrl-C again to stop at once) …",
      );
      return;
    }
    const saved = fs.existsSync(path.join(runDir, "state", "state.json"));
    console.error(
      saved
        ? `\nInterrupted. Continue from the last saved point with:\n  deno task reproduce --resume ${runDir}`
        : `\nInterrupted before the first epoch was saved; nothing to continue (${runDir} is removed ` +
          "when a run fails this early; delete it if it remains).",
    );
    Deno.exit(130);
  });
}

await runMain(main, USAGE);
