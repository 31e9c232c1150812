/**
 * The bench harness: each configuration (TF.js, TF.js with an option on, PyTorch peers) timed on
 * every figure in a fresh worker process, configurations interleaved over the repetitions, the
 * data-pipeline figures and a profile of the training step; results written after each figure.
 * `scripts/bench.ts` (the task) parses the flags into a {@link BenchPlan} and calls
 * {@link runBench}.
 */
import * as fs from "node:fs";
import * as path from "node:path";
import {
  outputsRoot,
  projectPath,
  updateLatest,
  writeFileAtomic,
  writeJsonAtomic,
} from "../lib/mod.ts";
import { type Measurement, renderProfile, resultsTable } from "./report.ts";

export const TORCH = ["torch==2.14.1", "torchvision==0.29.1"];
const VENV = projectPath(".venv-bench");

/** TF.js options the bench can switch on, each as the environment of a fresh process. */
export const TFJS_OPTIONS: Record<string, Record<string, string>> = {
  bf16: { COVID_CXR_PRECISION: "bf16" },
  xla: { COVID_CXR_XLA: "1" },
  "xla-fusible": {
    TF_XLA_FLAGS: "--tf_xla_auto_jit=2 --tf_xla_cpu_global_jit --tf_xla_ops_to_cluster=FUSIBLE",
  },
  "threads-2-1": { COVID_CXR_THREADS: "2,1" },
  "threads-1-2": { COVID_CXR_THREADS: "1,2" },
  // The training step with TensorFlow's own kernels, beside the fused ones (the default
  // where setup built them): the bench shows both unless told otherwise.
  "standard-kernels": { COVID_CXR_KERNELS: "standard" },
};
export const PEERS = ["nchw", "channels_last", "bf16"];

/** What one bench invocation measures. */
export interface BenchPlan {
  sizes: number[];
  batches: number[];
  modes: string[];
  reps: number;
  steps: number;
  threads: number;
  /** Configurations left out ("tfjs:train:446:16", "pytorch:…"). */
  skip: Set<string>;
  peers: string[];
  /** TF.js options timed as their own configurations. */
  options: string[];
  /** The data set for the pipeline figures (none: no pipeline figures). */
  data?: string;
  /** The profiled training step (none: no profile). */
  profile?: { size: number; batch: number };
}

/** A way to measure: a worker's arguments in, a measurement (or why it failed) out. */
type Runner = (args: string[]) => Promise<Measurement | { error: string }>;

/** One measurement in a fresh process: its last stdout line is the JSON result. */
async function runWorker(
  cmd: string,
  args: string[],
  env: Record<string, string>,
): Promise<Measurement | { error: string }> {
  const out = await new Deno.Command(cmd, { args, env, stdout: "piped", stderr: "piped" }).output();
  const stdout = new TextDecoder().decode(out.stdout).trim().split("\n").at(-1) ?? "";
  if (out.code !== 0 || !stdout.startsWith("{")) {
    const reason = out.signal === "SIGKILL" || out.code === 137
      ? "killed (out of memory)"
      : new TextDecoder().decode(out.stderr).trim().split("\n").slice(-3).join(" | ");
    return { error: reason || `exit ${out.code}` };
  }
  return JSON.parse(stdout);
}

/**
 * The thread settings both frameworks read: PyTorch's OpenMP pool and TensorFlow's intra-op pool
 * (the threads one op splits its work over) get `threads`. TensorFlow's inter-op pool (how many
 * ops run at once) is left to TensorFlow, as `deno task reproduce` leaves it (one per core), so
 * small ops that do not fill the cores alone run side by side, which matters at batch 1. The
 * `threads-2-1` option pins it to one, so the bench can show what that costs.
 */
function threadEnv(threads: number): Record<string, string> {
  return {
    OMP_NUM_THREADS: String(threads),
    MKL_NUM_THREADS: String(threads),
    TF_NUM_INTRAOP_THREADS: String(threads),
    TF_CPP_MIN_LOG_LEVEL: "2",
  };
}

async function ensureTorch(): Promise<string> {
  const python = path.join(VENV, "bin", "python");
  const stamp = path.join(VENV, ".bench-stamp.json");
  if (fs.existsSync(stamp) && fs.readFileSync(stamp, "utf8").includes(TORCH.join(" "))) {
    return python;
  }
  fs.rmSync(VENV, { recursive: true, force: true });
  console.error(
    `• Creating ${VENV} with ${TORCH.join(", ")} (large; from PyPI or the local wheel store) …`,
  );
  const venv = await new Deno.Command("python3", { args: ["-m", "venv", VENV] }).output();
  if (!venv.success) {
    throw new Error(`python3 -m venv ${VENV} failed: ${new TextDecoder().decode(venv.stderr)}`);
  }
  const pip = await new Deno.Command(python, {
    args: ["-m", "pip", "install", "--disable-pip-version-check", "-q", ...TORCH],
    stdout: "inherit",
    stderr: "inherit",
  }).output();
  if (!pip.success) {
    throw new Error(
      `Cannot install ${TORCH.join(" ")} into ${VENV}; use --tfjs-only to bench TF.js alone`,
    );
  }
  fs.writeFileSync(stamp, JSON.stringify({ packages: TORCH.join(" ") }));
  return python;
}

/**
 * The profile's setting: one op at a time (TensorFlow's inter-op pool pinned to one thread), so
 * that each op's traced time is its own. With two at once, two ops share the cores and each one's
 * time counts the other's (oneDNN's matrix products 174 ms a b4 step instead of 80).
 */
const ONE_OP_AT_A_TIME = { TF_NUM_INTEROP_THREADS: "1" };

/**
 * The configurations, in the order they are interleaved: TF.js, its options, the PyTorch peers;
 * `tfjsEnv` is added to every TF.js configuration's environment.
 */
function configurations(
  plan: BenchPlan,
  python?: string,
  tfjsEnv: Record<string, string> = {},
): [string, Runner][] {
  const env = threadEnv(plan.threads);
  const tfjs = (extra: Record<string, string> = {}): Runner => (args) =>
    runWorker(Deno.execPath(), ["run", "-A", projectPath("bench", "tfjs_worker.ts"), ...args], {
      ...env,
      ...tfjsEnv,
      ...extra,
    });
  const torch = (variant: string): Runner => (args) =>
    runWorker(
      python!,
      [
        projectPath("bench", "torch_worker.py"),
        "--threads",
        String(plan.threads),
        "--variant",
        variant,
        ...args,
      ],
      env,
    );
  return [
    ["tfjs", tfjs()],
    ...plan.options.map((o): [string, Runner] => [`tfjs+${o}`, tfjs(TFJS_OPTIONS[o])]),
    ...plan.peers.map((p): [string, Runner] => [`pytorch-${p}`, torch(p)]),
  ];
}

/** Every step figure (mode × size × batch), each configuration `reps` times, interleaved. */
async function measureSteps(
  plan: BenchPlan,
  runners: [string, Runner][],
  record: (m: Measurement[]) => Promise<void>,
): Promise<void> {
  for (const mode of plan.modes) {
    for (const size of plan.sizes) {
      for (const batch of plan.batches) {
        const args = ["--mode", mode, "--size", String(size), "--batch", String(batch)];
        const merged: Record<string, Measurement> = {};
        for (let r = 0; r < plan.reps; r++) {
          // Interleaved: each configuration once, then again … so drift hits all alike.
          for (const [framework, runner] of runners) {
            const family = framework.startsWith("tfjs") ? "tfjs" : "pytorch";
            if (
              plan.skip.has(`${framework}:${mode}:${size}:${batch}`) ||
              plan.skip.has(`${family}:${mode}:${size}:${batch}`)
            ) continue;
            console.error(
              `  ${framework} ${mode} ${size}px batch ${batch} (rep ${r + 1}/${plan.reps})`,
            );
            const m = await runner([...args, "--steps", String(plan.steps)]);
            const into = merged[framework] ??= {
              framework,
              mode,
              size,
              batch,
              msPerImage: [],
              peakRssMB: 0,
            };
            if ("error" in m) into.failed = m.error;
            else {
              into.msPerImage!.push(...m.msPerImage!);
              into.peakRssMB = Math.max(into.peakRssMB, m.peakRssMB);
              into.threadPools ??= m.threadPools;
            }
          }
        }
        await record(Object.values(merged));
      }
    }
  }
}

/** The data pipeline at 446 px, batch 4: decode, augmented batches, a whole epoch (both sides). */
async function measurePipeline(
  data: string,
  runners: [string, Runner][],
  record: (m: Measurement[]) => Promise<void>,
): Promise<void> {
  const size = 446, batch = 4;
  const runner = (name: string) => runners.find(([f]) => f === name)?.[1];
  const one = async (framework: string, mode: string) => {
    const m = await runner(framework)!([
      "--mode",
      mode,
      "--size",
      String(size),
      "--batch",
      String(batch),
      "--data",
      data,
    ]);
    await record([
      "error" in m
        ? { framework, mode, size, batch, peakRssMB: 0, failed: m.error }
        : { ...m, framework },
    ]);
  };
  for (const mode of ["decode", "batches", "epoch"]) {
    console.error(`  tfjs ${mode} ${size}px`);
    await one("tfjs", mode);
  }
  if (runner("pytorch-nchw")) {
    console.error(`  pytorch epoch ${size}px (the paper's pipeline: decode every epoch)`);
    await one("pytorch-nchw", "epoch");
  }
}

/** Run the plan; results go to outputs/bench/<stamp>/ after each figure. Returns that folder. */
export async function runBench(plan: BenchPlan): Promise<{ dir: string; table: string }> {
  const python = plan.peers.length ? await ensureTorch() : undefined;
  const runners = configurations(plan, python);
  const results: Measurement[] = [];
  const started = new Date();
  // Written after each figure, so a failure later (or Ctrl-C) keeps what was measured.
  const dir = path.join(
    outputsRoot(),
    "bench",
    started.toISOString().slice(0, 19).replace(/[-:]/g, "").replace("T", "-"),
  );
  let profile: string | undefined;
  const save = async () => {
    const t = resultsTable(results, runners.map(([name]) => name));
    await writeJsonAtomic(path.join(dir, "results.json"), {
      started,
      threads: plan.threads,
      reps: plan.reps,
      steps: plan.steps,
      configurations: runners.map(([name]) => name),
      results,
    });
    await writeFileAtomic(
      path.join(dir, "results.md"),
      `# Benchmark ${started.toISOString()}\n\n${plan.threads} threads, ${plan.reps} repetitions × ` +
        `${plan.steps} timed steps; fresh process per measurement, configurations interleaved. ` +
        "Cells: min / median / max ms per image (or seconds); the ratio is TF.js's median over " +
        "the fastest PyTorch configuration's median.\n\n" + t.toMarkdown() + "\n" +
        (profile ? "\nProfile of the training step: profile.md\n" : ""),
    );
    updateLatest(path.dirname(dir), dir);
    return t;
  };
  const record = async (m: Measurement[]) => {
    results.push(...m);
    await save();
  };
  await measureSteps(plan, runners, record);
  if (plan.data) await measurePipeline(plan.data, runners, record);
  await save();
  if (plan.profile) {
    // The default configuration, and TensorFlow's own kernels beside it when they are benched.
    const profiled = configurations({ ...plan, peers: [] }, undefined, ONE_OP_AT_A_TIME)
      .filter(([name]) => name === "tfjs" || name === "tfjs+standard-kernels");
    const sections: string[] = [];
    for (const [name, runner] of profiled) {
      const { size, batch } = plan.profile;
      console.error(`  ${name} profile of the training step, ${size}px batch ${batch}`);
      const m = await runner([
        "--mode",
        "profile",
        "--size",
        String(size),
        "--batch",
        String(batch),
        "--steps",
        "3",
      ]);
      sections.push(
        "error" in m
          ? `# ${name}: profiling failed\n\n${m.error}\n`
          : renderProfile(m as never, name),
      );
      if ("error" in m) console.error(`Profiling ${name} failed: ${m.error}`);
      profile = sections.join("\n");
      await writeFileAtomic(path.join(dir, "profile.md"), profile);
    }
  }
  return { dir, table: (await save()).toString() };
}
